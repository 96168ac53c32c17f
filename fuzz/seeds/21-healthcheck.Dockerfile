FROM alpine
HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1
HEALTHCHECK NONE
HEALTHCHECK --interval=1.5h CMD ["curl", "-f", "x"]
HEALTHCHECK --interval=0 CMD true
HEALTHCHECK --timeout=10us --retries=-1 CMD x
HEALTHCHECK --interval=1ns CMD x
HEALTHCHECK --interval=99999999999999999h CMD x
HEALTHCHECK --timeout=1.2.3s --retries=x CMD x
HEALTHCHECK --interval=5µs --timeout=+.5s --start-period=1h2m3s4ms5us6ns CMD x
HEALTHCHECK --retries=99999999999 CMD x
HEALTHCHECK NONE extra
HEALTHCHECK --retries=1 NONE
HEALTHCHECK CMD
HEALTHCHECK CMD []
HEALTHCHECK BOGUS x
HEALTHCHECK --interval CMD x
HEALTHCHECK
