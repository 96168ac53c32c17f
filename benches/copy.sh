#!/usr/bin/env bash
# The COPY benchmark (issue 3): kiln against buildah and the shell pipeline, in one run, on one
# generated build context.
#
#   bash benches/copy.sh            (or `just bench`)
#
# Context: 20,000 small text-like files (1-4 KiB) in 200 nested directories plus 300 MiB in 4
# large files of compressible-but-not-trivial data, made from a fixed seed (same bytes on every
# run), with the recipe `FROM scratch` / `COPY . /data/`.
#
# Measured in KILN_BENCH_ROUNDS rounds (default 3), kiln and buildah back to back in each round,
# with the same context and a warm page cache (the context is read once before anything is
# timed); the table shows medians, and for kiln/buildah the median of the per-round ratios:
#   kiln     cold build (empty --root), cached rebuild, one-file-changed rebuild; each writes
#            the image with `-o type=oci,dest=FILE`.
#   buildah  `buildah bud --layers` + `buildah push IMAGE oci-archive:FILE`: cold (empty
#            storage), warm (cache hit), one-file-changed. buildah gets its own storage, config
#            and run directories under the temporary directory: the machine's images and
#            /etc/containers are not touched.
#   shell    `tar -cf - CTX | gzip -6 | sha256sum` (and pigz -6 when installed) on the context.
#   layer    `cargo bench -p kiln-layer --bench layer`: the layer pipeline alone against the
#            same shell pipelines on a tree of the same shape (it makes its own).
#
# Bytes read: every timed command runs under a small launcher that waits for it with
# waitid(WNOWAIT) and reads /proc/PID/io of the exited (not yet reaped) process, so the numbers
# cover the whole process and every child it reaped. `rchar` is all bytes returned by read-like
# system calls (read, pread, copy_file_range, sendfile...), page-cache hits included: it is the
# number that shows whether file content was read again. `read_bytes` is what came from the
# disk: small with a warm cache (tens of MB where the VM reclaims idle page cache, as kdamond
# does on the project's machines). For the cached rebuild the script also runs
# kiln once more under strace (untimed) and counts the context files it opened and the context
# bytes it read, so the rchar total can be attributed.
#
# Knobs (environment):
#   KILN_BENCH_SMALL_FILES=20000  KILN_BENCH_LARGE_MB=300  KILN_BENCH_LARGE_FILES=4
#   KILN_BENCH_ROUNDS=3           rounds of cold/cached/changed builds; the table shows medians
#   KILN_BENCH_STEP_TIMEOUT=900   seconds allowed to any one timed command
#   KILN_BENCH_BUILDAH=1          0 skips buildah
#   KILN_BENCH_INSTALL=1          0 never runs apt-get (the only network use, setup only: when
#                                 buildah is missing and we are root, `apt-get install buildah`)
#   KILN_BENCH_LAYER=1            0 skips `cargo bench -p kiln-layer --bench layer`
#   KILN_BENCH_SHELL=1            0 skips the shell pipelines on the context
#   KILN_BENCH_STRICT=0           1 makes a FAIL against a target exit 1
#   KILN_BENCH_KILN=PATH          use this kiln binary instead of `cargo build --release -p kiln`
#   TMPDIR                        where the temporary directory goes (default /tmp)
#
# Exit status: 0 when everything that was asked for ran (PASS or FAIL is in the table), 1 when a
# kiln step failed or timed out (or with KILN_BENCH_STRICT=1, when a target failed).

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMALL=${KILN_BENCH_SMALL_FILES:-20000}
LARGE_MB=${KILN_BENCH_LARGE_MB:-300}
LARGE_FILES=${KILN_BENCH_LARGE_FILES:-4}
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-900}
DO_BUILDAH=${KILN_BENCH_BUILDAH:-1}
DO_INSTALL=${KILN_BENCH_INSTALL:-1}
DO_LAYER=${KILN_BENCH_LAYER:-1}
DO_SHELL=${KILN_BENCH_SHELL:-1}
STRICT=${KILN_BENCH_STRICT:-0}
ROUNDS=${KILN_BENCH_ROUNDS:-3}

