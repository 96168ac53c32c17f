FROM alpine
LABEL maintainer="a@b.c" version=1.0 "com.example.quoted key"="v"
LABEL description "legacy form"
LABEL multi.line="a \
b" other=x
LABEL
LABEL "=x"
MAINTAINER someone <me@example.invalid>
