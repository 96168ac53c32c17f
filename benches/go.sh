#!/usr/bin/env bash
# The Go-style benchmark: the multi-stage build people run most. A build stage on a
# debootstrapped Debian bookworm minbase installs the toolchain with apt (`apt-get install -y
# golang-go`, ~600 MB that never ships), copies a small program and `go build`s it; the final
# stage is `FROM scratch` with the binary alone. Cold, kiln beside BuildKit (Debian's docker.io:
# dockerd 20.10 with its BuildKit, a dockerd of its own on a private socket and data root),
# measured in the same rounds.
#
#   bash benches/go.sh            (or `just bench`)
#
# kiln: `kiln --root STORE build --progress json -t go -o type=oci,dest=FILE CTX`;
# BuildKit: `DOCKER_BUILDKIT=1 docker build --network host --progress plain -t go CTX` +
# `docker save -o FILE go`. Both start from the same base image, built by kiln from the
# debootstrap tar (`FROM scratch` + `ADD rootfs.tar /`) and loaded into dockerd with
# `kiln save --format docker | docker load`. Each kiln build has a store of its own (a copy of
# the one holding the base); BuildKit builds with `--no-cache`. Nothing is deleted while the
# tools are measured, and each build starts a minute after the one before (see `fresh_path`
# and `settle` in benches/lib.sh why).
#
# apt needs the mirror: kiln's RUN has the host's network by default; dockerd runs with
# `--bridge=none`, so its builds take `--network host` (BuildKit allows it in dockerd 20.10).
# apt's own seconds are printed per tool and round (kiln's json "done" of the apt step,
# BuildKit's "#N DONE" of it): the mirror's noise is visible, and "rest" (build + archive
# minus apt) is what the tools themselves cost.
#
# Target: kiln <= 0.8x BuildKit (build + archive). (No peak RSS target here: the maxrss the
# launcher sees includes the RUN's own processes, `go build` among them; benches/lazy.sh has it.)
#
# Knobs: KILN_BENCH_ROUNDS=3, KILN_BENCH_KILN=PATH, KILN_BENCH_STEP_TIMEOUT=1200,
# KILN_BENCH_STRICT=0 (1: a failed target exits 1), KILN_BENCH_CACHE=/var/tmp/kiln-bench (where
# the Debian rootfs tar is kept between runs, shared with benches/run.sh),
# KILN_BENCH_DEBIAN_MIRROR (default: the first mirror of /etc/apt/sources.list*),
# KILN_BENCH_SETTLE=61 (seconds before each cold build; see benches/lib.sh),
# SOURCE_DATE_EPOCH=1700000000, TMPDIR (default /var/tmp: a disk, where the store would be).

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${KILN_BENCH_ROUNDS:-3}
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-1200}
STRICT=${KILN_BENCH_STRICT:-0}
CACHE=${KILN_BENCH_CACHE:-/var/tmp/kiln-bench}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

say() { printf '%s\n' "$*"; }
die() { printf 'go bench: %s\n' "$*" >&2; exit 1; }
command -v python3 >/dev/null || die "needs python3 (process launcher)"
[ "$(id -u)" = 0 ] || die "needs root (dockerd for BuildKit, debootstrap)"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-go-bench.XXXXXX")
BENCH_NAME=kiln-go-bench
dockerd_pid=""
cleanup() {
    set +e
    buildkit_stop
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
# shellcheck source=benches/buildkit.sh
source "$repo/benches/buildkit.sh"

say "== go bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r); work dir $work"
kiln_binary

# --- the Debian base --------------------------------------------------------------------------
mirror=${KILN_BENCH_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -v '^[[:space:]]*#' | grep -o 'https\?://[^ ]*' | grep -v security | head -1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi
rootfs=$CACHE/bookworm-minbase.tar
# The test suite's Debian base (crates/kiln/tests/common/debian.rs) is the same debootstrap.
if [ ! -s "$rootfs" ] && [ -s /var/tmp/kiln-tests/debian-bookworm-minbase.tar ]; then
    rootfs=/var/tmp/kiln-tests/debian-bookworm-minbase.tar
fi
if [ ! -s "$rootfs" ]; then
    command -v debootstrap >/dev/null || die "needs debootstrap (apt-get install debootstrap)"
    mkdir -p "$CACHE"
    tmp=$CACHE/rootfs.tmp.$$
    rm -rf "$tmp"
    say "debootstrap --variant=minbase bookworm from $mirror (once; kept as $rootfs)..."
    timeout 1200 debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { rm -rf "$tmp"; die "debootstrap failed: $(tail -n 1 "$work/debootstrap.log")"; }
    # /dev/* left out: kiln refuses device files in ADD archives (and images carry none).
    tar --numeric-owner --exclude='./dev/*' -C "$tmp" -cf "$rootfs.part" . && mv "$rootfs.part" "$rootfs"
    rm -rf "$tmp"
fi
say "base: $rootfs ($(stat -c %s "$rootfs") bytes); mirror $mirror"

mkdir -p "$work/ctx/base" "$work/ctx/go"
ln "$rootfs" "$work/ctx/base/rootfs.tar" 2>/dev/null || cp "$rootfs" "$work/ctx/base/rootfs.tar"
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' >"$work/ctx/base/Dockerfile"
cat >"$work/ctx/go/Dockerfile" <<'EOF'
FROM gobase AS build
RUN apt-get update && apt-get install -y golang-go
WORKDIR /src
COPY go.mod main.go ./
RUN CGO_ENABLED=0 go build -trimpath -o /out/hello .

FROM scratch
COPY --from=build /out/hello /hello
ENTRYPOINT ["/hello"]
EOF
printf 'module example.com/hello\n\ngo 1.19\n' >"$work/ctx/go/go.mod"
cat >"$work/ctx/go/main.go" <<'EOF'
package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
)

func main() {
	sum := sha256.Sum256([]byte(os.Args[0]))
	out, _ := json.Marshal(map[string]string{"hello": fmt.Sprintf("%x", sum[:4])})
	fmt.Println(string(out))
	if len(os.Args) > 1 {
		_ = http.ListenAndServe(os.Args[1], nil)
	}
}
EOF

# The seed store: the base image, built once (untimed); each round's kiln store is a copy.
"$kiln" --root "$work/seed" build --progress quiet -t gobase "$work/ctx/base" >"$work/base.log" 2>&1 ||
    { tail -n 5 "$work/base.log"; die "kiln base build failed"; }
"$kiln" --root "$work/seed" save --format docker -o "$work/gobase.tar" gobase
buildkit_start
"${docker_cmd[@]}" load -i "$work/gobase.tar" >/dev/null
rm -f "$work/gobase.tar"

# The "#N DONE s" of BuildKit's step whose title has $2, from a --progress plain log.
buildkit_step_seconds() {
    python3 - "$1" "$2" <<'PY'
import re, sys
want, number, out = sys.argv[2], None, "-"
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"#(\d+) \[.*\] (.*)", line)
    if m and want in m.group(2):
        number = m.group(1)
    m = re.match(r"#(\d+) DONE ([0-9.]+)s", line)
    if m and m.group(1) == number:
        out = "%.3f" % float(m.group(2))
print(out)
PY
}

