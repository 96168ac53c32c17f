FROM a
COPY --chown=a\ b --from="x\"y" --chmod='7\55' src dst
RUN --mount=type=bind,source="a\,b" ls
COPY --from=build\
 a b
COPY --"quoted"=1 a b
COPY -- a b
RUN -- echo
COPY --from=é\
é a b
