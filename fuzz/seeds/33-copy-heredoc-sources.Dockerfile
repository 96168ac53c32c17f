FROM alpine
COPY <<EOF <<-"EOT" 3<<'X' /etc/
a
EOF
	b
	EOT
c
X
ADD <<EOF
lonely
EOF
COPY "<<EOF" /x
COPY <<"" /x
COPY <<- /x
