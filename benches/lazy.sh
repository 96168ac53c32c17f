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
#              least at the speed of `cp` + `sync FILE` of the layer blob measured beside it (kiln
#              syncs the archive before renaming it into place). `kiln save -o` of the same image
#              is timed too.
#   3 before   cold copy-tree (COPY of 20,000 small files + 6 x 50 MB in one step) and cold
#              run-steps (4 RUN steps writing 2,000 files and changing some), this kiln beside
#              the kiln of KILN_BENCH_OLD (a binary) or KILN_BENCH_OLD_REV (a git revision built
#              here with cargo, default `main`). Target: no slower (<= 1.05x, noise).
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

calc() { awk "BEGIN { printf \"$1\", $2 }"; }
median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratios() { # "k1 k2 ..." "r1 r2 ..." -> median of per-round ratios
    local -a k=($1) r=($2) q=()
    ((${#k[@]})) && [ "${#k[@]}" = "${#r[@]}" ] || { echo -; return; }
    local n
    for n in "${!k[@]}"; do q+=("$(calc %.4f "${k[$n]} / ${r[$n]}")"); done
    calc %.3f "$(median "${q[@]}")"
}
fails=0
ROWS=()
row() { printf '%-44s %9s %9s %9s  %-10s %s\n' "$@"; }
add_row() { # label "kiln samples" "ref samples" ref-name awk-target target-text
    local label=$1 ks=$2 rs=$3 ref=$4 expr=$5 text=$6 r v="-"
    r=$(ratios "$ks" "$rs")
    if [ -n "$expr" ] && [ "$r" != - ]; then
        if awk "BEGIN { exit !($r $expr) }"; then v=PASS; else v=FAIL; fails=$((fails + 1)); fi
    fi
    ROWS+=("$(row "$label" "$(median $ks)" "$(median $rs)" "$r" "$text" "$v (ref: $ref)")")
    say "  samples $label: kiln $ks | $ref $rs"
}
MAXRSS=0
measure() { # name log cmd...; sets R_EXIT R_WALL R_CPU R_RSS (KiB)
    local name=$1 log=$2
    shift 2
    timeout 300 sync || true
    python3 "$repo/benches/measure.py" "$STEP_TIMEOUT" "$work/result" "$log" "$@"
    read -r R_EXIT R_WALL R_CPU R_RSS _ <"$work/result"
    printf '  %-50s %8.2fs  exit %-3s cpu %6.1fs  maxrss %7s\n' \
        "$name" "$R_WALL" "$R_EXIT" "$R_CPU" "$(calc '%.1f MB' "$R_RSS / 1024")"
    [ "$R_EXIT" = 0 ] || { tail -n 5 "$log" | sed 's/^/    | /'; die "$name failed (exit $R_EXIT)"; }
}
kmeasure() { # like measure, for a kiln run: its peak RSS counts against the target
    measure "$@"
    ((R_RSS > MAXRSS)) && MAXRSS=$R_RSS
    return 0
}
step_seconds() { # log prefix: the json "done" seconds of the step starting with prefix
    python3 - "$1" "$2" <<'PY'
import json, sys
prefix, number, out = sys.argv[2], None, "-"
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step" and e.get("instruction", "").startswith(prefix):
        number = e.get("number")
    elif e.get("event") == "done" and number is not None and e.get("number") == number:
        out = "%.3f" % e["seconds"]
print(out)
PY
}

say "== lazy bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r); work dir $work"
kiln_binary

# --- BuildKit ---------------------------------------------------------------------------------
docker_cmd=()
buildkit_start() {
    local dockerd=/usr/sbin/dockerd docker=/usr/bin/docker
    [ -x "$dockerd" ] && [ -x "$docker" ] || die "needs Debian's docker.io (/usr/sbin/dockerd, /usr/bin/docker)"
    mkdir -p "$work/dockerd"
    "$dockerd" --data-root "$work/dockerd/root" --exec-root "$work/dockerd/exec" \
        --pidfile "$work/dockerd/pid" -H "unix://$work/dockerd/sock" \
        --containerd-namespace kiln-lazy-bench --containerd-plugins-namespace kiln-lazy-bench-plugins \
        --bridge=none --iptables=false --ip-masq=false >"$work/dockerd/log" 2>&1 &
    dockerd_pid=$!
    docker_cmd=("$docker" -H "unix://$work/dockerd/sock")
    local i
    for i in $(seq 1 60); do
        if timeout 5 "${docker_cmd[@]}" info >/dev/null 2>&1; then
            say "BuildKit: dockerd $("${docker_cmd[@]}" version --format '{{.Server.Version}}' 2>/dev/null) on $work/dockerd/sock"
            return 0
        fi
        sleep 0.5
    done
    die "dockerd did not come up: $(tail -n 3 "$work/dockerd/log" | tr '\n' ' ')"
}
buildkit_stop() {
    [ -n "$dockerd_pid" ] || return 0
    kill "$dockerd_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
    if command -v findmnt >/dev/null; then
        { findmnt -rn -o TARGET | grep -F "$work/dockerd/" | sort -r || true; } | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
}
buildkit_build() { # label log ctx tag archive; sets D_WALL (build + save)
    local label=$1 log=$2 ctx=$3 tag=$4 out=$5
    DOCKER_BUILDKIT=1 measure "BuildKit $label: build" "$log" "${docker_cmd[@]}" build --network none -q -t "$tag" "$ctx"
    local build=$R_WALL
    rm -f "$out"
    measure "BuildKit $label: save" "$log" "${docker_cmd[@]}" save -o "$out" "$tag"
    D_WALL=$(calc %.3f "$build + $R_WALL")
}
buildkit_cold() { # drops BuildKit's cache and images but the base
    timeout 120 "${docker_cmd[@]}" builder prune -af >/dev/null 2>&1 || true
    local t
    for t in "$@"; do timeout 60 "${docker_cmd[@]}" rmi -f "$t" >/dev/null 2>&1 || true; done
}

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
    for round in $(seq 1 "$ROUNDS"); do
        logs=$work/logs/stage-$round
        mkdir -p "$logs"
        kiln_base "$work/k"
        kmeasure "kiln stage, cold, round $round" "$logs/k.log" "$kiln" --root "$work/k" build \
            --progress json -t stage -o "type=oci,dest=$work/k.tar" "$work/ctx/stage"
        K+=("$R_WALL")
        RUNS+=("$(step_seconds "$logs/k.log" "RUN ")")
        if [ -n "$old" ]; then
            kiln_base "$work/k"
            measure "kiln (old) stage, cold, round $round" "$logs/o.log" "$old" --root "$work/k" build \
                --progress json -t stage -o "type=oci,dest=$work/o.tar" "$work/ctx/stage"
            O+=("$R_WALL")
        fi
        buildkit_cold stage
        buildkit_build "stage, cold, round $round" "$logs/d.log" "$work/ctx/stage" stage "$work/d.tar"
        D+=("$D_WALL")
        say "    kiln archive $(stat -c %s "$work/k.tar") bytes; the build stage's RUN alone: ${RUNS[-1]}s"
        rm -f "$work"/*.tar
    done
    add_row "stage: cold, build + archive" "${K[*]}" "${D[*]}" BuildKit "<= 1.0" "<= 1.0x"
    [ -z "$old" ] || add_row "stage: cold, this kiln vs the old one" "${K[*]}" "${O[*]}" "old kiln" "" "info"
    ROWS+=("$(row "stage: the RUN's own seconds (kiln)" "$(median "${RUNS[@]}")" "" "" "info" "")")
    rm -rf "$work/k"
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
    add_row "cached 1 GiB: archive vs cp + sync" "${K[*]}" "${C[*]}" "cp+sync" "" "info"
    add_row "kiln save vs cp + sync" "${S[*]}" "${C[*]}" "cp+sync" "" "info"
    kgbs=$(calc %.2f "$archive_bytes / $(median "${K[@]}") / 1e9")
    cgbs=$(calc %.2f "$blob_bytes / $(median "${C[@]}") / 1e9")
    sgbs=$(calc %.2f "$archive_bytes / $(median "${S[@]}") / 1e9")
    pgbs=$(calc %.2f "$blob_bytes / $(median "${CP[@]}") / 1e9")
    if awk "BEGIN { exit !($kgbs >= 1.0 || $kgbs >= $cgbs) }"; then v=PASS; else v=FAIL; fails=$((fails + 1)); fi
    ROWS+=("$(row "cached 1 GiB: archive speed, GB/s" "$kgbs" "$cgbs" "" ">=1 or cp" "$v (ref: cp + sync; cp alone $pgbs GB/s; kiln save $sgbs GB/s)")")
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
            kiln_base "$work/k"
            kmeasure "kiln (this) $recipe, cold, round $round" "$logs/n.log" "$kiln" --root "$work/k" build \
                --progress json -t "$recipe" -o "type=oci,dest=$work/n.tar" "$work/ctx/$recipe"
            N+=("$R_WALL")
            kiln_base "$work/k"
            measure "kiln (old) $recipe, cold, round $round" "$logs/o.log" "$old" --root "$work/k" build \
                --progress json -t "$recipe" -o "type=oci,dest=$work/o.tar" "$work/ctx/$recipe"
            O+=("$R_WALL")
            [ "$round" != 1 ] || { cmp -s "$work/n.tar" "$work/o.tar" && say "    archives identical" || say "    archives differ"; }
            rm -f "$work"/*.tar
        done
        add_row "$recipe: cold, build + archive" "${N[*]}" "${O[*]}" "old kiln" "<= 1.05" "<= 1.0x"
    done
    rm -rf "$work/k"
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
