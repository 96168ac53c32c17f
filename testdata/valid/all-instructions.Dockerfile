# syntax=docker/dockerfile:1
# check=skip=MaintainerDeprecated
ARG BASE=debian:bookworm-slim
FROM --platform=$BUILDPLATFORM ${BASE} AS base
LABEL org.opencontainers.image.title="kiln test" \
      org.opencontainers.image.version=1.0
MAINTAINER someone@example.com
ENV APP_HOME=/srv/app PATH=/srv/app/bin:$PATH
ENV LEGACY_FORM value with spaces
ARG TARGETARCH
ARG VERSION=1.2.3
WORKDIR $APP_HOME
USER 1000:1000
EXPOSE 8080 9000-9002/udp
VOLUME ["/data", "/cache"]
VOLUME /logs
STOPSIGNAL SIGQUIT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN echo building $VERSION for $TARGETARCH
RUN ["/bin/echo", "exec form"]
COPY --chown=1000:1000 --chmod=0644 config.toml ./
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tool.tar.gz /opt/
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --start-interval=1s --retries=3 \
  CMD curl -f http://localhost:8080/health || exit 1
ONBUILD COPY . /srv/app/src
ONBUILD RUN make -C /srv/app/src
ENTRYPOINT ["/srv/app/bin/server"]
CMD ["--port", "8080"]
