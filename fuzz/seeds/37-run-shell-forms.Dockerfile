FROM alpine
RUN
RUN    
CMD
ENTRYPOINT
RUN echo "<<EOF" and '<<X'
RUN cat <<EOF | sh
echo piped
EOF
RUN 99999999999999999999<<EOF cat
x
EOF
RUN <<- cat