say() { printf '%s\n' "$*"; }
die() { printf 'copy bench: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || die "needs python3 (context generator and process launcher)"
command -v cargo >/dev/null || die "needs cargo"

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-copy-bench.XXXXXX")
ctx=$work/ctx
kroot=$work/kiln-root
broot=$work/buildah

buildah_cmd=()
# Anything buildah's storage left mounted under a directory, innermost first.
unmount_under() {
    if command -v findmnt >/dev/null; then
        { findmnt -rn -o TARGET | grep -F "$1/" | sort -r || true; } | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
}
cleanup() {
    set +e
    if ((${#buildah_cmd[@]})); then
        timeout 120 "${buildah_cmd[@]}" rm -a >/dev/null 2>&1
        timeout 120 "${buildah_cmd[@]}" rmi -a -f >/dev/null 2>&1
    fi
    unmount_under "$work"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ---------------------------------------------------------------------------------

# Every timed command runs under benches/measure.py, the launcher all benchmarks share.

# The context: seeded, so the same bytes every run.
cat >"$work/gen.py" <<'PY'
import os, random, sys
root, n_small, large_mib, n_large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0x6B696C6E_636F7079)
tokens = [w.encode() for w in (
    "the ", "layer ", "image ", "build ", "kiln ", "return ", "fn ", "let ", "0x1f ", "config ",
    "{\n", "}\n", "    ", "if ", "else ", "error ", "path ", "/usr/lib/ ", "x86_64 ", "static ",
    "const ", "struct ", "import ", "data ", "= ", "; ", "\n", "#include ", "<stdio.h> ",
    "printf(", "); ", "null ")] + [b"%d " % rng.randrange(100000) for _ in range(400)]
# A ~6 MB pool of text; files are random slices of it (deflate's 32 KiB window sees them as
# fresh text, so they compress like text, not like repeats).
pool = b"".join(rng.choices(tokens, k=1_500_000))
def text(n):
    out = []
    while n > 0:
        k = min(n, rng.randrange(256, 8192))
        o = rng.randrange(0, len(pool) - k)
        out.append(pool[o:o + k])
        n -= k
    return b"".join(out)
total = 0
for i in range(n_small):
    d = os.path.join(root, "src", "m%02d" % (i // 1000), "p%d" % (i // 100 % 10))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    data = text(rng.randrange(1024, 4097))
    with open(os.path.join(d, "f%03d.txt" % (i % 100)), "wb") as f:
        f.write(data)
    total += len(data)
per = large_mib * 1024 * 1024 // n_large
for i in range(n_large):
    left = per
    with open(os.path.join(root, "big%d.bin" % i), "wb") as f:
        while left > 0:
            if rng.random() < 0.03:   # now and then an incompressible stretch
                chunk = rng.randbytes(min(left, rng.randrange(512, 8192)))
            else:
                chunk = text(min(left, rng.randrange(1 << 20, 4 << 20)))
            f.write(chunk)
            left -= len(chunk)
    total += per
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY . /data/\n")
print(total)
PY

# Attribution of a strace -ff log set: context files opened for reading, context bytes read.
cat >"$work/attrib.py" <<'PY'
import glob, os, re, sys
ctx = sys.argv[1].rstrip("/") + "/"
opened, nbytes = set(), 0
op = re.compile(r'^open(?:at2?)?\(.*\) = \d+<([^>]*)>')
rd = re.compile(r'^(?:read|pread64|readv|preadv2?|copy_file_range|sendfile|splice)\(\d+<([^>]*)>.* = (\d+)$')
for name in glob.glob(sys.argv[2] + ".*"):
    with open(name, errors="replace") as f:
        for line in f:
            line = line.rstrip()
            m = op.match(line)
            if m and m.group(1).startswith(ctx) and "O_DIRECTORY" not in line \
                    and "O_PATH" not in line and os.path.isfile(m.group(1)):
                opened.add(m.group(1))
                continue
            m = rd.match(line)
            if m and m.group(1).startswith(ctx):
                nbytes += int(m.group(2))
print(len(opened), nbytes)
PY

# measure NAME LOG CMD... : runs CMD under the launcher (after an untimed sync); sets R_EXIT
# R_WALL R_RCHAR R_DISK R_CPU.
measure() {
    local name=$1 log=$2
    shift 2
    # Start each step with no dirty pages left by the one before (buildah writes ~1.5 GB).
    timeout 300 sync || true
    python3 "$repo/benches/measure.py" "$STEP_TIMEOUT" "$work/result" "$log" "$@"
    read -r R_EXIT R_WALL R_CPU _ R_RCHAR R_DISK <"$work/result"
    printf '  %-44s %8.2fs  exit %-3s rchar %8s  disk read %8s  cpu %6.1fs\n' \
        "$name" "$R_WALL" "$R_EXIT" "$(mb "$R_RCHAR")" "$(mb "$R_DISK")" "$R_CPU"
}
mb() { awk -v b="$1" 'BEGIN { if (b < 0) print "?"; else printf "%.1f MB", b / 1e6 }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# --- build kiln --------------------------------------------------------------------------------

say "== copy bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
say "work dir $work (removed at exit)"
source "$repo/benches/lib.sh"
kiln_binary
if [ "$DO_LAYER" = 1 ]; then
    say "building the layer bench (cargo bench -p kiln-layer --bench layer --no-run)..."
    (cd "$repo" && timeout 3600 cargo bench -p kiln-layer --bench layer --no-run -q) ||
        die "cargo bench -p kiln-layer --no-run failed"
fi

# --- buildah setup -------------------------------------------------------------------------------

buildah_note=""
if [ "$DO_BUILDAH" = 1 ] && ! command -v buildah >/dev/null; then
    if [ "$DO_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "buildah missing: apt-get install -y buildah (setup, not timed; the only network use)"
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get install -y -q buildah >"$work/apt.log" 2>&1 ||
            { timeout 600 apt-get update -q >>"$work/apt.log" 2>&1 &&
                timeout 600 apt-get install -y -q buildah >>"$work/apt.log" 2>&1; } ||
            buildah_note="apt-get install buildah failed: $(tail -n 1 "$work/apt.log")"
    else
        buildah_note="buildah is not installed (apt-get install buildah; this run may not install)"
    fi
fi
if [ "$DO_BUILDAH" = 1 ] && [ -z "$buildah_note" ]; then
    mkdir -p "$broot"
    # crun does not work on this kind of machine; runc with cgroupfs does. COPY needs neither,
    # but buildah reads the configuration anyway.
    cat >"$broot/containers.conf" <<'EOF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$broot/containers.conf
    printf '[storage]\ndriver = "overlay"\n' >"$broot/storage.conf"
    export CONTAINERS_STORAGE_CONF=$broot/storage.conf
    # Find a storage driver that works here: overlay first, then vfs.
    mkdir -p "$broot/probe"
    echo probe >"$broot/probe/a"
    printf 'FROM scratch\nCOPY a /a\n' >"$broot/probe/Dockerfile"
    for driver in overlay vfs; do
        cmd=(buildah --root "$broot/probe-$driver/root" --runroot "$broot/probe-$driver/run"
            --storage-driver "$driver")
        if timeout 120 "${cmd[@]}" bud --pull=never --layers -t probe -f "$broot/probe/Dockerfile" \
            "$broot/probe" >"$broot/probe-$driver.log" 2>&1 &&
            timeout 120 "${cmd[@]}" push probe "oci-archive:$broot/probe-$driver.tar" \
                >>"$broot/probe-$driver.log" 2>&1; then
            buildah_driver=$driver
        else
            buildah_note="${buildah_note:+$buildah_note; }with $driver storage: $(tail -n 1 "$broot/probe-$driver.log")"
        fi
        timeout 120 "${cmd[@]}" rmi -a -f >/dev/null 2>&1 || true
        rm -rf "$broot/probe-$driver" 2>/dev/null || true
        if [ -n "${buildah_driver:-}" ]; then
            buildah_note=""
            break
        fi
    done
    if [ -n "${buildah_driver:-}" ]; then
        say "buildah: $(buildah --version), storage $buildah_driver, runtime runc (own store under $broot)"
    fi
fi
if [ "$DO_BUILDAH" = 1 ] && [ -n "$buildah_note" ]; then
    say "buildah: NOT MEASURED: $buildah_note"
fi

# --- the context ---------------------------------------------------------------------------------

say "generating the context: $SMALL small files + $LARGE_MB MiB in $LARGE_FILES large files..."
t0=$(date +%s.%N)
content=$(timeout 900 python3 "$work/gen.py" "$ctx" "$SMALL" "$LARGE_MB" "$LARGE_FILES")
nfiles=$(find "$ctx" -type f | wc -l)
say "context: $nfiles files, $(mb "$content") of content, made in $(calc %.1f "$(date +%s.%N) - $t0")s"
# Warm the page cache: every tool below reads the context from memory.
tar -cf - -C "$ctx" . | cat >/dev/null

kiln_build() { # name archive log
    rm -f "$2"
    measure "$1" "$3" "$kiln" --root "$kroot" build --progress plain -t bench \
        -o "type=oci,dest=$2" "$ctx"
    [ "$R_EXIT" = 0 ] || { tail -n 20 "$3" >&2; die "kiln build failed ($1)"; }
}
buildah_build() { # name archive log; sets B_WALL (bud + push), or "" and buildah_on=0 on failure
    B_WALL=""
    [ "$buildah_on" = 1 ] || return 0
    rm -f "$2"
    measure "$1: bud --layers" "$3" "${buildah_cmd[@]}" bud --pull=never --layers \
        -t bench -f "$ctx/Dockerfile" "$ctx"
    local ok=$R_EXIT bud=$R_WALL
    if [ "$ok" = 0 ]; then
        measure "$1: push oci-archive:" "$3" "${buildah_cmd[@]}" push bench "oci-archive:$2"
    fi
    if [ "$ok" = 0 ] && [ "$R_EXIT" = 0 ]; then
        B_WALL=$(calc %.3f "$bud + $R_WALL")
    else
        buildah_note="buildah failed in \"$1\" (exit $ok/$R_EXIT): $(tail -n 1 "$3")"
        buildah_on=0
        say "  $buildah_note"
    fi
}
buildah_store_drop() {
    ((${#buildah_cmd[@]})) || return 0
    timeout 120 "${buildah_cmd[@]}" rm -a >/dev/null 2>&1 || true
    timeout 120 "${buildah_cmd[@]}" rmi -a -f >/dev/null 2>&1 || true
    unmount_under "$broot/store"
    rm -rf "$broot/store"
    buildah_cmd=()
}

# --- the rounds ----------------------------------------------------------------------------------
# Each round: cold (fresh stores), cached, one file changed; kiln and buildah alternate so both
# see the same machine. This machine's timings swing by half from run to run, so the table uses
# the median of the rounds and lists every sample.

buildah_on=0
if [ -n "${buildah_driver:-}" ] && [ -z "$buildah_note" ]; then buildah_on=1; fi
K_COLD=() K_CACHED=() K_CHANGED=() B_COLD=() B_WARM=() B_CHANGED=()
ctx_opened="" ctx_bytes="" k_cached_rchar="" k_cached_disk="" k_cached_size=""
for round in $(seq 1 "$ROUNDS"); do
    say ""
    say "== round $round of $ROUNDS"
    logs=$work/logs/$round
    mkdir -p "$logs"
    rm -rf "$kroot"
    if [ "$buildah_on" = 1 ]; then
        buildah_cmd=(buildah --root "$broot/store/root" --runroot "$broot/store/run"
            --storage-driver "$buildah_driver")
    fi

    kiln_build "kiln cold (empty root)" "$work/kiln-cold.tar" "$logs/kiln-cold.log"
    K_COLD+=("$R_WALL")
    buildah_build "buildah cold (empty storage)" "$work/buildah-cold.tar" "$logs/buildah-cold.log"
    if [ -n "$B_WALL" ]; then B_COLD+=("$B_WALL"); fi

    kiln_build "kiln cached rebuild" "$work/kiln-cached.tar" "$logs/kiln-cached.log"
    K_CACHED+=("$R_WALL")
    if [ "$round" = 1 ]; then
        k_cached_rchar=$R_RCHAR
        k_cached_disk=$R_DISK
        k_cached_size=$(file_size "$work/kiln-cached.tar")
    fi
    grep -q CACHED "$logs/kiln-cached.log" || say "  WARNING: kiln's rebuild did not report a cache hit"
    buildah_build "buildah warm" "$work/buildah-warm.tar" "$logs/buildah-warm.log"
    if [ -n "$B_WALL" ]; then
        B_WARM+=("$B_WALL")
        grep -q "Using cache" "$logs/buildah-warm.log" ||
            say "  WARNING: buildah's warm build did not use its cache"
    fi

    if [ "$round" = 1 ]; then
        cmp -s "$work/kiln-cold.tar" "$work/kiln-cached.tar" && same="identical to" || same="DIFFERENT from"
        say "  kiln's cached archive: $(mb "$k_cached_size"), $same the cold one"
        if [ -f "$work/buildah-warm.tar" ]; then
            say "  buildah's archive: $(mb "$(file_size "$work/buildah-warm.tar")")"
        fi
        # Attribution, untimed: which context content does the cached rebuild read?
        if command -v strace >/dev/null; then
            mkdir -p "$work/strace"
            if timeout "$STEP_TIMEOUT" strace -f -ff -qq -y -s 0 -o "$work/strace/t" \
                -e trace=open,openat,openat2,read,pread64,readv,preadv,preadv2,copy_file_range,sendfile,splice \
                "$kiln" --root "$kroot" build --progress quiet -t bench \
                -o "type=oci,dest=$work/kiln-strace.tar" "$ctx" >/dev/null 2>"$logs/strace.err"; then
                read -r ctx_opened ctx_bytes < <(python3 "$work/attrib.py" "$ctx" "$work/strace/t") || true
            fi
            rm -rf "$work/strace" "$work/kiln-strace.tar"
        fi
        if [ -n "$ctx_bytes" ]; then
            say "  kiln cached rebuild under strace (untimed): opened $ctx_opened of $nfiles context files, read $(mb "$ctx_bytes") of context content"
        else
            say "  (no strace: the cached rebuild's context reads are not attributed)"
        fi
        say "  kiln cached rebuild rchar $(mb "$k_cached_rchar") = the archive it wrote ($(mb "$k_cached_size"), copied from the store) + $(mb $((k_cached_rchar - k_cached_size))) of other reads"
    fi

    i=$(((SMALL * 37 / 100 + (round - 1) * 1013) % SMALL))
    changed=$(printf 'src/m%02d/p%d/f%03d.txt' $((i / 1000)) $((i / 100 % 10)) $((i % 100)))
    printf 'one changed line\n' >>"$ctx/$changed"
    say "  -- changed $changed"
    kiln_build "kiln one-file-changed" "$work/kiln-changed.tar" "$logs/kiln-changed.log"
    K_CHANGED+=("$R_WALL")
    buildah_build "buildah one-file-changed" "$work/buildah-changed.tar" "$logs/buildah-changed.log"
    if [ -n "$B_WALL" ]; then B_CHANGED+=("$B_WALL"); fi

    buildah_store_drop
    rm -f "$work"/*.tar
done
rm -rf "$kroot"

# --- the shell pipeline on the context -----------------------------------------------------------

sh_gzip="" sh_pigz=""
if [ "$DO_SHELL" = 1 ]; then
    say ""
    say "== shell pipeline on the context"
    measure "tar | gzip -6 | sha256sum" "$work/shell.log" \
        sh -c 'tar -cf - -C "$1" . | gzip -6 | sha256sum' sh "$ctx"
    if [ "$R_EXIT" = 0 ]; then sh_gzip=$R_WALL; fi
    if command -v pigz >/dev/null; then
        measure "tar | pigz -6 | sha256sum" "$work/shell.log" \
            sh -c 'tar -cf - -C "$1" . | pigz -6 | sha256sum' sh "$ctx"
        if [ "$R_EXIT" = 0 ]; then sh_pigz=$R_WALL; fi
    fi
fi

# --- the layer pipeline alone --------------------------------------------------------------------

layer_speed="" layer_pigz="" layer_kiln="" layer_shell=""
if [ "$DO_LAYER" = 1 ]; then
    say ""
    say "== layer pipeline: cargo bench -p kiln-layer --bench layer"
    (cd "$repo" && KILN_BENCH_LARGE_MB=$LARGE_MB timeout "$STEP_TIMEOUT" \
        cargo bench -q -p kiln-layer --bench layer) 2>&1 | tee "$work/layer.log" | sed 's/^/  /' || true
    layer_speed=$(awk '/kiln\/shell speed/ { sub("x", "", $3); print $3; exit }' "$work/layer.log")
    layer_pigz=$(awk '/kiln\/pigz speed/ { sub("x", "", $3); print $3; exit }' "$work/layer.log")
    layer_kiln=$(awk '/^kiln write_layer \(gzip/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") { print $(i-1); exit } }' "$work/layer.log")
    layer_shell=$(awk '/^tar \| gzip -6/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") { print $(i-1); exit } }' "$work/layer.log")
fi

# --- the table -----------------------------------------------------------------------------------

fails=0
verdict() { # awk-expression: sets V to PASS or FAIL and counts failures
    if awk "BEGIN { exit !($1) }"; then V=PASS; else V=FAIL; fails=$((fails + 1)); fi
}
row() { printf '%-44s %9s %9s %9s  %-10s %s\n' "$@"; }
median() { # prints the median of its arguments, or nothing
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
samples() { # name values...
    local name=$1
    shift
    if (($#)); then
        printf '  %-30s %s  (median %s)\n' "$name" "$(printf '%.2f ' "$@")" "$(secs "$(median "$@")")"
    fi
}
k_cold=$(median "${K_COLD[@]}")
k_cached=$(median "${K_CACHED[@]}")
k_changed=$(median "${K_CHANGED[@]}")
b_cold=$(median "${B_COLD[@]}")
b_warm=$(median "${B_WARM[@]}")
b_changed=$(median "${B_CHANGED[@]}")
# A reference with fewer samples than kiln (buildah failed part-way) is not compared.
[ "${#B_COLD[@]}" = "${#K_COLD[@]}" ] || b_cold=""
[ "${#B_WARM[@]}" = "${#K_CACHED[@]}" ] || b_warm=""
[ "${#B_CHANGED[@]}" = "${#K_CHANGED[@]}" ] || b_changed=""
# Per-round kiln/buildah ratios: the two ran back to back, so a round that the machine made
# slow is slow for both (here whole rounds drift by 2x); the table's ratio is their median.
paired() { # name of kiln array, name of buildah array -> per-round ratios
    local -n k=$1 b=$2
    local n
    for n in "${!k[@]}"; do calc '%.3f\n' "${k[$n]} / ${b[$n]}"; done
}
R_COLD=() R_CACHED=() R_CHANGED=()
[ -n "$b_cold" ] && mapfile -t R_COLD < <(paired K_COLD B_COLD)
[ -n "$b_warm" ] && mapfile -t R_CACHED < <(paired K_CACHED B_WARM)
[ -n "$b_changed" ] && mapfile -t R_CHANGED < <(paired K_CHANGED B_CHANGED)
pratio() { if (($#)); then calc %.3f "$(median "$@")"; else echo -; fi; }
ratio() { [ -n "$2" ] && calc %.3f "$1 / $2" || echo "-"; }
secs() { [ -n "$1" ] && calc %.2f "$1" || echo "-"; }

say ""
say "== samples, seconds, in round order"
samples "kiln cold" "${K_COLD[@]}"
samples "buildah cold (bud + push)" "${B_COLD[@]}"
samples "kiln cached" "${K_CACHED[@]}"
samples "buildah warm (bud + push)" "${B_WARM[@]}"
samples "kiln one-file-changed" "${K_CHANGED[@]}"
samples "buildah one-file-changed" "${B_CHANGED[@]}"
ratios() { # name values...
    local name=$1
    shift
    if (($#)); then printf '  %-30s %s  (median %s)\n' "$name" "$(printf '%.3f ' "$@")" "$(pratio "$@")"; fi
}
ratios "kiln/buildah cold" "${R_COLD[@]}"
ratios "kiln/buildah cached" "${R_CACHED[@]}"
ratios "kiln/buildah one-file-changed" "${R_CHANGED[@]}"
say ""
say "== results ($nfiles files, $(mb "$content"); ref = buildah bud --layers + push oci-archive:)"
row "measurement" "kiln s" "ref s" "kiln/ref" "target" "result"
r=$(pratio "${R_COLD[@]}")
if [ "$r" = - ]; then V="no ref"; else verdict "$r <= 0.5"; fi
row "cold build, archive written" "$(secs "$k_cold")" "$(secs "$b_cold")" "$r" "<= 0.5" "$V"
r=$(pratio "${R_CACHED[@]}")
if [ "$r" = - ]; then V="no ref"; else verdict "$r <= 0.1"; fi
row "cached rebuild, archive written" "$(secs "$k_cached")" "$(secs "$b_warm")" "$r" "<= 0.1" "$V"
r=$(pratio "${R_CHANGED[@]}")
row "one file changed, archive written" "$(secs "$k_changed")" "$(secs "$b_changed")" "$r" "-" "(no target)"
if [ -n "$ctx_bytes" ]; then
    # Re-reading no file content: allow 1% of the content (metadata, the Dockerfile).
    limit=$(calc %.0f "$content / 100")
    verdict "$ctx_bytes <= $limit"
    row "cached rebuild: context read MB / content MB" "$(calc %.1f "$ctx_bytes / 1e6")" \
        "$(calc %.1f "$content / 1e6")" "$(ratio "$ctx_bytes" "$content")" "~0" "$V"
fi
row "cached rebuild: rchar, all reads (MB)" "$(calc %.1f "$k_cached_rchar / 1e6")" "-" "-" "-" \
    "(archive $(calc %.1f "$k_cached_size / 1e6") MB of it)"
row "cached rebuild: read from disk (MB)" "$(calc %.1f "$k_cached_disk / 1e6")" "-" "-" "-" "(page cache warm)"
if [ -n "$sh_gzip" ]; then
    row "cold build vs tar|gzip -6|sha256sum" "$(secs "$k_cold")" "$(secs "$sh_gzip")" \
        "$(ratio "$k_cold" "$sh_gzip")" "-" "(info: whole build)"
fi
if [ -n "$sh_pigz" ]; then
    row "cold build vs tar|pigz -6|sha256sum" "$(secs "$k_cold")" "$(secs "$sh_pigz")" \
        "$(ratio "$k_cold" "$sh_pigz")" "-" "(info: whole build)"
fi
if [ -n "$layer_speed" ]; then
    verdict "$layer_speed >= 1.5"
    row "layer pipeline MB/s vs tar|gzip -6 (speedup)" "${layer_kiln:-?}" "${layer_shell:-?}" \
        "${layer_speed}x" ">= 1.5x" "$V"
    if [ -n "$layer_pigz" ]; then
        row "layer pipeline vs tar|pigz -6 (speedup)" "" "" "${layer_pigz}x" "-" "(info)"
    fi
elif [ "$DO_LAYER" = 1 ]; then
    row "layer pipeline vs tar|gzip -6" "-" "-" "-" ">= 1.5x" "not measured (see above)"
fi
if [ -n "$buildah_note" ]; then say "buildah: $buildah_note"; fi
say "times are medians over $ROUNDS round(s); kiln/ref against buildah is the median of the per-round"
say "ratios; the layer row is ref time / kiln time from one run of the layer bench. $fails target(s) failed"

if [ "$STRICT" = 1 ] && [ "$fails" -gt 0 ]; then
    exit 1
fi
exit 0
