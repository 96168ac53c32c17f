#!/usr/bin/env bash
# The registry benchmark: kiln's push and pull against skopeo's, in one run, through a real
# registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1.
#
#   bash benches/registry.sh            (or `just bench`)
#
# Image: KILN_BENCH_REGISTRY_LAYERS layers (5) of KILN_BENCH_REGISTRY_LAYER_MB MiB (100) of
# random data each (`head -c` of /dev/urandom, so gzip cannot shrink it): a `FROM scratch`
# recipe with one COPY per file, built by kiln in a temp store (untimed). `kiln save` +
# `skopeo copy oci-archive:... oci:LAYOUT:img` make an OCI layout of the same image beforehand,
# so skopeo reads the same blobs from local disk as kiln does from its store.
#
# Each round (KILN_BENCH_ROUNDS, 3), kiln then skopeo, every timed command after an untimed sync:
#   push  `kiln --root STORE push regbench:1 HOST/kiln/img:1` against
#         `skopeo copy --dest-tls-verify=false oci:LAYOUT:img docker://HOST/skopeo/img:1`; each
#         push goes to a registry of its own, started for it with empty storage on a new port,
#         so no blob is found already there, and no blob-location cache (skopeo keeps one) can
#         offer a mount instead of an upload.
#   pull  `kiln --root EMPTY_STORE pull HOST/kiln/img:1` against
#         `skopeo copy --src-tls-verify=false docker://HOST/skopeo/img:1 oci:FRESH_DIR:img`, each
#         from the registry its own push filled.
# The table shows median wall seconds, MB/s (the image's blob bytes: layers + config + manifest,
# over the median seconds) and kiln/skopeo, the median of the per-round ratios.
#
# Unless KILN_BENCH_REGISTRY_KILN=0 (skopeo's half alone), the script stops at once with an
# error when `kiln push --help` or `kiln pull --help` fails (a kiln without registry support).
#
# Knobs (environment):
#   KILN_BENCH_ROUNDS=3                  rounds; the table shows medians
#   KILN_BENCH_REGISTRY_LAYERS=5         layers of the image
#   KILN_BENCH_REGISTRY_LAYER_MB=100     MiB of random data in each layer
#   KILN_BENCH_REGISTRY_KILN=1           0 measures skopeo only
#   KILN_BENCH_REGISTRY_KILN_FLAGS=""    extra arguments to `kiln push` and `kiln pull`
#   KILN_BENCH_STEP_TIMEOUT=600          seconds allowed to any one timed command
#   KILN_BENCH_INSTALL=1                 0 never runs apt-get (setup only, when we are root and
#                                        docker-registry or skopeo is missing)
#   KILN_BENCH_KILN=PATH                 use this kiln binary instead of
#                                        `cargo build --release -p kiln`
#   SOURCE_DATE_EPOCH=1700000000 TMPDIR (default /tmp)
#
# Exit status: 0 when everything asked for ran; 1 when kiln lacks push/pull, or a kiln or
# skopeo step failed or timed out.

set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${KILN_BENCH_ROUNDS:-3}
LAYERS=${KILN_BENCH_REGISTRY_LAYERS:-5}
LAYER_MB=${KILN_BENCH_REGISTRY_LAYER_MB:-100}
DO_KILN=${KILN_BENCH_REGISTRY_KILN:-1}
read -r -a KILN_FLAGS <<<"${KILN_BENCH_REGISTRY_KILN_FLAGS:-}"
STEP_TIMEOUT=${KILN_BENCH_STEP_TIMEOUT:-600}
DO_INSTALL=${KILN_BENCH_INSTALL:-1}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

say() { printf '%s\n' "$*"; }
die() { printf 'registry bench: %s\n' "$*" >&2; exit 1; }

for n in "$ROUNDS" "$LAYERS" "$LAYER_MB"; do
    [ "$n" -ge 1 ] 2>/dev/null || die "KILN_BENCH_ROUNDS, KILN_BENCH_REGISTRY_LAYERS and KILN_BENCH_REGISTRY_LAYER_MB must be positive numbers"
