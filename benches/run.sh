#!/usr/bin/env bash
# The RUN benchmark: kiln's RUN steps (sandbox over overlay snapshots, diff, layer) against
# buildah, in one run, on generated recipes.
#
#   bash benches/run.sh            (or `just bench`)
#
# Cases (each kiln build is `kiln --root STORE build --progress json -t NAME -o type=oci,dest=FILE
# CTX`; each buildah build is `buildah bud --layers --pull=never --timestamp $SOURCE_DATE_EPOCH`
# + `buildah push NAME oci-archive:FILE`; SOURCE_DATE_EPOCH is the same for both):
#   1 busybox  base `FROM scratch` / `COPY busybox /bin/busybox` / `RUN busybox --install -s /bin`
#              (busybox-static), built by both tools in their own store, then the 8-RUN recipe
#              FROM it: KILN_BENCH_RUN_FILES files made in a shell loop, every 10th changed,
#              every 10th deleted, a directory recreated (rm -rf + mkdir), hard links, symbolic
#              links, chmod + a directory renamed, a file turned into a directory and back.
#              Cold (fresh kiln root, fresh buildah storage; only the base in it) and cached
#              (the same build again, nothing changed). Targets: cold <= 0.5x, cached <= 0.1x.
#              After round 1 the two images' file trees are compared (untimed): path, type, mode,
#              owner, size, link target and link count.
#   2 debian   the same 8-RUN recipe FROM a Debian base: `debootstrap --variant=minbase bookworm`
#              once, kept as a tar under KILN_BENCH_CACHE, base recipe `FROM scratch` /
#              `ADD rootfs.tar /` (the tar leaves out /dev/*: kiln refuses device files in ADD
#              archives). Prints "skipped: ..." when debootstrap cannot run.
#   3 big      `RUN head -c SIZE /dev/urandom > /big` (KILN_BENCH_BIG_MB, 1024) on the busybox
#              base, cold, both tools; kiln runs under `/usr/bin/time -v`: its peak resident set
#              (target < 100 MB).
#   4 diff     diff cost against root size: bases with KILN_BENCH_DIFF_SMALL_MB (100) and
#              KILN_BENCH_DIFF_LARGE_MB (1024) of 64 KiB random files (COPY of a generated
#              context), then one `RUN echo ... >> one-file` (new text each round, so only that
#              step runs); kiln's time for that step from its --progress json "done" event. The
#              two should be about equal (the snapshotter is kiln's default: $KILN_SNAPSHOTTER,
#              else auto).
#   5 parallel 4 independent CPU-bound stages FROM the busybox base (each `RUN` a shell loop of
#              KILN_BENCH_PAR_ITERS iterations, ~5 s of CPU, writing /n) and a final stage
#              `COPY --from=s1 /n /s1` ... `/s4`. Cold and cached, kiln `build --jobs 4` against
#              `buildah bud --layers --jobs 4`; buildah `--jobs 1` cold once (reference row).
#              Targets: cold no more than BuildKit's span (BuildKit is not measured here: the
#              kiln/buildah ratio, and kiln's cold time against the ideal sum/cores, the sum of
#              the four RUN steps' "done" seconds over min(cores, 4), are printed as
#              information; those are wall times, stretched when 4 steps share fewer cores, so
#              kiln's CPU time over min(cores, 4) is printed too), cached <= 0.1x.
#
# Bases are built, not timed, except the "base build" rows (kiln -t, buildah bud; no archive).
# Every timed command starts after an untimed sync. Rounds alternate kiln and buildah; the
# table shows medians, and kiln/buildah is the median of the per-round ratios.
#
# Knobs (environment):
#   KILN_BENCH_ROUNDS=3          rounds for cases 1, 2, 4 and 5
#   KILN_BENCH_BIG_ROUNDS=1      rounds for case 3
#   KILN_BENCH_RUN_FILES=2000    files the 8-RUN recipe makes (at least 300)
#   KILN_BENCH_BIG_MB=1024       size of case 3's file, MiB
#   KILN_BENCH_DIFF_SMALL_MB=100 KILN_BENCH_DIFF_LARGE_MB=1024 KILN_BENCH_DIFF_FILE_KB=64
#   KILN_BENCH_PAR_ITERS=3000000 loop iterations of each of case 5's RUN steps (busybox ash
#                                does ~600k a second here)
#   KILN_BENCH_CASES="1 2 3 4 5" which cases run
#   KILN_BENCH_CACHE=/var/tmp/kiln-bench   where the Debian rootfs tar is kept between runs
#   KILN_BENCH_DEBIAN_MIRROR=http://deb.debian.org/debian
#   KILN_BENCH_STEP_TIMEOUT=600  seconds allowed to any one timed command
#   KILN_BENCH_BUDGET=1500       seconds; once the run is past it, remaining rounds are skipped
#   KILN_BENCH_BUILDAH=1         0 skips buildah
#   KILN_BENCH_INSTALL=1         0 never runs apt-get (setup only, when we are root and one of
#                                buildah, runc, busybox-static, time, debootstrap is missing)
#   KILN_BENCH_KILN=PATH         use this kiln binary instead of `cargo build --release -p kiln`
#   KILN_BENCH_STRICT=0          1 makes a FAIL against a target exit 1
#   SOURCE_DATE_EPOCH=1700000000 TMPDIR (default /tmp)
#
# Exit status: 0 when everything that was asked for ran (PASS or FAIL is in the table), 1 when a
# kiln step failed or timed out (or with KILN_BENCH_STRICT=1, when a target failed).

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${KILN_BENCH_ROUNDS:-3}
BIG_ROUNDS=${KILN_BENCH_BIG_ROUNDS:-1}
RUN_FILES=${KILN_BENCH_RUN_FILES:-2000}
BIG_MB=${KILN_BENCH_BIG_MB:-1024}
DIFF_SMALL_MB=${KILN_BENCH_DIFF_SMALL_MB:-100}
DIFF_LARGE_MB=${KILN_BENCH_DIFF_LARGE_MB:-1024}
DIFF_FILE_KB=${KILN_BENCH_DIFF_FILE_KB:-64}
PAR_ITERS=${KILN_BENCH_PAR_ITERS:-3000000}
CASES=${KILN_BENCH_CASES:-1 2 3 4 5}
CACHE=${KILN_BENCH_CACHE:-/var/tmp/kiln-bench}
MIRROR=${KILN_BENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-600}
BUDGET=${KILN_BENCH_BUDGET:-1500}
DO_BUILDAH=${KILN_BENCH_BUILDAH:-1}
DO_INSTALL=${KILN_BENCH_INSTALL:-1}
STRICT=${KILN_BENCH_STRICT:-0}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
[ "$RUN_FILES" -ge 300 ] 2>/dev/null || { echo "run bench: KILN_BENCH_RUN_FILES must be >= 300" >&2; exit 1; }
[ "$PAR_ITERS" -ge 1 ] 2>/dev/null || { echo "run bench: KILN_BENCH_PAR_ITERS must be a positive number" >&2; exit 1; }

