FROM alpine
COPPY a b
RUN --network=bridge2 true
HEALTHCHECK CONNECT TCP 7000
ENV =x
