FROM alpine
CMD ["/bin/sh", "-c", "echo \"quoted\" \u00e9 \t"]
ENTRYPOINT ["/entry", "--flag=1"]
RUN ["apk", "add", "x"]
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
VOLUME ["/data", "/logs"]
COPY ["a b", "c", "/dest/"]
ADD ["http://x/y.tar.gz", "/opt/"]
HEALTHCHECK CMD ["true"]
