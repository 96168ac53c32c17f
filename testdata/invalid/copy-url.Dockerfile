FROM alpine
COPY https://example.com/x.tar.gz /x
