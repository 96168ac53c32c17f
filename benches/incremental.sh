#!/usr/bin/env bash
# The edit-one-file benchmark (issue 14, items 2 and 3): kiln beside BuildKit, measured in the
# same run, on one generated context.
#
#   bash benches/incremental.sh            (or `just bench`)
#
# Context (seeded, the same bytes every run): busybox (for the RUN), vendor/v1..v6.bin of
# KILN_BENCH_VENDOR_MB (50) each, compressible, and src/ of KILN_BENCH_SMALL_FILES (20,000)
# text files of 1-4 KiB in 200 directories. Two recipes:
#
#   incremental   FROM scratch / COPY busybox / RUN busybox --install / COPY vendor/vN.bin
#                 /app/vendor/ (six steps) / COPY src/ /app/ (onto /app, which the vendor
#                 layers hold) / RUN over /app (counts the files and bytes of src)
#   copy-tree     FROM scratch / COPY . /data/ of a context holding the same src/ and vendor/
#
# Each round edits one src file in the middle (a different one each round) and rebuilds with
# both tools, then builds once more with nothing changed (fully cached); kiln's wall time and
# context bytes read come from its summary (`--progress json`), BuildKit is docker.io's
# dockerd (started here on its own socket and data root, `--bridge=none --iptables=false`,
# builds with `--network none`). Timed commands write no
# archive (the build alone, both tools), so what is compared is the rebuild itself.
# Rounds: KILN_BENCH_ROUNDS (3); the table shows medians, and ratios are medians of the
# per-round ratios. With KILN_BENCH_OLD_KILN=PATH (e.g. a build of main), cold copy-tree is
# also measured with that binary in every round, beside the new one.
#
# Knobs: KILN_BENCH_KILN=PATH (binary to measure, default `cargo build --release -p kiln`),
# KILN_BENCH_BUILDKIT=1 (0 skips BuildKit), KILN_BENCH_INSTALL=1 (0 never runs apt-get),
# KILN_BENCH_CACHED_RUNS=5 (fully cached builds per tool and round; the round counts their
# median), KILN_BENCH_STEP_TIMEOUT=900, TMPDIR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMALL=${KILN_BENCH_SMALL_FILES:-20000}
VENDOR_MB=${KILN_BENCH_VENDOR_MB:-50}
ROUNDS=${KILN_BENCH_ROUNDS:-3}
CACHED_RUNS=${KILN_BENCH_CACHED_RUNS:-5}
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-900}
DO_BUILDKIT=${KILN_BENCH_BUILDKIT:-1}
DO_INSTALL=${KILN_BENCH_INSTALL:-1}
OLD_KILN=${KILN_BENCH_OLD_KILN:-}

