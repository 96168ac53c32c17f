FROM alpine
LABEL 名前="値" emoji="🐳"
RUN echo "é à ü ß 한국어 ✓"
ENV ÜBER=straße
COPY ñ/é /ü/
WORKDIR /données
ENV é\
é=1
