FROM alpine
RUN <<-EOT
	echo tabbed
	  echo mixed
	EOT