say() { printf '%s\n' "$*"; }
die() { printf 'incremental bench: %s\n' "$*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

command -v python3 >/dev/null || die "needs python3"
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-incremental-bench.XXXXXX")
dockerd_pid=""
unmount_under() {
    { findmnt -rn -o TARGET 2>/dev/null | grep -F "$1/" | sort -r || true; } | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}
cleanup() {
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    unmount_under "$work"
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/lib.sh
source "$repo/benches/lib.sh"
kiln_binary

apt_install() {
    [ "$DO_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    say "apt-get install -y $* (setup, not timed)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q "$@" >>"$work/apt.log" 2>&1 ||
        { timeout 600 apt-get update -q >>"$work/apt.log" 2>&1 &&
            timeout 600 apt-get install -y -q "$@" >>"$work/apt.log" 2>&1; }
}

busybox_bin=""
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && file -L "$b" 2>/dev/null | grep -q 'statically linked'; then busybox_bin=$b; break; fi
done
if [ -z "$busybox_bin" ]; then
    apt_install busybox-static || die "needs busybox-static (apt-get install busybox-static)"
    busybox_bin=/bin/busybox
fi

say "== incremental bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); work dir $work"
say "generating the context ($SMALL small files, 6 x $VENDOR_MB MB vendor files)..."
python3 - "$work/inc" "$SMALL" "$VENDOR_MB" <<'PY'
import os, random, sys
root, n_small, vendor_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0x6B696C6E_696E6372)
tokens = [w.encode() for w in ("the ", "layer ", "fn ", "let ", "{\n", "}\n", "    ", "if ",
    "error ", "path ", "const ", "struct ", "import ", "= ", "; ", "\n", "printf(", "); ")] + \
    [b"%d " % rng.randrange(100000) for _ in range(400)]
pool = b"".join(rng.choices(tokens, k=1_500_000))
def text(n):
    out = []
    while n > 0:
        k = min(n, rng.randrange(256, 8192))
        o = rng.randrange(0, len(pool) - k)
        out.append(pool[o:o + k])
        n -= k
    return b"".join(out)
for i in range(n_small):
    d = os.path.join(root, "src", "m%02d" % (i // 1000), "p%d" % (i // 100 % 10))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%03d.txt" % (i % 100)), "wb") as f:
        f.write(text(rng.randrange(1024, 4097)))
os.makedirs(os.path.join(root, "vendor"), exist_ok=True)
# Compressible but not trivially: random bytes over a 16-letter alphabet, ~4 bits a byte.
table = bytes(b"abcdefghijklmnop"[i % 16] for i in range(256))
for v in range(1, 7):
    with open(os.path.join(root, "vendor", "v%d.bin" % v), "wb") as f:
        for _ in range(vendor_mb):
            f.write(rng.randbytes(1 << 20).translate(table))
PY
cp "$busybox_bin" "$work/inc/busybox"
{
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    for v in 1 2 3 4 5 6; do printf 'COPY vendor/v%d.bin /app/vendor/\n' "$v"; done
    printf 'COPY src/ /app/\n'
    printf 'RUN find /app/m* -type f | wc -l > /files && cat /app/m*/*/* | wc -c > /bytes\n'
} >"$work/inc/Dockerfile"
# copy-tree: the same files, one COPY.
mkdir -p "$work/tree"
cp -a "$work/inc/src" "$work/inc/vendor" "$work/tree/"
printf 'FROM scratch\nCOPY . /data/\n' >"$work/tree/Dockerfile"
# Warm the page cache: what is compared is the builders, not the disk.
find "$work/inc" "$work/tree" -type f -exec cat {} + >/dev/null

# kiln_run NAME BINARY STORE CTX: sets K_WALL (s) and K_READ (context bytes read)
kiln_run() {
    local name=$1 bin=$2 store=$3 ctx=$4 log=$work/$1.log
    local start end
    # What the tool before left unwritten is written now, untimed: kiln syncs its snapshot
    # with syncfs, which would otherwise also write out the other tool's last build.
    sync
    start=$(date +%s.%N)
    if ! timeout "$STEP_TIMEOUT" "$bin" --root "$store" build --progress json -t "bench-$name" "$ctx" >"$log" 2>&1; then
        tail -n 5 "$log" | sed 's/^/    | /'
        die "kiln failed ($name)"
    fi
    end=$(date +%s.%N)
    K_WALL=$(calc %.3f "$end - $start")
    K_READ=$(grep -o '"context_bytes_read":[0-9]*' "$log" | tail -n 1 | cut -d: -f2)
    K_READ=${K_READ:-?}
    printf '  %-44s %8.3fs  context read %s bytes\n' "kiln $name" "$K_WALL" "$K_READ"
}

buildkit_on=0
docker_cmd=()
if [ "$DO_BUILDKIT" = 1 ]; then
    if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ]; then apt_install docker.io || true; fi
    if [ -x /usr/sbin/dockerd ] && [ "$(id -u)" = 0 ]; then
        mkdir -p "$work/dockerd"
        /usr/sbin/dockerd --data-root "$work/dockerd/root" --exec-root "$work/dockerd/exec" \
            --pidfile "$work/dockerd/pid" -H "unix://$work/dockerd/sock" \
            --containerd-namespace kiln-inc-bench --containerd-plugins-namespace kiln-inc-bench-plugins \
            --bridge=none --iptables=false --ip-masq=false >"$work/dockerd/log" 2>&1 &
        dockerd_pid=$!
        docker_cmd=(/usr/bin/docker -H "unix://$work/dockerd/sock")
        for _ in $(seq 1 60); do
            if timeout 5 "${docker_cmd[@]}" info >/dev/null 2>&1; then buildkit_on=1; break; fi
            sleep 0.5
        done
    fi
    [ "$buildkit_on" = 1 ] || say "BuildKit: NOT MEASURED (no dockerd, not root, or it did not start)"
fi
# buildkit_run NAME CTX: sets D_WALL
buildkit_run() {
    local name=$1 ctx=$2 start end
    D_WALL=""
    [ "$buildkit_on" = 1 ] || return 0
    sync
    start=$(date +%s.%N)
    if ! DOCKER_BUILDKIT=1 timeout "$STEP_TIMEOUT" "${docker_cmd[@]}" build --network none -q -t "bench-$name" "$ctx" >"$work/bk-$name.log" 2>&1; then
        tail -n 5 "$work/bk-$name.log" | sed 's/^/    | /'
        say "  BuildKit failed ($name)"
        return 0
    fi
    end=$(date +%s.%N)
    D_WALL=$(calc %.3f "$end - $start")
    printf '  %-44s %8.3fs\n' "BuildKit $name" "$D_WALL"
}

# A fully cached build takes tens of milliseconds, so one run says as much about the machine
# (a scheduling hiccup is +40 ms here) as about the tool: each round takes the median of
# CACHED_RUNS runs of each tool, the two taking turns.
cached_runs() { # name ctx; sets K_WALL and D_WALL (medians; D_WALL "" without BuildKit)
    local ks=() ds=() i
    for i in $(seq 1 "$CACHED_RUNS"); do
        kiln_run "$1" "$kiln" "$work/kstore" "$2"
        ks+=("$K_WALL")
        buildkit_run "$1" "$2"
        [ -z "$D_WALL" ] || ds+=("$D_WALL")
    done
    K_WALL=$(median "${ks[@]}")
    D_WALL=""
    if ((${#ds[@]})); then D_WALL=$(median "${ds[@]}"); fi
    printf '  %-44s %8.3fs  BuildKit %ss (medians of %s runs)\n' "$1" "$K_WALL" "${D_WALL:--}" "${#ks[@]}"
}

# One src file in the middle, a different one each round.
edit_middle() { # ctx round
    local f
    f=$(find "$1/src" -type f | LC_ALL=C sort | awk -v n="$SMALL" -v r="$2" 'NR == int(n / 2) + r { print }')
    printf '// edited in round %s\n' "$2" >>"$f"
    EDITED_BYTES=$(stat -c %s "$f")
}

say "setup (untimed for the table): cold builds of both recipes with both tools"
kiln_run inc-cold "$kiln" "$work/kstore" "$work/inc"
buildkit_run inc-cold "$work/inc"
kiln_run tree-cold "$kiln" "$work/kstore" "$work/tree"
buildkit_run tree-cold "$work/tree"
recipe_bytes=$(stat -c %s "$work/inc/Dockerfile")

inc_k=() inc_d=() inc_r=() inc_read=() inc_budget=()
tree_k=() tree_d=() tree_r=()
incc_k=() incc_d=() incc_r=() treec_k=() treec_d=() treec_r=()
cold_new=() cold_old=() cold_r=()
for round in $(seq 1 "$ROUNDS"); do
    say "-- round $round"
    edit_middle "$work/inc" "$round"
    kiln_run inc-edit "$kiln" "$work/kstore" "$work/inc"
    inc_k+=("$K_WALL") inc_read+=("$K_READ") inc_budget+=("$((EDITED_BYTES + recipe_bytes))")
    buildkit_run inc-edit "$work/inc"
    if [ -n "$D_WALL" ]; then inc_d+=("$D_WALL") inc_r+=("$(calc %.4f "$K_WALL / $D_WALL")"); fi
    cached_runs inc-cached "$work/inc"
    incc_k+=("$K_WALL")
    if [ -n "$D_WALL" ]; then incc_d+=("$D_WALL") incc_r+=("$(calc %.4f "$K_WALL / $D_WALL")"); fi

    edit_middle "$work/tree" "$round"
    kiln_run tree-edit "$kiln" "$work/kstore" "$work/tree"
    tree_k+=("$K_WALL")
    buildkit_run tree-edit "$work/tree"
    if [ -n "$D_WALL" ]; then tree_d+=("$D_WALL") tree_r+=("$(calc %.4f "$K_WALL / $D_WALL")"); fi
    cached_runs tree-cached "$work/tree"
    treec_k+=("$K_WALL")
    if [ -n "$D_WALL" ]; then treec_d+=("$D_WALL") treec_r+=("$(calc %.4f "$K_WALL / $D_WALL")"); fi

    if [ -n "$OLD_KILN" ]; then
        # Stores of their own, deleted only at the end (`fresh_path`, benches/lib.sh).
        kiln_run tree-cold-old "$OLD_KILN" "$(fresh_path cold-old)" "$work/tree"
        cold_old+=("$K_WALL")
        kiln_run tree-cold-new "$kiln" "$(fresh_path cold-new)" "$work/tree"
        cold_new+=("$K_WALL") cold_r+=("$(calc %.4f "$K_WALL / ${cold_old[-1]}")")
    fi
done

say ""
say "== results: medians of $ROUNDS rounds (ratios: median of per-round ratios); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-52s %9s %9s %8s  %s\n' "case" "kiln" "BuildKit" "ratio" "target"
printf '%-52s %9s %9s %8s  %s\n' "incremental, one src file edited (s)" "$(median "${inc_k[@]}")" \
    "$(median "${inc_d[@]}")" "$(median "${inc_r[@]}")" "<= 1.0 s and <= 0.1x"
printf '%-52s %9s %9s %8s  %s\n' "incremental: context bytes read (kiln)" "$(median "${inc_read[@]}")" "" "" \
    "<= edited file + recipe ($(median "${inc_budget[@]}"))"
printf '%-52s %9s %9s %8s  %s\n' "copy-tree, one small file edited (s)" "$(median "${tree_k[@]}")" \
    "$(median "${tree_d[@]}")" "$(median "${tree_r[@]}")" "<= 1 s"
printf '%-52s %9s %9s %8s  %s\n' "incremental, fully cached (s)" "$(median "${incc_k[@]}")" \
    "$(median "${incc_d[@]}")" "$(median "${incc_r[@]}")" "<= 0.1x"
printf '%-52s %9s %9s %8s  %s\n' "copy-tree, fully cached (s)" "$(median "${treec_k[@]}")" \
    "$(median "${treec_d[@]}")" "$(median "${treec_r[@]}")" "<= 0.1x"
if [ -n "$OLD_KILN" ]; then
    printf '%-52s %9s %9s %8s  %s\n' "copy-tree cold: this kiln vs KILN_BENCH_OLD_KILN (s)" \
        "$(median "${cold_new[@]}")" "$(median "${cold_old[@]}")" "$(median "${cold_r[@]}")" "<= 1.0x"
fi