say() { printf '%s\n' "$*"; }
die() { printf 'run bench: %s\n' "$*" >&2; exit 1; }
has_case() { [[ " $CASES " == *" $1 "* ]]; }

command -v python3 >/dev/null || die "needs python3 (process launcher, context generator)"

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-run-bench.XXXXXX")
broot=$work/buildah
started=$SECONDS

buildah_cmd=()
unmount_under() { # anything buildah's storage left mounted under a directory, innermost first
    if command -v findmnt >/dev/null; then
        { findmnt -rn -o TARGET | grep -F "$1/" | sort -r || true; } | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
    fi
}
cleanup() {
    set +e
    buildkit_stop
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

# Random files for case 4: SIZE MiB of FILE_KB KiB files in 100 directories, from a fixed seed.
cat >"$work/fill.py" <<'PY'
import os, random, sys
root, mib, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0x6B696C6E_72756E)
n = mib * 1024 // kb
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 100))
    if i < 100:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(rng.randbytes(kb * 1024))
print(n)
PY

# The "done" seconds of the step whose instruction starts with $2, from a --progress json log.
cat >"$work/step.py" <<'PY'
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

# The "done" seconds of every step whose instruction starts with $2, from a --progress json log:
# "sum s1 s2 ..." (in the order they finished), or "-".
cat >"$work/steps.py" <<'PY'
import json, sys
prefix, names, times = sys.argv[2], {}, []
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step":
        names[e.get("number")] = e.get("instruction", "")
    elif e.get("event") == "done" and names.get(e.get("number"), "").startswith(prefix):
        times.append(e["seconds"])
print(" ".join(["%.3f" % sum(times)] + ["%.3f" % t for t in times]) if times else "-")
PY

