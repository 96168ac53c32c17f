FROM aRUN b
RUN c \
 d

