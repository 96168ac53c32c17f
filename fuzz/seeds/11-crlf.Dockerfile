FROM alpine AS base
RUN echo a \
    b
ENV K=v
RUN <<EOF
echo x
EOF