# The built event's "cached of steps", from a --progress json log.
cached_of() {
    python3 - "$1" <<'PY'
import json, sys
out = "?"
for line in open(sys.argv[1], errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "built":
        out = "%s of %s" % (e.get("cached"), e.get("steps"))
print(out)
PY
}

# measure NAME LOG CMD... : runs CMD under the launcher (after an untimed sync); sets R_EXIT
# R_WALL R_CPU R_RSS (KiB).
measure() {
    local name=$1 log=$2
    shift 2
    timeout 300 sync || true
    python3 "$repo/benches/measure.py" "$STEP_TIMEOUT" "$work/result" "$log" "$@"
    read -r R_EXIT R_WALL R_CPU R_RSS _ <"$work/result"
    printf '  %-46s %8.2fs  exit %-3s cpu %6.1fs  maxrss %7s\n' \
        "$name" "$R_WALL" "$R_EXIT" "$R_CPU" "$(calc '%.1f MB' "$R_RSS / 1024")"
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
# Seconds of CPU the whole machine spent busy so far (user, nice, system, irq, softirq): what a
# daemon's containers use is counted too, where wait4 sees only the client.
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz; exit }' /proc/stat; }
mb() { awk -v b="$1" 'BEGIN { if (b < 0) print "?"; else printf "%.1f MB", b / 1e6 }'; }
file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }
median() { # prints the median of its arguments, or nothing
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
over_budget() { (( SECONDS - started > BUDGET )); }

# --- setup: tools ----------------------------------------------------------------------------

say "== run bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
say "work dir $work (removed at exit); SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH; cases: $CASES"

apt_install() { # package... ; returns 1 when it could not
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
[ -x /usr/bin/time ] || apt_install time || say "note: /usr/bin/time missing (apt-get install time); peak memory from wait4 only"

source "$repo/benches/lib.sh"
kiln_binary

buildah_note="" buildah_on=0 buildah_iso="" buildah_driver=""
if [ "$DO_BUILDAH" = 1 ]; then
    if ! command -v buildah >/dev/null || ! command -v runc >/dev/null; then
        apt_install buildah runc || buildah_note="buildah/runc not installed and not installable here"
    fi
fi
if [ "$DO_BUILDAH" = 1 ] && [ -z "$buildah_note" ]; then
    mkdir -p "$broot/probe"
    # crun does not work on this kind of machine; runc with cgroupfs does. No network, and
    # ulimits that runc can set here.
    cat >"$broot/containers.conf" <<'EOF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
EOF
    export CONTAINERS_CONF=$broot/containers.conf
    printf '[storage]\ndriver = "overlay"\n' >"$broot/storage.conf"
    export CONTAINERS_STORAGE_CONF=$broot/storage.conf
    cp "$busybox_bin" "$broot/probe/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "sh", "-c", "echo ok > /probe"]\n' \
        >"$broot/probe/Dockerfile"
    # Find an isolation and a storage driver that work here: oci then chroot, overlay then vfs.
    for iso in oci chroot; do
        for driver in overlay vfs; do
            cmd=(buildah --root "$broot/probe-s/root" --runroot "$broot/probe-s/run" --storage-driver "$driver")
            if timeout 120 "${cmd[@]}" bud --isolation "$iso" --pull=never --layers -t probe \
                "$broot/probe" >"$broot/probe.log" 2>&1 &&
                timeout 120 "${cmd[@]}" push probe "oci-archive:$broot/probe.tar" >>"$broot/probe.log" 2>&1; then
                buildah_iso=$iso buildah_driver=$driver
            else
                buildah_note="${buildah_note:+$buildah_note; }$iso/$driver: $(tail -n 1 "$broot/probe.log")"
            fi
            timeout 120 "${cmd[@]}" rmi -a -f >/dev/null 2>&1 || true
            unmount_under "$broot/probe-s"
            rm -rf "$broot/probe-s" "$broot/probe.tar"
            [ -z "$buildah_driver" ] || break 2
        done
    done
    if [ -n "$buildah_driver" ]; then
        buildah_note="" buildah_on=1
        say "buildah: $(buildah --version), --isolation $buildah_iso, --storage-driver $buildah_driver, runtime runc (own store under $broot)"
    fi
fi
if [ "$DO_BUILDAH" = 1 ] && [ "$buildah_on" = 0 ]; then say "buildah: NOT MEASURED: $buildah_note"; fi

# --- builds ----------------------------------------------------------------------------------

kstore=$work/kiln-root
kiln_fresh() { rm -rf "$kstore"; }
kiln_build() { # label log ctx tag archive|- [extra build args...]; sets K_WALL K_RSS
    local label=$1 log=$2 ctx=$3 tag=$4 out=$5
    shift 5
    local o=()
    if [ "$out" != - ]; then rm -f "$out"; o=(-o "type=oci,dest=$out"); fi
    measure "$label" "$log" "$kiln" --root "$kstore" build --progress json -t "$tag" "${o[@]}" "$@" "$ctx"
    if [ "$R_EXIT" != 0 ]; then
        say "  kiln FAILED ($label, exit $R_EXIT); the end of its output:"
        tail -n 15 "$log" | sed 's/^/    | /'
        kiln_failed="$label: $(grep -m1 '"event":"error"\|^error' "$log" | cut -c1-300)"
        return 1
    fi
    K_WALL=$R_WALL K_RSS=$R_RSS
}
buildah_fresh() {
    buildah_drop
    [ "$buildah_on" = 1 ] || return 0
    buildah_cmd=(buildah --root "$broot/store/root" --runroot "$broot/store/run" --storage-driver "$buildah_driver")
}
buildah_drop() {
    ((${#buildah_cmd[@]})) || return 0
    timeout 120 "${buildah_cmd[@]}" rm -a >/dev/null 2>&1 || true
    timeout 120 "${buildah_cmd[@]}" rmi -a -f >/dev/null 2>&1 || true
    unmount_under "$broot/store"
    rm -rf "$broot/store"
    buildah_cmd=()
}
buildah_build() { # label log ctx tag archive|- [extra bud args...]; sets B_WALL (bud + push), "" on failure
    local label=$1 log=$2 ctx=$3 tag=$4 out=$5
    shift 5
    B_WALL=""
    [ "$buildah_on" = 1 ] || return 0
    measure "$label: bud" "$log" "${buildah_cmd[@]}" bud --isolation "$buildah_iso" --pull=never \
        --layers --timestamp "$SOURCE_DATE_EPOCH" -t "$tag" "$@" "$ctx"
    local ok=$R_EXIT bud=$R_WALL
    R_EXIT=0 R_WALL=0
    if [ "$ok" = 0 ] && [ "$out" != - ]; then
        rm -f "$out"
        measure "$label: push oci-archive:" "$log" "${buildah_cmd[@]}" push "$tag" "oci-archive:$out"
    fi
    if [ "$ok" = 0 ] && [ "$R_EXIT" = 0 ]; then
        B_WALL=$(calc %.3f "$bud + $R_WALL")
    else
        buildah_note="buildah failed in \"$label\" (exit $ok/$R_EXIT): $(tail -n 1 "$log")"
        buildah_on=0
        say "  $buildah_note"
    fi
}

# BuildKit, the fastest peer: Debian's docker.io (dockerd 20.10 with its BuildKit), started
# here on a socket and data root of its own (`--bridge=none --iptables=false`), stopped at exit.
buildkit_on=0 buildkit_note="" dockerd_pid=""
docker_cmd=()
buildkit_start() {
    local dockerd=/usr/sbin/dockerd docker=/usr/bin/docker
    if [ ! -x "$dockerd" ] || [ ! -x "$docker" ]; then
        apt_install docker.io || { buildkit_note="docker.io not installed and not installable here"; return 0; }
    fi
    [ "$(id -u)" = 0 ] || { buildkit_note="dockerd needs root"; return 0; }
    mkdir -p "$work/dockerd"
    "$dockerd" --data-root "$work/dockerd/root" --exec-root "$work/dockerd/exec" \
        --pidfile "$work/dockerd/pid" -H "unix://$work/dockerd/sock" \
        --containerd-namespace kiln-bench --containerd-plugins-namespace kiln-bench-plugins \
        --bridge=none --iptables=false --ip-masq=false >"$work/dockerd/log" 2>&1 &
    dockerd_pid=$!
    docker_cmd=("$docker" -H "unix://$work/dockerd/sock")
    local i
    for i in $(seq 1 60); do
        if timeout 5 "${docker_cmd[@]}" info >/dev/null 2>&1; then
            buildkit_on=1
            say "  BuildKit: $("${docker_cmd[@]}" version --format '{{.Server.Version}}' 2>/dev/null) (dockerd on $work/dockerd/sock)"
            return 0
        fi
        sleep 0.5
    done
    buildkit_note="dockerd did not come up: $(tail -n 2 "$work/dockerd/log" | tr '\n' ' ')"
    buildkit_stop
}
buildkit_stop() {
    [ -n "$dockerd_pid" ] || return 0
    kill "$dockerd_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid="" buildkit_on=0
    unmount_under "$work/dockerd"
}
# label log ctx tag archive [extra build args...]; sets D_WALL (build + docker save), "" on failure
buildkit_build() {
    local label=$1 log=$2 ctx=$3 tag=$4 out=$5
    shift 5
    D_WALL=""
    [ "$buildkit_on" = 1 ] || return 0
    DOCKER_BUILDKIT=1 measure "$label: build" "$log" "${docker_cmd[@]}" build --network none -q -t "$tag" "$@" "$ctx"
    local ok=$R_EXIT build=$R_WALL
    if [ "$ok" = 0 ]; then
        rm -f "$out"
        measure "$label: save" "$log" "${docker_cmd[@]}" save -o "$out" "$tag"
    fi
    if [ "$ok" = 0 ] && [ "$R_EXIT" = 0 ]; then
        D_WALL=$(calc %.3f "$build + $R_WALL")
    else
        buildkit_note="BuildKit failed in \"$label\" (exit $ok/$R_EXIT): $(tail -n 1 "$log")"
        buildkit_on=0
        say "  $buildkit_note"
    fi
}

# File trees of kiln's image and buildah's, untimed: path|type|mode|uid|gid|size|target|links
# (directories: no size, no link count; buildah's own /etc/hostname, hosts, resolv.conf and /run
# left out).
tree_list() {
    (cd "$1" && find . \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -printf '%p|%y|%m|%U|%G|%s|%l|%n\n') |
        grep -v -E '^\.\||^\./(etc/(hostname|hosts|resolv\.conf)|run|etc)\|' |
        awk -F'|' -v OFS='|' '$2 == "d" { $6 = ""; $8 = "" } { print }' | LC_ALL=C sort
}
tree_check() { # case kiln-tag buildah-tag ctx [build args]; prints what differs
    local case=$1 ktag=$2 btag=$3 ctx=$4
    shift 4
    [ "$buildah_on" = 1 ] || return 0
    rm -rf "$work/tree-k"
    if ! timeout "$STEP_TIMEOUT" "$kiln" --root "$kstore" build --progress quiet -t "$ktag" \
        -o "type=local,dest=$work/tree-k" "$@" "$ctx" >/dev/null 2>"$work/tree.log"; then
        say "  tree check: kiln -o type=local failed: $(tail -n 1 "$work/tree.log")"
        return 0
    fi
    local c m
    c=$(timeout 120 "${buildah_cmd[@]}" from --pull=never "$btag" 2>>"$work/tree.log") &&
        m=$(timeout 120 "${buildah_cmd[@]}" mount "$c" 2>>"$work/tree.log") ||
        { say "  tree check: buildah from/mount failed: $(tail -n 1 "$work/tree.log")"; return 0; }
    tree_list "$m" >"$work/tree-b.txt"
    tree_list "$work/tree-k" >"$work/tree-k.txt"
    timeout 120 "${buildah_cmd[@]}" umount "$c" >/dev/null 2>&1 || true
    timeout 120 "${buildah_cmd[@]}" rm "$c" >/dev/null 2>&1 || true
    rm -rf "$work/tree-k"
    local nk nb nd hl=""
    nk=$(wc -l <"$work/tree-k.txt") nb=$(wc -l <"$work/tree-b.txt")
    nd=$(diff "$work/tree-b.txt" "$work/tree-k.txt" | grep -c '^[<>]' || true)
    if [ "$nd" = 0 ]; then
        say "  tree check: kiln's and buildah's images have the same $nk entries (type, mode, owner, size, link target, link count)"
    else
        say "  tree check: $nd differing lines between buildah's $nb entries and kiln's $nk (path|type|mode|uid|gid|size|target|links), first:"
        diff "$work/tree-b.txt" "$work/tree-k.txt" | grep '^[<>]' | head -n 6 | sed 's/^</    buildah/; s/^>/    kiln   /'
        hl=$(diff "$work/tree-b.txt" "$work/tree-k.txt" | grep '^<' | grep -c '|f|.*|[2-9]$' || true)
        if [ "$hl" = 0 ]; then hl=""; else say "    ($hl files are hard-linked (link count > 1) in buildah's image but not in kiln's)"; fi
        tree_diffs="${tree_diffs:+$tree_diffs; }$case: $nd lines${hl:+ ($hl hard links lost)}"
    fi
}

# --- contexts --------------------------------------------------------------------------------

mkdir -p "$work/ctx/base" "$work/ctx/runs" "$work/ctx/big" "$work/logs"
cp "$busybox_bin" "$work/ctx/base/busybox"
cat >"$work/ctx/base/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
EOF
# The 8-RUN recipe; POSIX sh, so the same on busybox ash and Debian's dash.
cat >"$work/ctx/runs/Dockerfile" <<EOF
ARG BASE=bbase
FROM \${BASE}
ARG N=$RUN_FILES
# 1. N files of 1-3 KiB of text in N/100 directories
RUN mkdir -p /data && cd /data && i=0 && while [ \$i -lt \$N ]; do d=d\$((i / 100)); [ -d \$d ] || mkdir \$d; j=0; s=""; while [ \$j -lt \$((16 + i % 48)) ]; do s="\$s line \$i.\$j of the run bench -------------------------"; j=\$((j + 1)); done; echo "\$s" > \$d/f\$i; i=\$((i + 1)); done
# 2. change every 10th file
RUN cd /data && i=0 && while [ \$i -lt \$N ]; do echo changed >> d\$((i / 100))/f\$i; i=\$((i + 10)); done
# 3. delete every 10th file (others)
RUN cd /data && i=5 && while [ \$i -lt \$N ]; do rm d\$((i / 100))/f\$i; i=\$((i + 10)); done
# 4. recreate a directory: rm -rf + mkdir, new files in it
RUN cd /data && rm -rf d1 && mkdir d1 && i=0 && while [ \$i -lt 50 ]; do echo new \$i > d1/g\$i; i=\$((i + 1)); done
# 5. hard links: to files of earlier layers, and a pair made in this step
RUN mkdir -p /links/hard && cd /data && i=2 && while [ \$i -lt \$N ]; do [ -f d\$((i / 100))/f\$i ] && ln d\$((i / 100))/f\$i /links/hard/h\$i; i=\$((i + 20)); done && echo pair > /links/hard/pair-a && ln /links/hard/pair-a /links/hard/pair-b
# 6. symbolic links, to files and to a directory
RUN mkdir -p /links/sym && cd /links/sym && i=3 && while [ \$i -lt \$N ]; do ln -s /data/d\$((i / 100))/f\$i s\$i; i=\$((i + 20)); done && ln -s ../../data dataroot
# 7. chmod, a hard-linked file changed, the last directory renamed
RUN cd /data && chmod 600 d0/f1 d0/f3 && echo more >> d0/f22 && mv d\$((N / 100 - 1)) moved
# 8. a file replaced by a directory, a directory by a file
RUN cd /data && rm d0/f21 && mkdir d0/f21 && echo x > d0/f21/inner && rm -rf d\$((N / 100 - 2)) && echo was-a-dir > d\$((N / 100 - 2))
EOF
# Case 5: four independent CPU-bound stages and a final stage that takes one file from each. The
# stage name is in each RUN (distinct cache keys: no stage is a cache hit on another).
mkdir -p "$work/ctx/par"
{
    for s in 1 2 3 4; do
        printf 'FROM bbase AS s%s\n' "$s"
        printf 'RUN i=0; while [ $i -lt %s ]; do i=$((i+1)); done; echo "s%s $i" > /n\n' "$PAR_ITERS" "$s"
    done
    printf 'FROM bbase\n'
    for s in 1 2 3 4; do printf 'COPY --from=s%s /n /s%s\n' "$s" "$s"; done
} >"$work/ctx/par/Dockerfile"
cat >"$work/ctx/big/Dockerfile" <<EOF
FROM bbase
RUN head -c $((BIG_MB * 1048576)) /dev/urandom > /big
EOF

fails=0 kiln_failed="" tree_diffs=""
ROWS=()
row() { printf '%-46s %9s %9s %9s  %-8s %s\n' "$@"; }
verdict() { # awk-expression: sets V to PASS or FAIL and counts failures
    if awk "BEGIN { exit !($1) }"; then V=PASS; else V=FAIL; fails=$((fails + 1)); fi
}
secs() { [ -n "${1:-}" ] && calc %.2f "$1" || echo "-"; }
pratios() { # "k1 k2 ..." "b1 b2 ..." -> median of per-round ratios, or -
    local -a k=($1) b=($2) r=()
    ((${#k[@]})) && [ "${#k[@]}" = "${#b[@]}" ] || { echo -; return; }
    local n
    for n in "${!k[@]}"; do r+=("$(calc %.4f "${k[$n]} / ${b[$n]}")"); done
    calc %.3f "$(median "${r[@]}")"
}
# add_row label "kiln samples" "buildah samples" target-expression target-text
add_row() {
    local label=$1 ks=$2 bs=$3 expr=$4 ttext=$5 r V="-"
    r=$(pratios "$ks" "$bs")
    if [ -n "$expr" ]; then
        if [ "$r" = - ]; then V="no ref"; else verdict "$r $expr"; fi
    fi
    [ -n "$bs" ] || bs=""
    ROWS+=("$(row "$label" "$(secs "$(median $ks)")" "$(secs "$(median $bs)")" "$r" "$ttext" "$V")")
    SAMPLES+=("$(printf '  %-40s kiln %s| buildah %s' "$label" "$(printf '%.2f ' $ks)" "$( [ -n "$bs" ] && printf '%.2f ' $bs)")")
}
SAMPLES=()

# The 8-RUN recipe over a base: rounds of (fresh stores, base build, cold, cached).
run_recipe_case() { # name base-ctx base-tag
    local name=$1 bctx=$2 btag=$3
    local KB=() BB=() KC=() BC=() KW=() BW=() round
    for round in $(seq 1 "$ROUNDS"); do
        if over_budget; then say "  (over KILN_BENCH_BUDGET=${BUDGET}s: rounds $round.. skipped)"; break; fi
        say "-- $name, round $round of $ROUNDS"
        local logs=$work/logs/$name-$round
        mkdir -p "$logs"
        kiln_fresh
        buildah_fresh
        kiln_build "kiln base build" "$logs/k-base.log" "$bctx" "$btag" - || return 1
        KB+=("$K_WALL")
        buildah_build "buildah base build" "$logs/b-base.log" "$bctx" "$btag" -
        [ -z "$B_WALL" ] || BB+=("$B_WALL")
        kiln_build "kiln 8 RUN, cold" "$logs/k-cold.log" "$work/ctx/runs" runs "$work/k.tar" \
            --build-arg "BASE=$btag" || return 1
        KC+=("$K_WALL")
        buildah_build "buildah 8 RUN, cold" "$logs/b-cold.log" "$work/ctx/runs" runs "$work/b.tar" \
            --build-arg "BASE=$btag"
        [ -z "$B_WALL" ] || BC+=("$B_WALL")
        local kcold_size bcold_size
        kcold_size=$(file_size "$work/k.tar") bcold_size=$(file_size "$work/b.tar")
        kiln_build "kiln 8 RUN, cached" "$logs/k-cached.log" "$work/ctx/runs" runs "$work/k2.tar" \
            --build-arg "BASE=$btag" || return 1
        KW+=("$K_WALL")
        say "    kiln cached steps: $(cached_of "$logs/k-cached.log")"
        buildah_build "buildah 8 RUN, cached" "$logs/b-cached.log" "$work/ctx/runs" runs "$work/b2.tar" \
            --build-arg "BASE=$btag"
        if [ -n "$B_WALL" ]; then
            BW+=("$B_WALL")
            say "    buildah cache hits: $(grep -c 'Using cache' "$logs/b-cached.log" || true)"
        fi
        if [ "$round" = 1 ]; then
            cmp -s "$work/k.tar" "$work/k2.tar" && same="identical to" || same="DIFFERENT from"
            say "    archives: kiln $(mb "$kcold_size") (cached one $same the cold one), buildah $(mb "$bcold_size")"
            tree_check "$name" runs runs "$work/ctx/runs" --build-arg "BASE=$btag"
        fi
        rm -f "$work"/*.tar
    done
    kiln_fresh
    buildah_drop
    add_row "$name: base build (in store, no archive)" "${KB[*]}" "${BB[*]}" "" "-"
    add_row "$name: 8 RUN cold, archive written" "${KC[*]}" "${BC[*]}" "<= 0.5" "<= 0.5"
    add_row "$name: 8 RUN cached, archive written" "${KW[*]}" "${BW[*]}" "<= 0.1" "<= 0.1"
}

# --- case 1: busybox -------------------------------------------------------------------------

if has_case 1; then
    say ""
    say "== case 1: busybox base + 8 RUN ($RUN_FILES files)"
    run_recipe_case busybox "$work/ctx/base" bbase || true
fi

# --- case 2: debian --------------------------------------------------------------------------

if has_case 2; then
    say ""
    say "== case 2: Debian bookworm minbase + 8 RUN ($RUN_FILES files)"
    rootfs=$CACHE/bookworm-minbase.tar
    skip=""
    if [ ! -s "$rootfs" ]; then
        if ! command -v debootstrap >/dev/null; then
            apt_install debootstrap || skip="debootstrap is not installed (apt-get install debootstrap)"
        fi
        if [ -z "$skip" ] && [ "$(id -u)" != 0 ]; then skip="debootstrap needs root"; fi
        if [ -z "$skip" ]; then
            mkdir -p "$CACHE"
            tmp=$CACHE/rootfs.tmp.$$
            rm -rf "$tmp"
            say "  debootstrap --variant=minbase bookworm (once; kept as $rootfs)..."
            if timeout 1200 debootstrap --variant=minbase bookworm "$tmp" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
                # /dev/* left out: kiln refuses device files in ADD archives (and images carry none).
                tar --numeric-owner --exclude='./dev/*' -C "$tmp" -cf "$rootfs.part" . && mv "$rootfs.part" "$rootfs"
            else
                skip="debootstrap failed: $(tail -n 1 "$work/debootstrap.log")"
            fi
            rm -rf "$tmp" "$rootfs.part"
        fi
    fi
    if [ -n "$skip" ]; then
        say "skipped: $skip"
        ROWS+=("$(row "debian: skipped" "-" "-" "-" "-" "$skip")")
    else
        mkdir -p "$work/ctx/deb"
        ln "$rootfs" "$work/ctx/deb/rootfs.tar" 2>/dev/null || cp "$rootfs" "$work/ctx/deb/rootfs.tar"
        printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' >"$work/ctx/deb/Dockerfile"
        say "  base: $rootfs ($(mb "$(file_size "$rootfs")"))"
        run_recipe_case debian "$work/ctx/deb" debbase || true
    fi
fi

# --- case 3: one RUN writing BIG_MB of random data --------------------------------------------

if has_case 3 && ! over_budget; then
    say ""
    say "== case 3: RUN head -c ${BIG_MB}MiB /dev/urandom > /big, on the busybox base"
    KG=() BG=() KS=() rss_time="" rss_wait=""
    for round in $(seq 1 "$BIG_ROUNDS"); do
        if over_budget; then say "  (over budget: rounds $round.. skipped)"; break; fi
        logs=$work/logs/big-$round
        mkdir -p "$logs"
        kiln_fresh
        buildah_fresh
        kiln_build "kiln base build (untimed setup)" "$logs/k-base.log" "$work/ctx/base" bbase - || break
        buildah_build "buildah base build (untimed setup)" "$logs/b-base.log" "$work/ctx/base" bbase -
        timed=()
        [ -x /usr/bin/time ] && timed=(/usr/bin/time -v -o "$logs/time.txt")
        rm -f "$work/k.tar"
        measure "kiln RUN ${BIG_MB}MiB, cold" "$logs/k-big.log" "${timed[@]}" "$kiln" --root "$kstore" \
            build --progress json -t big -o "type=oci,dest=$work/k.tar" "$work/ctx/big"
        if [ "$R_EXIT" != 0 ]; then
            say "  kiln FAILED (big, exit $R_EXIT):"; tail -n 15 "$logs/k-big.log" | sed 's/^/    | /'
            kiln_failed="${kiln_failed:+$kiln_failed; }big: $(grep -m1 '"event":"error"\|^error' "$logs/k-big.log" | cut -c1-300)"
            break
        fi
        KG+=("$R_WALL")
        rss_wait=$R_RSS
        if [ -f "$logs/time.txt" ]; then
            rss_time=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$logs/time.txt")
        fi
        KS+=("$(python3 "$work/step.py" "$logs/k-big.log" "RUN head")")
        say "    kiln: RUN step ${KS[-1]}s of it (run + diff + layer); peak RSS ${rss_time:-?} KiB (time -v)"
        rm -f "$work/k.tar"
        buildah_build "buildah RUN ${BIG_MB}MiB, cold" "$logs/b-big.log" "$work/ctx/big" big "$work/b.tar"
        [ -z "$B_WALL" ] || BG+=("$B_WALL")
        rm -f "$work"/*.tar
    done
    kiln_fresh
    buildah_drop
    add_row "big: RUN ${BIG_MB}MiB urandom cold, archive" "${KG[*]}" "${BG[*]}" "" "-"
    if ((${#KS[@]})); then
        ROWS+=("$(row "big: kiln's RUN step alone (json done)" "$(secs "$(median "${KS[@]}")")" "-" "-" "-" "(info)")")
    fi
    if [ -n "$rss_time$rss_wait" ]; then
        peak=${rss_time:-$rss_wait}
        verdict "$peak / 1024 < 100"
        ROWS+=("$(row "big: kiln peak RSS, MB (time -v)" "$(calc %.1f "$peak / 1024")" "-" "-" "< 100" "$V")")
    fi
fi

# --- case 4: diff cost against root size -----------------------------------------------------

if has_case 4 && ! over_budget; then
    say ""
    say "== case 4: one RUN changing one file, on ${DIFF_SMALL_MB} MiB and ${DIFF_LARGE_MB} MiB bases of ${DIFF_FILE_KB} KiB files (snapshotter ${KILN_SNAPSHOTTER:-auto})"
    declare -A DSTEP=() DWALL=()
    for size in "$DIFF_SMALL_MB" "$DIFF_LARGE_MB"; do
        if over_budget; then say "  (over budget: the ${size} MiB base skipped)"; continue; fi
        fctx=$work/ctx/fill-$size
        mkdir -p "$fctx"
        t0=$SECONDS
        nf=$(python3 "$work/fill.py" "$fctx/fill" "$size" "$DIFF_FILE_KB")
        printf 'FROM bbase\nCOPY fill /fill\n' >"$fctx/Dockerfile"
        mkdir -p "$work/ctx/step-$size"
        logs=$work/logs/diff-$size
        mkdir -p "$logs"
        kiln_fresh
        kiln_build "kiln busybox base (setup)" "$logs/k-base.log" "$work/ctx/base" bbase - || break
        kiln_build "kiln ${size} MiB base: COPY $nf files (setup)" "$logs/k-fill.log" "$fctx" "fill$size" - || break
        rm -rf "$fctx"   # the base is in the store now
        say "    base made in $((SECONDS - t0))s"
        ST=() WT=()
        for round in $(seq 1 "$ROUNDS"); do
            printf 'FROM fill%s\nRUN echo "round %s" >> /fill/d00/f00000\n' "$size" "$round" \
                >"$work/ctx/step-$size/Dockerfile"
            kiln_build "kiln one-file RUN on ${size} MiB, round $round" "$logs/k-step-$round.log" \
                "$work/ctx/step-$size" "step$size" "$work/k.tar" || break 2
            WT+=("$K_WALL")
            ST+=("$(python3 "$work/step.py" "$logs/k-step-$round.log" "RUN echo")")
            say "    RUN step: ${ST[-1]}s (cached steps: $(cached_of "$logs/k-step-$round.log"))"
            rm -f "$work/k.tar"
        done
        DSTEP[$size]=$(median "${ST[@]}")
        DWALL[$size]=$(median "${WT[@]}")
        SAMPLES+=("$(printf '  %-40s kiln RUN step %s| whole build %s' "diff: ${size} MiB base" "$(printf '%.3f ' "${ST[@]}")" "$(printf '%.2f ' "${WT[@]}")")")
    done
    kiln_fresh
    for size in "$DIFF_SMALL_MB" "$DIFF_LARGE_MB"; do
        [ -n "${DSTEP[$size]:-}" ] || continue
        ROWS+=("$(row "diff: one-file RUN step, ${size} MiB base" "$(calc %.3f "${DSTEP[$size]}")" "-" "-" "-" "(whole build $(secs "${DWALL[$size]}")s, archive)")")
    done
    if [ -n "${DSTEP[$DIFF_SMALL_MB]:-}" ] && [ -n "${DSTEP[$DIFF_LARGE_MB]:-}" ]; then
        r=$(calc %.2f "${DSTEP[$DIFF_LARGE_MB]} / ${DSTEP[$DIFF_SMALL_MB]}")
        # "about equal": the large-root step within 1.5x (+ 50 ms) of the small-root one.
        verdict "${DSTEP[$DIFF_LARGE_MB]} <= 1.5 * ${DSTEP[$DIFF_SMALL_MB]} + 0.05"
        ROWS+=("$(row "diff: step on ${DIFF_LARGE_MB} / on ${DIFF_SMALL_MB} MiB" "" "" "${r}x" "~1x" "$V")")
    fi
fi

# --- case 5: four independent CPU-bound stages ----------------------------------------------

if has_case 5 && ! over_budget; then
    say ""
    say "== case 5: 4 independent stages (RUN loop of $PAR_ITERS iterations each) + COPY --from each, --jobs 4"
    par_cores=$(nproc)
    ((par_cores > 4)) && par_cores=4
    PK=() PB=() PKW=() PBW=() PSUM=() PIDEAL=() PCPU=() PD=() PDW=() PKB=() PDB=() pser="" par_ok=1
    buildkit_start
    for round in $(seq 1 "$ROUNDS"); do
        if over_budget; then say "  (over KILN_BENCH_BUDGET=${BUDGET}s: rounds $round.. skipped)"; break; fi
        say "-- parallel, round $round of $ROUNDS"
        logs=$work/logs/par-$round
        mkdir -p "$logs"
        kiln_fresh
        buildah_fresh
        kiln_build "kiln base build (untimed setup)" "$logs/k-base.log" "$work/ctx/base" bbase - || { par_ok=0; break; }
        buildah_build "buildah base build (untimed setup)" "$logs/b-base.log" "$work/ctx/base" bbase -
        if [ "$buildkit_on" = 1 ]; then
            # BuildKit starts from kiln's base, loaded as a docker archive, with no build cache.
            timeout 120 "${docker_cmd[@]}" builder prune -af >/dev/null 2>&1 || true
            timeout 120 "${docker_cmd[@]}" rmi -f par >/dev/null 2>&1 || true
            "$kiln" --root "$kstore" save --format docker -o "$work/bbase-docker.tar" bbase >/dev/null 2>&1 &&
                timeout 120 "${docker_cmd[@]}" load -i "$work/bbase-docker.tar" >/dev/null 2>&1 ||
                { buildkit_note="docker load of the base failed"; buildkit_stop; }
        fi
        b0=$(busy_cpu)
        kiln_build "kiln 4 stages, cold, --jobs 4" "$logs/k-cold.log" "$work/ctx/par" par "$work/k.tar" \
            --jobs 4 || { par_ok=0; break; }
        PK+=("$K_WALL")
        PKB+=("$(calc %.3f "$K_WALL / (($(busy_cpu) - $b0) / $(nproc))")")
        PCPU+=("$(calc %.3f "$R_CPU / $par_cores")")
        # BuildKit right after kiln, so the two see the machine as alike as it gets.
        b0=$(busy_cpu)
        buildkit_build "BuildKit 4 stages, cold" "$logs/d-cold.log" "$work/ctx/par" par "$work/d.tar"
        if [ -n "$D_WALL" ]; then
            PD+=("$D_WALL")
            PDB+=("$(calc %.3f "$D_WALL / (($(busy_cpu) - $b0) / $(nproc))")")
        fi
        read -r psum pstages <<<"$(python3 "$work/steps.py" "$logs/k-cold.log" "RUN ")"
        if [ "$psum" != - ]; then
            PSUM+=("$psum")
            PIDEAL+=("$(calc %.3f "$psum / $par_cores")")
            say "    kiln RUN steps: ${pstages// /s, }s; sum ${psum}s, ideal sum/$par_cores ${PIDEAL[-1]}s"
        fi
        buildah_build "buildah 4 stages, cold, --jobs 4" "$logs/b-cold.log" "$work/ctx/par" par "$work/b.tar" \
            --jobs 4
        [ -z "$B_WALL" ] || PB+=("$B_WALL")
        kiln_build "kiln 4 stages, cached, --jobs 4" "$logs/k-cached.log" "$work/ctx/par" par "$work/k2.tar" \
            --jobs 4 || { par_ok=0; break; }
        PKW+=("$K_WALL")
        say "    kiln cached steps: $(cached_of "$logs/k-cached.log")"
        buildah_build "buildah 4 stages, cached, --jobs 4" "$logs/b-cached.log" "$work/ctx/par" par "$work/b2.tar" \
            --jobs 4
        if [ -n "$B_WALL" ]; then
            PBW+=("$B_WALL")
            say "    buildah cache hits: $(grep -c 'Using cache' "$logs/b-cached.log" || true)"
        fi
        buildkit_build "BuildKit 4 stages, cached" "$logs/d-cached.log" "$work/ctx/par" par "$work/d2.tar"
        [ -z "$D_WALL" ] || PDW+=("$D_WALL")
        if [ "$round" = 1 ]; then
            cmp -s "$work/k.tar" "$work/k2.tar" && same="identical to" || same="DIFFERENT from"
            say "    archives: kiln $(mb "$(file_size "$work/k.tar")") (cached one $same the cold one), buildah $(mb "$(file_size "$work/b.tar")")"
        fi
        rm -f "$work"/*.tar
    done
    # The serial reference, once: buildah --jobs 1 from a fresh store (only the base in it).
    if [ "$par_ok" = 1 ] && [ "$buildah_on" = 1 ] && ! over_budget; then
        say "-- parallel, buildah serial reference"
        logs=$work/logs/par-serial
        mkdir -p "$logs"
        buildah_fresh
        buildah_build "buildah base build (untimed setup)" "$logs/b-base.log" "$work/ctx/base" bbase -
        buildah_build "buildah 4 stages, cold, --jobs 1" "$logs/b-serial.log" "$work/ctx/par" par "$work/b.tar" \
            --jobs 1
        pser=$B_WALL
        rm -f "$work"/*.tar
    fi
    kiln_fresh
    buildah_drop
    buildkit_stop
    add_row "par: 4 stages cold, --jobs 4, archive" "${PK[*]}" "${PB[*]}" "" "-"
    add_row "par: 4 stages cached, --jobs 4, archive" "${PKW[*]}" "${PBW[*]}" "<= 0.1" "<= 0.1"
    # The same rows against BuildKit (build + docker save); kiln's target: no more than its span.
    if ((${#PD[@]})) && [ "${#PD[@]}" = "${#PK[@]}" ]; then
        add_row "par: 4 stages cold vs BuildKit" "${PK[*]}" "${PD[*]}" "<= 1.0" "<= 1.0"
        SAMPLES[-1]="${SAMPLES[-1]/buildah/BuildKit}"
    else
        ROWS+=("$(row "par: 4 stages cold vs BuildKit" "-" "-" "-" "<= 1.0" "(no BuildKit: ${buildkit_note:-not run})")")
    fi
    # This machine's speed drifts from minute to minute (the same loop: 5.8 s, then 8.6 s), and
    # that moves the raw ratio more than either builder does. Span over (the machine's busy CPU
    # seconds / cores) is 1.0 for a builder that keeps every core busy with the work and
    # nothing else, whatever the speed: the ratio of the two is the speed-free comparison.
    if ((${#PDB[@]})) && [ "${#PDB[@]}" = "${#PKB[@]}" ]; then
        add_row "par: span / (busy CPU / cores), vs BuildKit" "${PKB[*]}" "${PDB[*]}" "<= 1.0" "<= 1.0"
        SAMPLES[-1]="${SAMPLES[-1]/buildah/BuildKit}"
    fi
    if ((${#PDW[@]})) && [ "${#PDW[@]}" = "${#PKW[@]}" ]; then
        add_row "par: 4 stages cached vs BuildKit" "${PKW[*]}" "${PDW[*]}" "" "-"
        SAMPLES[-1]="${SAMPLES[-1]/buildah/BuildKit}"
    fi
    if [ -n "$pser" ] && ((${#PK[@]})); then
        ROWS+=("$(row "par: kiln cold --jobs 4 vs buildah --jobs 1" "$(secs "$(median "${PK[@]}")")" "$(secs "$pser")" "$(calc %.3f "$(median "${PK[@]}") / $pser")" "-" "(info: buildah serial, once)")")
        SAMPLES+=("$(printf '  %-40s buildah %.2f' "par: buildah cold --jobs 1" "$pser")")
    fi
    if ((${#PIDEAL[@]})) && [ "${#PIDEAL[@]}" = "${#PK[@]}" ]; then
        ROWS+=("$(row "par: kiln cold vs ideal RUN sum/$par_cores" "$(secs "$(median "${PK[@]}")")" "$(secs "$(median "${PIDEAL[@]}")")" "$(pratios "${PK[*]}" "${PIDEAL[*]}")" "-" "(info: RUN sum $(secs "$(median "${PSUM[@]}")")s, json done)")")
        SAMPLES+=("$(printf '  %-40s ideal %s| RUN sum %s' "par: kiln RUN steps" "$(printf '%.2f ' "${PIDEAL[@]}")" "$(printf '%.2f ' "${PSUM[@]}")")")
    fi
    # The RUN steps' "done" seconds are wall times, stretched when four share fewer cores; the
    # kiln build's CPU time (wait4, its children included) over the cores is the other ideal.
    if ((${#PCPU[@]})); then
        ROWS+=("$(row "par: kiln cold vs ideal CPU/$par_cores" "$(secs "$(median "${PK[@]}")")" "$(secs "$(median "${PCPU[@]}")")" "$(pratios "${PK[*]}" "${PCPU[*]}")" "-" "(info: kiln build's CPU time, wait4)")")
    fi
fi

# --- the table -------------------------------------------------------------------------------

say ""
say "== samples, seconds, in round order"
for s in "${SAMPLES[@]}"; do say "$s"; done
say ""
say "== results (ref = buildah bud --layers --isolation ${buildah_iso:-?} --storage-driver ${buildah_driver:-?} + push oci-archive:; $(( SECONDS - started ))s in all)"
row "measurement" "kiln s" "ref s" "kiln/ref" "target" "result"
for r in "${ROWS[@]}"; do say "$r"; done
[ -z "$buildah_note" ] || say "buildah: $buildah_note"
[ -z "$tree_diffs" ] || say "tree check differences (see above): $tree_diffs"
[ -z "$kiln_failed" ] || say "kiln FAILED: $kiln_failed"
say "times are medians over the rounds; kiln/ref is the median of the per-round ratios. $fails target(s) failed"

[ -z "$kiln_failed" ] || exit 1
if [ "$STRICT" = 1 ] && [ "$fails" -gt 0 ]; then exit 1; fi
exit 0
