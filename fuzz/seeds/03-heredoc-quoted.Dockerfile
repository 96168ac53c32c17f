FROM alpine
RUN <<'EOF' sh
echo $HOME not expanded
EOF
COPY <<"CONF" /etc/app.conf
key=${VALUE}
CONF
