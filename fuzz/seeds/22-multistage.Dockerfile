FROM golang:1.22 AS Build
WORKDIR /src
COPY . .
RUN go build -o /out/app
FROM build as test
RUN go test ./...
FROM scratch AS scratch
COPY --from=build /out/app /app
COPY --from=0 /etc/ssl /etc/ssl
COPY --from=alpine:3 /bin/sh /sh
FROM alpine as 1bad
FROM alpine AS
FROM alpine NOTAS name
FROM a b c d
FROM
entrypoint ["/app"]
