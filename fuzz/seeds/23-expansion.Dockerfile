ARG TAG=latest
FROM alpine:${TAG:-3}
ENV A=${B:-default} C=${D:+alt} E=${F?required} G=${H:?msg}
ENV I=$J K=${L} M=\$N O='${P}' Q="${R#prefix}" S=${T%suffix} U=${V##*/} W=${X%%.*}
ENV Y=${Z/old/new} Z2=${AA//g/h} AB=${AC:2:3} AD=${#AE} AF=${AG-x} AH=${AI+y}
WORKDIR ${HOME}/${APP:-app}
USER ${UID:-1000}:${GID:-1000}
EXPOSE ${PORT:-8080}/tcp 53/udp 80
LABEL v="${unterminated"
ENV broken=${
ENV nested=${A:-${B:-${C}}}
