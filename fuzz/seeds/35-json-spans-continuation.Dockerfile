FROM a
CMD ["a", \
     "b", \
     "c"]
ENTRYPOINT [ "x" ,
  "y" ]
