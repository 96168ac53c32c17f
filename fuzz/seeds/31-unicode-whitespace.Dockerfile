FROM alpine
RUN echox
ENV ab=c
COPYab
ARG x　y=1
LABEL k v=1
