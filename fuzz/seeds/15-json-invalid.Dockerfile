FROM alpine
CMD ['single', 'quotes']
CMD ["unterminated
ENTRYPOINT ["a", ["nested"]]
RUN [1, 2, 3]
SHELL []
SHELL sh -c
VOLUME [""]
CMD ["trailing",]
CMD [ ]
COPY [null, "x"]
HEALTHCHECK CMD [{}]
