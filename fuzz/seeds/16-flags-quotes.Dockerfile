FROM --platform="linux/amd64" alpine AS build
COPY --from="build" --chown='1000:1000' --chmod=0755 --link -- --weird /dst
ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://example.invalid/repo.git /src
COPY --exclude="*.md" --exclude='*.txt' --parents . /app
COPY --link=maybe a b
COPY --from a b
RUN --network=none --security=insecure echo hi
RUN --network=bridge --security=x echo
RUN --bogus=1 echo
FROM --platform=$BUILDPLATFORM --platform=x alpine
COPY --from="unterminated a b
