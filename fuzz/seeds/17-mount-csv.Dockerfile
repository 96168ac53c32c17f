FROM golang
RUN --mount=type=cache,target=/root/.cache/go-build,sharing=locked go build
RUN --mount=type=bind,source=.,target=/src,readonly --mount=type=tmpfs,target=/tmp,size=64m make
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required=true,mode=0400,uid=1,gid=2 npm ci
RUN --mount=type=ssh,id=default git clone x
RUN --mount="type=bind,\"source=a,b\",target=/x" ls
RUN --mount='type=bind,"src=a b",dst=/y,ro=false' ls
RUN --mount=type=cache,target=$CACHE,id=${ID:-x} ls
RUN --mount=type=unknown,target=/x ls
RUN --mount=target ls
RUN --mount=type=cache,target=/a,size=abc,mode=999 ls
RUN --mount=type=tmpfs,target=/t,size=1.5G,tmpfs-size=10k ls
RUN --mount=type=cache,target=/a,sharing=bogus,from=x,source=/ ls
RUN --mount= ls
RUN --mount type=cache ls
RUN --mount="type=bind,target=/x ls
