FROM alpine
ONBUILD RUN <<EOF
echo triggered
EOF
ONBUILD COPY <<-X /x
	body
	X
ONBUILD RUN 3<<EOF cat
hi
EOF
