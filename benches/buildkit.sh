# What benches/lazy.sh and benches/go.sh share: timing, the results table and a BuildKit of
# their own (Debian's docker.io: a dockerd on a private socket and data root). Sourced once
# `repo`, `work`, `say`, `die` and `STEP_TIMEOUT` are set; `BENCH_NAME` names the dockerd's
# containerd namespaces (default kiln-bench).

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
    if [ "$R_EXIT" != 0 ]; then
        tail -n 5 "$log" | sed 's/^/    | /'
        # MEASURE_MAY_FAIL=1: the caller decides (a mirror that failed a download, say).
        [ "${MEASURE_MAY_FAIL:-0}" = 1 ] && return 1
        die "$name failed (exit $R_EXIT)"
    fi
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

# --- BuildKit ---------------------------------------------------------------------------------
docker_cmd=()
buildkit_start() {
    local dockerd=/usr/sbin/dockerd docker=/usr/bin/docker
    [ -x "$dockerd" ] && [ -x "$docker" ] || die "needs Debian's docker.io (/usr/sbin/dockerd, /usr/bin/docker)"
    mkdir -p "$work/dockerd"
    "$dockerd" --data-root "$work/dockerd/root" --exec-root "$work/dockerd/exec" \
        --pidfile "$work/dockerd/pid" -H "unix://$work/dockerd/sock" \
        --containerd-namespace "${BENCH_NAME:-kiln-bench}" --containerd-plugins-namespace "${BENCH_NAME:-kiln-bench}-plugins" \
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
# Builds run with `--network $BUILDKIT_NETWORK` (none) and `-q`, or `--progress plain` with
# BUILDKIT_PLAIN=1 (the log then has each step's DONE seconds).
buildkit_build() { # label log ctx tag archive; sets D_WALL (build + save)
    local label=$1 log=$2 ctx=$3 tag=$4 out=$5 quiet=(-q)
    [ "${BUILDKIT_PLAIN:-0}" = 1 ] && quiet=(--progress plain)
    # A cold build without deleting the cache (see `fresh_path` in benches/lib.sh).
    [ "${BUILDKIT_NO_CACHE:-0}" = 1 ] && quiet+=(--no-cache)
    DOCKER_BUILDKIT=1 measure "BuildKit $label: build" "$log" "${docker_cmd[@]}" build \
        --network "${BUILDKIT_NETWORK:-none}" "${quiet[@]}" -t "$tag" "$ctx" || return 1
    local build=$R_WALL
    rm -f "$out"
    measure "BuildKit $label: save" "$log" "${docker_cmd[@]}" save -o "$out" "$tag" || return 1
    D_WALL=$(calc %.3f "$build + $R_WALL")
}
buildkit_cold() { # drops BuildKit's cache and images but the base
    timeout 120 "${docker_cmd[@]}" builder prune -af >/dev/null 2>&1 || true
    local t
    for t in "$@"; do timeout 60 "${docker_cmd[@]}" rmi -f "$t" >/dev/null 2>&1 || true; done
}

