FROM alpine
ENV X="${TOKEN:?set TOKEN with --build-arg}"
