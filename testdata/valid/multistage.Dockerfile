ARG GO_VERSION=1.22
ARG ALPINE=3.20

FROM golang:${GO_VERSION} AS build
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/go-build,id=gobuild,sharing=locked \
    --mount=type=bind,target=/src,rw \
    --mount=type=secret,id=netrc,target=/root/.netrc,required=true \
    --mount=type=ssh \
    --mount=type=tmpfs,target=/tmp,size=64m \
    go build -o /out/app ./cmd/app

FROM build AS test
RUN --network=none go test ./...

FROM alpine:${ALPINE} AS certs
RUN apk add --no-cache ca-certificates

FROM scratch AS final
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build --link /out/app /app
COPY --from=1 /src/README.md /README.md
ENTRYPOINT ["/app"]
