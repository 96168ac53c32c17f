#!/usr/bin/env bash
# The multi-platform benchmark, kiln against itself in one run (no peer builds several
# platforms without a daemon here; BuildKit's numbers for the same question are not measured):
#
#   bash benches/platforms.sh      (or `just bench`)
#
# Bases (built, not timed): busybox:multi, an index of linux/amd64 (this machine's
# busybox-static) and linux/arm64 (Debian's arm64 busybox-static, `apt-get download`), built by
# kiln from one recipe (`COPY busybox-$TARGETARCH`).
#
# Case 1 "half": the cross-compile recipe (a `FROM --platform=$BUILDPLATFORM` stage with a
#   CPU-bound RUN of KILN_BENCH_PLAT_ITERS shell-loop iterations writing one file per arch,
#   then a final stage per platform: `COPY --from` its file, a RUN of a tenth of the loop) built
#   cold for linux/amd64,linux/arm64 and cold for linux/amd64 alone (fresh stores, --jobs 2).
#   "amd64 ready" is when the amd64 image's last step is done (its `done` event in
#   --progress json), in both builds; the ratio two-platform/alone is the cost the arm64 half
#   adds to the amd64 image (target <= 1.10). The whole two-platform build is printed too.
# Case 2 "emulated": one CPU-bound RUN (the same loop) on busybox:multi for linux/amd64
#   (native) and linux/arm64 (through qemu-aarch64, binfmt_misc): the RUN's own seconds (its
#   `done` event), and emulated/native.
#
# Rounds alternate the variants; medians are printed. Knobs: KILN_BENCH_ROUNDS=3,
# KILN_BENCH_PLAT_ITERS=1500000, KILN_BENCH_KILN=PATH (else `cargo build --release -p kiln`),
# KILN_BENCH_INSTALL=1 (0: never apt-get / register binfmt; setup needs root otherwise).

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${KILN_BENCH_ROUNDS:-3}
ITERS=${KILN_BENCH_PLAT_ITERS:-1500000}
DO_INSTALL=${KILN_BENCH_INSTALL:-1}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

say() { printf '%s\n' "$*"; }
die() { printf 'platforms bench: %s\n' "$*" >&2; exit 1; }
command -v python3 >/dev/null || die "needs python3"

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-platforms-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/lib.sh
. "$repo/benches/lib.sh"

# --- setup: emulator, arm64 busybox ----------------------------------------------------------
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/qemu-aarch64" ] && [ "$DO_INSTALL" = 1 ] && [ "$(id -u)" = 0 ]; then
    command -v qemu-aarch64-static >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null; } || die "cannot install qemu-user-static"
    [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" || die "cannot mount binfmt_misc"
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | grep . >"$binfmt/register" || die "cannot register qemu-aarch64"
fi
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" 2>/dev/null ||
    die "qemu-aarch64 is not registered in binfmt_misc with the F flag (see docs/multi-platform.md)"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$DO_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] || die "needs Debian's arm64 architecture (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64 && apt-get update -qq
fi
(cd "$work" && apt-get download -qq busybox-static:arm64 >/dev/null 2>&1) || die "apt-get download busybox-static:arm64 failed"
dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/arm64"
busybox=$(command -v busybox) || die "needs busybox-static"

kiln_binary

base=$work/base-ctx
mkdir -p "$base"
cp "$busybox" "$base/busybox-amd64"
cp "$work/arm64/bin/busybox" "$base/busybox-arm64"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$base/passwd"
printf 'root:x:0:\n' >"$base/group"
cat >"$base/Dockerfile" <<'EOF'
FROM scratch
ARG TARGETARCH
COPY busybox-$TARGETARCH /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
EOF
base_store=$work/base-store
"$kiln" --root "$base_store" build -q --platform linux/amd64,linux/arm64 -t busybox:multi "$base" >/dev/null ||
    die "the base build failed"

app=$work/app-ctx
mkdir -p "$app"
small=$((ITERS / 10))
cat >"$app/Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM busybox:multi AS cross
RUN i=0; while [ \$i -lt $ITERS ]; do i=\$((i+1)); done; for a in amd64 arm64; do echo "\$a \$i" > /app-\$a; done

