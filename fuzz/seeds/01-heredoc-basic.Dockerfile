FROM alpine
RUN <<EOF
echo hello
apk add curl
EOF
