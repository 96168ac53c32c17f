FROM alpine:3.20
RUN echo crlf \
  line endings
CMD ["sh"]
