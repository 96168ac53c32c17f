#!/usr/bin/env bash
# The lazy-layers benchmark: what a build costs when most of what it makes never ships, and
# what a fully cached build costs when all it does is write a big archive. kiln beside BuildKit
# (Debian's docker.io: dockerd 20.10 with its BuildKit, a dockerd of its own on a private socket
# and data root, builds with `--network none`), measured in the same rounds.
#
#   bash benches/lazy.sh            (or `just bench`)
#
# Cases (kiln: `kiln --root STORE build --progress json -t NAME -o type=oci,dest=FILE CTX`;
# BuildKit: `DOCKER_BUILDKIT=1 docker build --network none -t NAME CTX` + `docker save -o FILE`;
# both start from the same busybox base, built by kiln and loaded into dockerd with
# `kiln save --format docker | docker load`; BuildKit's build cache is pruned before a cold build):
#   1 stage    a build stage `RUN` writing KILN_BENCH_STAGE_MB (600) MB of incompressible
#              "binaries" in 6 files, then a final stage `COPY --from=build` of one small file.
#              Cold. Target: kiln <= 1.0x BuildKit (the build stage never ships: kiln makes no
#              blob of it). The RUN's own seconds (kiln's json "done") are printed too.
#   2 cached   `RUN head -c KILN_BENCH_BIG_MB (1024) MiB of /dev/urandom > /big`, built once
#              (untimed), then built again with everything cached, writing the archive. Targets:
#              kiln <= 0.1x BuildKit (build + save), and the archive written at >= 1 GB/s or at
#              least at the speed of `cp` of the layer blob measured beside it (neither syncs the
#              file: an output is not the store, see docs/outputs.md; `cp` + `sync FILE` is shown
#              too). `kiln save -o` of the same image is timed too.
#   3 before   cold copy-tree (COPY of 20,000 small files + 6 x 50 MB in one step) and cold
#              run-steps (4 RUN steps writing 2,000 files and changing some), this kiln beside
#              the kiln of KILN_BENCH_OLD (a binary) or KILN_BENCH_OLD_REV (a git revision built
#              here with cargo, default `main`). Target: no slower (<= 1.05x, noise).
# In cases 1 and 3 the tools take turns going first from round to round.
# Every kiln run's peak resident set is kept: target < 100 MB.
#
# Rounds alternate the tools; tables show medians and kiln/ref is the median of per-round ratios.
#
# Knobs: KILN_BENCH_ROUNDS=3, KILN_BENCH_CASES="1 2 3", KILN_BENCH_STAGE_MB=600,
# KILN_BENCH_BIG_MB=1024, KILN_BENCH_KILN=PATH, KILN_BENCH_OLD=PATH, KILN_BENCH_OLD_REV=main,
# KILN_BENCH_STEP_TIMEOUT=600, KILN_BENCH_STRICT=0 (1: a failed target exits 1),
# SOURCE_DATE_EPOCH=1700000000, TMPDIR (default /var/tmp: a disk, where the store would be).

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${KILN_BENCH_ROUNDS:-3}
CASES=${KILN_BENCH_CASES:-1 2 3}
STAGE_MB=${KILN_BENCH_STAGE_MB:-600}
BIG_MB=${KILN_BENCH_BIG_MB:-1024}
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-600}
STRICT=${KILN_BENCH_STRICT:-0}
OLD_REV=${KILN_BENCH_OLD_REV:-main}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

say() { printf '%s\n' "$*"; }
die() { printf 'lazy bench: %s\n' "$*" >&2; exit 1; }
has_case() { [[ " $CASES " == *" $1 "* ]]; }
command -v python3 >/dev/null || die "needs python3 (process launcher)"
[ "$(id -u)" = 0 ] || die "needs root (dockerd for BuildKit)"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-lazy-bench.XXXXXX")
BENCH_NAME=kiln-lazy-bench
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

say "== lazy bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r); work dir $work"
kiln_binary

