# syntax=docker/dockerfile:1.7
# check=skip=LegacyKeyValueFormat
ARG NODE_VERSION=20
ARG ALPINE=3.19

FROM --platform=$BUILDPLATFORM node:${NODE_VERSION}-alpine${ALPINE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --omit=dev

FROM deps AS build
COPY --link . .
RUN <<EOF
set -eux
npm run build
EOF

FROM gcr.io/distroless/nodejs20 AS runtime
LABEL org.opencontainers.image.source="https://example.invalid/app" \
      org.opencontainers.image.version="${VERSION:-dev}"
ENV NODE_ENV=production PORT=3000
COPY --from=build --chown=1000:1000 /app/dist /app
USER 1000
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s CMD ["node", "/app/health.js"]
STOPSIGNAL SIGINT
ENTRYPOINT ["node"]
CMD ["/app/server.js"]
