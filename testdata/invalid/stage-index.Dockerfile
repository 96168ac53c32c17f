FROM alpine
FROM scratch
COPY --from=5 /x /x
