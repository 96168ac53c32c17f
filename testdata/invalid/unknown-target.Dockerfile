FROM alpine AS build
FROM scratch AS final
