# RUN --mount with no target mounts at the working directory, as BuildKit does: the pattern of
# public recipes that bind a build stage's output over the source tree to install from it.
FROM alpine AS build
WORKDIR /out
RUN echo built > artifact

FROM alpine
WORKDIR /src
RUN --mount=from=build,source=/out cat artifact
RUN --mount=type=cache,id=deps ls
RUN --mount=type=bind,source=. ls
RUN --mount=type=tmpfs,target=scratch ls scratch
