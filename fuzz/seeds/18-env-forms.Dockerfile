FROM alpine
ENV PATH /usr/local/bin:$PATH
ENV A=1 B="two words" C='single $x' D=with\ space E=
ENV MY_PASSWORD=hunter2
ENV legacy   value with   spaces
ENV =novalue
ENV ONLYKEY
ENV a=b c
ENV "quoted key"=v