# A round whose build failed is run again (up to 3 tries): apt's downloads fail now and then
# (exit 100), which says nothing of the tools. Every retry is printed.
kiln_round() { # round logs
    local try
    for try in 1 2 3; do
        store=$(fresh_path k)
        cp -a "$work/seed" "$store"
        settle
        MEASURE_MAY_FAIL=1 measure "kiln go, cold, round $1 (try $try)" "$2/k.log" "$kiln" --root "$store" build \
            --progress json -t go -o "type=oci,dest=$work/k.tar" "$work/ctx/go" && break
        [ "$try" != 3 ] || die "kiln go, round $1: failed 3 times"
        : >"$2/k.log"
    done
    K+=("$R_WALL")
    KA+=("$(step_seconds "$2/k.log" "RUN apt-get")")
    say "    kiln: apt step ${KA[-1]}s; archive $(stat -c %s "$work/k.tar") bytes"
    rm -f "$work/k.tar"
}
buildkit_round() { # round logs
    local try
    for try in 1 2 3; do
        settle
        MEASURE_MAY_FAIL=1 BUILDKIT_PLAIN=1 BUILDKIT_NETWORK=host BUILDKIT_NO_CACHE=1 buildkit_build "go, cold, round $1 (try $try)" \
            "$2/d.log" "$work/ctx/go" go "$work/d.tar" && break
        [ "$try" != 3 ] || die "BuildKit go, round $1: failed 3 times"
        : >"$2/d.log"
    done
    D+=("$D_WALL")
    DA+=("$(buildkit_step_seconds "$2/d.log" "RUN apt-get")")
    say "    BuildKit: apt step ${DA[-1]}s; archive $(stat -c %s "$work/d.tar") bytes"
    rm -f "$work/d.tar"
}

say ""
say "== go: apt-get install golang-go + go build in a build stage, FROM scratch final stage (cold)"
K=() D=() KA=() DA=()
for round in $(seq 1 "$ROUNDS"); do
    logs=$work/logs/go-$round
    mkdir -p "$logs"
    # The tools take turns going first: a mirror that warms up favours neither.
    if ((round % 2)); then
        kiln_round "$round" "$logs"
        buildkit_round "$round" "$logs"
    else
        buildkit_round "$round" "$logs"
        kiln_round "$round" "$logs"
    fi
done

rest() { # "totals" "apt seconds" -> "total - apt" per round
    local -a t=($1) a=($2) out=()
    local i
    for i in "${!t[@]}"; do
        [ "${a[$i]:--}" = - ] && { out+=("-"); continue; }
        out+=("$(calc %.3f "${t[$i]} - ${a[$i]}")")
    done
    echo "${out[*]}"
}
add_row "go: cold, build + archive" "${K[*]}" "${D[*]}" BuildKit "<= 0.8" "<= 0.8x"
add_row "go: the apt-get step alone" "${KA[*]}" "${DA[*]}" BuildKit "" "info"
add_row "go: the rest (total - apt step)" "$(rest "${K[*]}" "${KA[*]}")" "$(rest "${D[*]}" "${DA[*]}")" BuildKit "" "info"

say ""
say "== results: medians over $ROUNDS rounds; kiln/ref is the median of per-round ratios; load now $(cut -d' ' -f1-3 /proc/loadavg)"
row "measurement" "kiln s" "ref s" "kiln/ref" "target" "result"
for r in "${ROWS[@]}"; do say "$r"; done
say "$fails target(s) failed"
if [ "$STRICT" = 1 ] && [ "$fails" -gt 0 ]; then exit 1; fi
exit 0
