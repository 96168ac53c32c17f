# A comment before the first instruction.
FROM alpine:3.20   

# Comments inside a continuation are skipped:
RUN apk add --no-cache \
# curl is for the health check
      curl \
      jq    
RUN echo "a # inside a line is text" # and so is this
  # indented comment line
from alpine:3.20 as lowercase
copy --from=0 /etc/alpine-release /release
