FROM alpine
RUN apt-get update && \
    # comment inside continuation

    apt-get install -y \
      curl \
      git
RUN echo \\
RUN echo done \
