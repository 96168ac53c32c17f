FROM alpine
COPY --chmod=8888 a /a