done
command -v python3 >/dev/null || die "needs python3 (process launcher, free ports, readiness checks)"

work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-registry-bench.XXXXXX")
started=$SECONDS

# Registries started here, "pid dir" each; killed (and waited for) at exit, whatever happens.
declare -A REG_DIR=()
cleanup() {
    set +e
    local pid
    for pid in "${!REG_DIR[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ---------------------------------------------------------------------------------

# Every timed command runs under benches/measure.py, the launcher all benchmarks share.

# measure NAME LOG CMD... : runs CMD under the launcher (after an untimed sync); sets R_EXIT
# R_WALL R_CPU, and prints a line.
measure() {
    local name=$1 log=$2
    shift 2
    timeout 300 sync || true
    python3 "$repo/benches/measure.py" "$STEP_TIMEOUT" "$work/result" "$log" "$@"
    read -r R_EXIT R_WALL R_CPU _ <"$work/result"
    printf '  %-40s %8.2fs  exit %-3s cpu %6.1fs  %s\n' "$name" "$R_WALL" "$R_EXIT" "$R_CPU" \
        "$(calc '%.0f MB/s' "$BYTES / 1e6 / $R_WALL")"
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
median() { # prints the median of its arguments, or nothing
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
failed() { # name log
    say "  FAILED: $1 (exit $R_EXIT); the end of its log:"
    tail -n 15 "$2" | sed 's/^/    | /'
}

apt_install() { # package... ; returns 1 when it could not
    [ "$DO_INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    say "apt-get install -y $* (setup, not timed)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q --no-install-recommends "$@" >>"$work/apt.log" 2>&1 ||
        { timeout 600 apt-get update -q >>"$work/apt.log" 2>&1 &&
            timeout 600 apt-get install -y -q --no-install-recommends "$@" >>"$work/apt.log" 2>&1; }
}

# reg_start NAME: a registry of its own (anonymous, empty storage under $work/reg-NAME, a free
# 127.0.0.1 port); sets REG_HOST and REG_PID. It lives at most 4 steps' time (timeout), and is
# killed at exit.
reg_start() {
    local dir=$work/reg-$1 port try pid
    for try in 1 2 3; do
        rm -rf "$dir"
        mkdir -p "$dir/storage"
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: kiln-bench-secret
EOF
        timeout -k 5 $((STEP_TIMEOUT * 4 + 60)) docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
        pid=$!
        REG_DIR[$pid]=$dir
        if python3 - "$port" "$pid" <<'PY'; then
import os, sys, time, urllib.request, urllib.error
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError as e:
        sys.exit(0 if e.code == 401 else 1)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
PY
            REG_HOST=127.0.0.1:$port REG_PID=$pid
            return 0
        fi
        say "  (registry did not come up on port $port: $(tail -n 1 "$dir/log"))"
        reg_stop "$pid"
    done
    die "docker-registry did not start (3 tries); its log: $(tail -n 5 "$dir/log")"
}
reg_stop() { # pid: kill the registry, wait for it, remove its storage
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "${REG_DIR[$pid]}"
    unset "REG_DIR[$pid]"
}

# --- setup: tools ----------------------------------------------------------------------------

say "== registry bench: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"
say "work dir $work (removed at exit); image $LAYERS x $LAYER_MB MiB random layers; $ROUNDS rounds"

command -v docker-registry >/dev/null || apt_install docker-registry ||
    die "needs docker-registry (apt-get install docker-registry)"
command -v skopeo >/dev/null || apt_install skopeo || die "needs skopeo (apt-get install skopeo)"
say "docker-registry: $(docker-registry --version 2>&1 | head -n 1); $(skopeo --version)"

source "$repo/benches/lib.sh"
kiln_binary

if [ "$DO_KILN" = 1 ]; then
    for sub in push pull; do
        if ! "$kiln" "$sub" --help >"$work/help.log" 2>&1; then
            die "this kiln has no \`kiln $sub\` (\`kiln $sub --help\` failed: $(head -n 1 "$work/help.log")); KILN_BENCH_REGISTRY_KILN=0 measures skopeo's half alone"
        fi
    done
else
    say "KILN_BENCH_REGISTRY_KILN=0: skopeo only"
fi

# --- setup: the image ------------------------------------------------------------------------

say "making the image ($LAYERS x $LAYER_MB MiB of /dev/urandom; untimed)..."
ctx=$work/ctx
kstore=$work/kiln-store
mkdir -p "$ctx"
printf 'FROM scratch\n' >"$ctx/Dockerfile"
for i in $(seq 1 "$LAYERS"); do
    head -c "${LAYER_MB}M" /dev/urandom >"$ctx/layer$i.bin"
    printf 'COPY layer%s.bin /layer%s.bin\n' "$i" "$i" >>"$ctx/Dockerfile"
done
t0=$SECONDS
"$kiln" --root "$kstore" build --progress plain -t regbench:1 "$ctx" >"$work/build.log" 2>&1 ||
    { tail -n 20 "$work/build.log" >&2; die "kiln build of the image failed"; }
rm -rf "$ctx"
"$kiln" --root "$kstore" save -o "$work/image.tar" --format oci regbench:1 >"$work/save.log" 2>&1 ||
    { cat "$work/save.log" >&2; die "kiln save failed"; }
layout=$work/layout
skopeo --insecure-policy copy -q "oci-archive:$work/image.tar" "oci:$layout:img" >"$work/layout.log" 2>&1 ||
    { cat "$work/layout.log" >&2; die "skopeo copy oci-archive: -> oci: failed"; }
rm -f "$work/image.tar"
# The bytes a push or pull moves: the manifest, the config and every layer blob.
read -r BYTES DIGEST <<<"$(python3 - "$layout" <<'PY'
import json, os, sys
root = sys.argv[1]
def blob(d):
    return os.path.join(root, "blobs", *d.split(":"))
desc = json.load(open(os.path.join(root, "index.json")))["manifests"][0]
manifest = json.load(open(blob(desc["digest"])))
print(desc["size"] + manifest["config"]["size"] + sum(l["size"] for l in manifest["layers"]), desc["digest"])
PY
)"
say "  image: $(mb "$BYTES") in blobs, manifest $DIGEST (made in $((SECONDS - t0))s)"

# --- rounds ----------------------------------------------------------------------------------

KPUSH=() SPUSH=() KPULL=() SPULL=() status=0
logs=$work/logs
mkdir -p "$logs"
for round in $(seq 1 "$ROUNDS"); do
    say ""
    say "-- round $round of $ROUNDS"
    kreg_pid="" kreg_host=""
    if [ "$DO_KILN" = 1 ]; then
        reg_start "kiln-$round"
        kreg_pid=$REG_PID kreg_host=$REG_HOST
        measure "kiln push" "$logs/k-push-$round.log" "$kiln" --root "$kstore" push "${KILN_FLAGS[@]}" \
            regbench:1 "$kreg_host/kiln/img:1"
        if [ "$R_EXIT" != 0 ]; then failed "kiln push" "$logs/k-push-$round.log"; status=1; break; fi
        KPUSH+=("$R_WALL")
    fi
    reg_start "skopeo-$round"
    sreg_pid=$REG_PID sreg_host=$REG_HOST
    measure "skopeo copy oci: -> docker://" "$logs/s-push-$round.log" skopeo --insecure-policy copy -q \
        --dest-tls-verify=false --dest-no-creds "oci:$layout:img" "docker://$sreg_host/skopeo/img:1"
    if [ "$R_EXIT" != 0 ]; then failed "skopeo push" "$logs/s-push-$round.log"; status=1; break; fi
    SPUSH+=("$R_WALL")
    if [ "$round" = 1 ]; then
        # Untimed: what the registries hold (the same manifest, when both push blobs as they are).
        got=$(skopeo --insecure-policy inspect --tls-verify=false --no-creds --format '{{.Digest}}' \
            "docker://$sreg_host/skopeo/img:1" 2>&1 || true)
        say "    skopeo's push: $got"
        if [ -n "$kreg_host" ]; then
            got=$(skopeo --insecure-policy inspect --tls-verify=false --no-creds --format '{{.Digest}}' \
                "docker://$kreg_host/kiln/img:1" 2>&1 || true)
            say "    kiln's push:   $got$([ "$got" = "$DIGEST" ] && echo " (the store's manifest)")"
        fi
    fi

    if [ "$DO_KILN" = 1 ]; then
        rm -rf "$work/kiln-pull"
        measure "kiln pull" "$logs/k-pull-$round.log" "$kiln" --root "$work/kiln-pull" pull "${KILN_FLAGS[@]}" \
            "$kreg_host/kiln/img:1"
        if [ "$R_EXIT" != 0 ]; then failed "kiln pull" "$logs/k-pull-$round.log"; status=1; break; fi
        KPULL+=("$R_WALL")
        rm -rf "$work/kiln-pull"
        reg_stop "$kreg_pid"
    fi
    rm -rf "$work/skopeo-pull"
    measure "skopeo copy docker:// -> oci:" "$logs/s-pull-$round.log" skopeo --insecure-policy copy -q \
        --src-tls-verify=false --src-no-creds "docker://$sreg_host/skopeo/img:1" "oci:$work/skopeo-pull:img"
    if [ "$R_EXIT" != 0 ]; then failed "skopeo pull" "$logs/s-pull-$round.log"; status=1; break; fi
    SPULL+=("$R_WALL")
    rm -rf "$work/skopeo-pull"
    reg_stop "$sreg_pid"
done

# --- the table -------------------------------------------------------------------------------

row() { printf '%-34s %9s %9s %9s %9s %9s\n' "$@"; }
secs() { [ -n "${1:-}" ] && calc %.2f "$1" || echo "-"; }
rate() { [ -n "${1:-}" ] && calc %.0f "$BYTES / 1e6 / $1" || echo "-"; }
pratios() { # "k1 k2 ..." "s1 s2 ..." -> median of the per-round ratios, or -
    local -a k=($1) s=($2) r=()
    ((${#k[@]})) && [ "${#k[@]}" = "${#s[@]}" ] || { echo -; return; }
    local n
    for n in "${!k[@]}"; do r+=("$(calc %.4f "${k[$n]} / ${s[$n]}")"); done
    calc %.3f "$(median "${r[@]}")"
}
say ""
say "== samples, seconds, in round order"
printf '  %-30s %s\n' "kiln push" "${KPUSH[*]:--}" "skopeo push" "${SPUSH[*]:--}" \
    "kiln pull" "${KPULL[*]:--}" "skopeo pull" "${SPULL[*]:--}"
say ""
say "== results ($(mb "$BYTES"), $LAYERS layers; ref = skopeo $(skopeo --version | awk '{print $3}'), docker-registry on 127.0.0.1; $((SECONDS - started))s in all)"
row "measurement" "kiln s" "ref s" "kiln MB/s" "ref MB/s" "kiln/ref"
for op in push pull; do
    if [ $op = push ]; then k="${KPUSH[*]:-}" s="${SPUSH[*]:-}"; else k="${KPULL[*]:-}" s="${SPULL[*]:-}"; fi
    km=$(median $k) sm=$(median $s)
    row "$op, ${LAYERS} x ${LAYER_MB} MiB layers" "$(secs "$km")" "$(secs "$sm")" "$(rate "$km")" "$(rate "$sm")" "$(pratios "$k" "$s")"
done
say "times are medians over the rounds; kiln/ref is the median of the per-round ratios"
exit "$status"
