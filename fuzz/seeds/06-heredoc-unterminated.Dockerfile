FROM alpine
RUN <<EOF cat
never ends
EOF2
