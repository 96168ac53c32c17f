# Built on every rung of the isolation ladder and in every cell of the container matrix
# (crates/kiln/tests/isolation*.rs): whiteouts, an opaque directory, a cache mount, a secret.
FROM scratch
COPY busybox /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
RUN mkdir -p /data/gone /data/keep && echo a > /data/gone/a && echo k > /data/keep/k && echo del > /data/del
RUN --mount=type=cache,target=/cache echo seen >> /cache/log && rm -r /data/gone && rm /data/del && rm -rf /data/keep && mkdir /data/keep && echo n > /data/keep/n
RUN --mount=type=secret,id=tok test "$(cat /run/secrets/tok)" = s3cret-ladder && echo ok > /secret-ok