FROM busybox:multi
ARG TARGETARCH
COPY --from=cross /app-\$TARGETARCH /app
RUN i=0; while [ \$i -lt $small ]; do i=\$((i+1)); done; uname -m > /arch
EOF
spin=$work/spin-ctx
mkdir -p "$spin"
cat >"$spin/Dockerfile" <<EOF
FROM busybox:multi
RUN i=0; while [ \$i -lt $ITERS ]; do i=\$((i+1)); done; echo \$i > /n
EOF

# Reads a --progress json log: "ready" = the `at` of the last `done` of the steps whose stage
# label names PLATFORM only; "run" = the seconds of the `done` of the step whose instruction
# starts with RUN i=0 (the first such).
cat >"$work/events.py" <<'PY'
import json, sys
mode, log = sys.argv[1], sys.argv[2]
platform = sys.argv[3] if len(sys.argv) > 3 else ""
stage, text, done = {}, {}, {}
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step":
        stage[e["number"]] = e.get("stage", "")
        text[e["number"]] = e.get("instruction", "")
    elif e.get("event") == "done":
        done[e["number"]] = (e["at"], e["seconds"])
    elif e.get("event") == "built":
        built = e["at"]
if mode == "ready":
    # One platform alone has no label: every final-stage step counts.
    mine = [n for n, s in stage.items() if f"[{platform}]" in s or ("[" not in s and not s.startswith("cross"))]
    print("%.3f" % max(done[n][0] for n in mine))
elif mode == "run":
    n = min(n for n, t in text.items() if t.startswith("RUN i=0"))
    print("%.3f" % done[n][1])
elif mode == "built":
    print("%.3f" % built)
PY

fresh_store() { # a store holding only the base
    rm -rf "$work/store"
    cp -a "$base_store" "$work/store"
}
build_json() { # LOG CTX ARGS...: a cold build with json events in LOG
    local log=$1 ctx=$2
    shift 2
    fresh_store
    sync
    "$kiln" --root "$work/store" build --progress json --jobs 2 "$@" "$ctx" 2>"$log" >/dev/null ||
        { tail -20 "$log" >&2; die "kiln build $* failed"; }
}

median() { python3 -c 'import statistics,sys; print("%.3f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }

say "platforms bench: $ROUNDS rounds, $ITERS loop iterations, $(nproc) cores"
both_ready=() alone_ready=() both_built=() half_ratios=() native=() emulated=() emu_ratios=()
for round in $(seq 1 "$ROUNDS"); do
    build_json "$work/both.log" "$app" --platform linux/amd64,linux/arm64
    build_json "$work/alone.log" "$app" --platform linux/amd64
    b=$(python3 "$work/events.py" ready "$work/both.log" linux/amd64)
    a=$(python3 "$work/events.py" ready "$work/alone.log" linux/amd64)
    both_ready+=("$b") alone_ready+=("$a")
    both_built+=("$(python3 "$work/events.py" built "$work/both.log")")
    half_ratios+=("$(ratio "$b" "$a")")
    build_json "$work/native.log" "$spin" --platform linux/amd64
    build_json "$work/emulated.log" "$spin" --platform linux/arm64
    n=$(python3 "$work/events.py" run "$work/native.log")
    e=$(python3 "$work/events.py" run "$work/emulated.log")
    native+=("$n") emulated+=("$e")
    emu_ratios+=("$(ratio "$e" "$n")")
    say "round $round: amd64 ready ${b}s in the two-platform build, ${a}s alone; RUN native ${n}s, emulated ${e}s"
done

half=$(median "${half_ratios[@]}")
verdict=$(python3 -c 'import sys; print("PASS" if float(sys.argv[1]) <= 1.10 else "FAIL")' "$half")
printf '\n%-52s %10s %10s %8s\n' "case" "kiln" "reference" "ratio"
printf '%-52s %9ss %9ss %8s  %s (target <= 1.10)\n' "1 amd64 ready: two-platform build / amd64 alone" \
    "$(median "${both_ready[@]}")" "$(median "${alone_ready[@]}")" "$half" "$verdict"
printf '%-52s %9ss\n' "1 whole two-platform build (both images)" "$(median "${both_built[@]}")"
printf '%-52s %9ss %9ss %8s  (information)\n' "2 CPU-bound RUN: arm64 emulated / amd64 native" \
    "$(median "${emulated[@]}")" "$(median "${native[@]}")" "$(median "${emu_ratios[@]}")"
