FROM alpine:3.20
ARG GREETING=hello
RUN <<EOF
set -e
echo "$GREETING from a heredoc"
EOF
RUN <<-'SCRIPT' sh
	echo tabs are stripped and $nothing expands here
	SCRIPT
RUN cat <<A <<B > /both.txt
first
A
second
B
COPY <<EOF /etc/motd
Welcome, ${GREETING}!
EOF
COPY <<one <<two /etc/config/
first file
one
second file
two
RUN <<PY
#!/usr/bin/env python3
print("a script with its own interpreter")
PY
ONBUILD RUN <<EOF
echo triggered
EOF