# --- the base and the recipes -------------------------------------------------------------------
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do [ -x "$candidate" ] && busybox=$candidate && break; done
[ -n "$busybox" ] || die "needs busybox-static"
mkdir -p "$work/ctx/base" "$work/ctx/stage" "$work/ctx/big" "$work/ctx/tree/src" "$work/ctx/steps"
cp "$busybox" "$work/ctx/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n' >"$work/ctx/base/Dockerfile"
per=$((STAGE_MB / 6))
cat >"$work/ctx/stage/Dockerfile" <<EOF
FROM lbase AS build
RUN mkdir -p /out && for i in 1 2 3 4 5 6; do head -c ${per}000000 /dev/urandom > /out/tool\$i; done && echo ok > /out/small

FROM lbase
COPY --from=build /out/small /small
EOF
printf 'FROM lbase\nRUN head -c %s /dev/urandom > /big\n' "$((BIG_MB * 1048576))" >"$work/ctx/big/Dockerfile"
python3 - "$work/ctx/tree/src" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(0x6C617A79)
for i in range(20000):
    d = os.path.join(root, "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(200, 6000)))
for i in range(6):
    with open(os.path.join(root, "vendor%d.bin" % i), "wb") as f:
        f.write(rng.randbytes(50 * 1000 * 1000))
PY
printf 'FROM lbase\nCOPY src/ /app/\n' >"$work/ctx/tree/Dockerfile"
cat >"$work/ctx/steps/Dockerfile" <<'EOF'
FROM lbase
RUN mkdir -p /w && cd /w && i=0; while [ $i -lt 2000 ]; do echo "file $i" > f$i; i=$((i+1)); done
RUN cd /w && i=0; while [ $i -lt 2000 ]; do echo changed >> f$i; i=$((i+10)); done
RUN cd /w && i=5; while [ $i -lt 2000 ]; do rm f$i; i=$((i+10)); done; ln -s f1 /w/link
RUN mkdir -p /w/sub && mv /w/f1* /w/sub/ && chmod -R 700 /w/sub
EOF

kiln_base() { # store: a fresh kiln store with the base as lbase (untimed)
    rm -rf "$1"
    "$kiln" --root "$1" build --progress quiet -t lbase "$work/ctx/base" >"$work/base.log" 2>&1 ||
        { tail -n 5 "$work/base.log"; die "kiln base build failed"; }
}

# The kiln to compare with: KILN_BENCH_OLD, else KILN_BENCH_OLD_REV built here (case 3 needs it;
# case 1 shows it beside the others when it is there).
old=""
if [ -n "${KILN_BENCH_OLD:-}" ]; then
    old=$KILN_BENCH_OLD
elif has_case 3; then
    say "building the old kiln ($OLD_REV) with cargo..."
    mkdir -p "$work/old-src"
    git -C "$repo" archive "$OLD_REV" | tar -x -C "$work/old-src"
    (cd "$work/old-src" && CARGO_TARGET_DIR="$repo/target" timeout 3600 cargo build --release -p kiln -q) ||
        die "cargo build of $OLD_REV failed"
    cp "$repo/target/release/kiln" "$work/kiln-old"
    old=$work/kiln-old
fi
[ -z "$old" ] || say "old kiln: $old ($("$old" --version 2>/dev/null || echo '?'))"

buildkit_start
kiln_base "$work/seed"
"$kiln" --root "$work/seed" save --format docker -o "$work/lbase.tar" lbase
"${docker_cmd[@]}" load -i "$work/lbase.tar" >/dev/null

# --- case 1: a build stage that never ships ----------------------------------------------------
if has_case 1; then
    say ""
    say "== case 1: build stage RUN writes $STAGE_MB MB that never ships, final stage copies one small file (cold)"
    K=() D=() RUNS=() O=()
    stage_kiln() {
        local store
        store=$(fresh_path k)
        kiln_base "$store"
        kmeasure "kiln stage, cold, round $round" "$logs/k.log" "$kiln" --root "$store" build \
            --progress json -t stage -o "type=oci,dest=$work/k.tar" "$work/ctx/stage"
        K+=("$R_WALL")
        RUNS+=("$(step_seconds "$logs/k.log" "RUN ")")
    }
    stage_old() {
        [ -n "$old" ] || return 0
        local store
        store=$(fresh_path k)
        kiln_base "$store"
        measure "kiln (old) stage, cold, round $round" "$logs/o.log" "$old" --root "$store" build \
            --progress json -t stage -o "type=oci,dest=$work/o.tar" "$work/ctx/stage"
        O+=("$R_WALL")
    }
    stage_buildkit() {
        BUILDKIT_NO_CACHE=1 buildkit_build "stage, cold, round $round" "$logs/d.log" "$work/ctx/stage" stage "$work/d.tar"
        D+=("$D_WALL")
    }
    buildkit_cold stage
    for round in $(seq 1 "$ROUNDS"); do
        logs=$work/logs/stage-$round
        mkdir -p "$logs"
        # The tools take turns going first: whatever the one before left to the disk (writeback)
        # falls on each in turn. Nothing is deleted until the end (`fresh_path`, benches/lib.sh).
        if ((round % 2)); then
            stage_kiln
            stage_old
            stage_buildkit
        else
            stage_buildkit
            stage_old
            stage_kiln
        fi
        say "    kiln archive $(stat -c %s "$work/k.tar") bytes; the build stage's RUN alone: ${RUNS[-1]}s"
        rm -f "$work"/*.tar
    done
    add_row "stage: cold, build + archive" "${K[*]}" "${D[*]}" BuildKit "<= 1.0" "<= 1.0x"
    [ -z "$old" ] || add_row "stage: cold, this kiln vs the old one" "${K[*]}" "${O[*]}" "old kiln" "" "info"
    ROWS+=("$(row "stage: the RUN's own seconds (kiln)" "$(median "${RUNS[@]}")" "" "" "info" "")")
fi

# --- case 2: everything cached, a 1 GiB archive --------------------------------------------------
if has_case 2; then
    say ""
    say "== case 2: RUN writes $BIG_MB MiB, everything cached; only the archive is written"
    kiln_base "$work/k"
    "$kiln" --root "$work/k" build --progress quiet -t big "$work/ctx/big" >"$work/big.log" 2>&1 ||
        { tail -n 5 "$work/big.log"; die "kiln cold big build failed"; }
    buildkit_cold big
    DOCKER_BUILDKIT=1 "${docker_cmd[@]}" build --network none -q -t big "$work/ctx/big" >/dev/null
    # The layer's blob: the largest blob of the store.
    blob=$(ls -S "$work/k/blobs/sha256" | head -1)
    blob_bytes=$(stat -c %s "$work/k/blobs/sha256/$blob")
    K=() D=() C=() S=() CP=()
    for round in $(seq 1 "$ROUNDS"); do
        logs=$work/logs/big-$round
        mkdir -p "$logs"
        rm -f "$work/k.tar"
        kmeasure "kiln big, cached, archive, round $round" "$logs/k.log" "$kiln" --root "$work/k" build \
            --progress json -t big -o "type=oci,dest=$work/k.tar" "$work/ctx/big"
        K+=("$R_WALL")
        archive_bytes=$(stat -c %s "$work/k.tar")
        rm -f "$work/k.tar"
        kmeasure "kiln save, round $round" "$logs/s.log" "$kiln" --root "$work/k" save -o "$work/k.tar" big
        S+=("$R_WALL")
        rm -f "$work/k.tar" "$work/cp.bin"
        measure "cp + sync FILE of the layer blob, round $round" "$logs/c.log" sh -c \
            "cp '$work/k/blobs/sha256/$blob' '$work/cp.bin' && sync '$work/cp.bin'"
        C+=("$R_WALL")
        rm -f "$work/cp.bin"
        measure "cp of the layer blob (no sync), round $round" "$logs/c2.log" cp "$work/k/blobs/sha256/$blob" "$work/cp.bin"
        CP+=("$R_WALL")
        rm -f "$work/cp.bin"
        buildkit_build "big, cached, round $round" "$logs/d.log" "$work/ctx/big" big "$work/d.tar"
        D+=("$D_WALL")
        rm -f "$work/d.tar"
    done
    add_row "cached 1 GiB: build + archive" "${K[*]}" "${D[*]}" BuildKit "<= 0.1" "<= 0.1x"
    add_row "cached 1 GiB: build + archive vs cp" "${K[*]}" "${CP[*]}" "cp" "" "info"
    add_row "kiln save vs cp" "${S[*]}" "${CP[*]}" "cp" "" "info"
    kgbs=$(calc %.2f "$archive_bytes / $(median "${K[@]}") / 1e9")
    cgbs=$(calc %.2f "$blob_bytes / $(median "${C[@]}") / 1e9")
    sgbs=$(calc %.2f "$archive_bytes / $(median "${S[@]}") / 1e9")
    pgbs=$(calc %.2f "$blob_bytes / $(median "${CP[@]}") / 1e9")
    if awk "BEGIN { exit !($kgbs >= 1.0 || $kgbs >= $pgbs) }"; then v=PASS; else v=FAIL; fails=$((fails + 1)); fi
    ROWS+=("$(row "cached 1 GiB: archive speed, GB/s" "$kgbs" "$pgbs" "" ">=1 or cp" "$v (ref: cp; cp + sync $cgbs GB/s; kiln save $sgbs GB/s)")")
    rm -rf "$work/k"
fi

# --- case 3: cold copy-tree and run-steps, before and after ---------------------------------------
if has_case 3; then
    say ""
    say "== case 3: cold copy-tree and run-steps, this kiln beside the old one"
    for recipe in tree steps; do
        N=() O=()
        for round in $(seq 1 "$ROUNDS"); do
            logs=$work/logs/$recipe-$round
            mkdir -p "$logs"
            # Taking turns to go first, as in case 1.
            for which in $( ((round % 2)) && echo "this old" || echo "old this"); do
                store=$(fresh_path k)
                kiln_base "$store"
                if [ "$which" = this ]; then
                    kmeasure "kiln (this) $recipe, cold, round $round" "$logs/n.log" "$kiln" --root "$store" build \
                        --progress json -t "$recipe" -o "type=oci,dest=$work/n.tar" "$work/ctx/$recipe"
                    N+=("$R_WALL")
                else
                    measure "kiln (old) $recipe, cold, round $round" "$logs/o.log" "$old" --root "$store" build \
                        --progress json -t "$recipe" -o "type=oci,dest=$work/o.tar" "$work/ctx/$recipe"
                    O+=("$R_WALL")
                fi
            done
            [ "$round" != 1 ] || { cmp -s "$work/n.tar" "$work/o.tar" && say "    archives identical" || say "    archives differ"; }
            rm -f "$work"/*.tar
        done
        add_row "$recipe: cold, build + archive" "${N[*]}" "${O[*]}" "old kiln" "<= 1.05" "<= 1.0x"
    done
fi

# --- the table --------------------------------------------------------------------------------------
say ""
say "== results: medians over $ROUNDS rounds; kiln/ref is the median of per-round ratios"
row "measurement" "kiln s" "ref s" "kiln/ref" "target" "result"
for r in "${ROWS[@]}"; do say "$r"; done
if awk "BEGIN { exit !($MAXRSS < 102400) }"; then v=PASS; else v=FAIL; fails=$((fails + 1)); fi
row "peak RSS of any kiln run, MB" "$(calc %.1f "$MAXRSS / 1024")" "" "" "< 100" "$v"
say "$fails target(s) failed"
if [ "$STRICT" = 1 ] && [ "$fails" -gt 0 ]; then exit 1; fi
exit 0
