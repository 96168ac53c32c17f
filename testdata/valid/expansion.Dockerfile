FROM alpine:3.20
ARG NAME=kiln
ARG FILE=archive.tar.gz
ARG EMPTY=
ENV A=${NAME:-default} \
    B=${UNSET:-fallback} \
    C=${NAME:+set} \
    D=${EMPTY-dash-only-when-unset} \
    E=${FILE#*.} \
    F=${FILE##*.} \
    G=${FILE%.*} \
    H=${FILE%%.*} \
    I=${FILE/tar/zip} \
    J=${FILE//a/o} \
    K='$NAME stays literal' \
    L="quoted $NAME" \
    M=\$NAME
WORKDIR /opt/${NAME}
LABEL name="${NAME}" file=$FILE
USER ${NAME}
