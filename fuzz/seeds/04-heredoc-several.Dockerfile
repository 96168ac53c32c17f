FROM alpine
RUN <<A cat - <<-'B' 3<<C
a $x
A
	b
	B
c
C
COPY <<one <<two /dest/
1
one
2
two
