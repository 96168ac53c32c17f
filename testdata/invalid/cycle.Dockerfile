FROM alpine AS one
COPY --from=two /x /x
FROM alpine AS two
COPY --from=one /y /y
