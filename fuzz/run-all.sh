#!/usr/bin/env bash
# Runs every fuzz target, one after the other (the CPU is shared), each for SECONDS (default
# 600) under `nice -n 19`, from the corpora fuzz/seed.sh and fuzz/seed-formats.sh make, and
# prints one line per target from libFuzzer's final report: runs, runs/s, coverage (cov/ft)
# and whether it crashed. A crash leaves its input in fuzz/artifacts/<target>/ and fails the
# run at the end. Usage: fuzz/run-all.sh [SECONDS] [TARGET...]
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(recipe layer_read unpack oci_archive oci_layout oci_json www_authenticate docker_config dockerignore chmod_chown)
fi
command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
[ -d "$here/corpus/recipe" ] || "$here/seed.sh"
[ -d "$here/corpus/layer_read" ] || "$here/seed-formats.sh"
logs="$here/logs"
mkdir -p "$logs"
cd "$here"
RUSTC_BOOTSTRAP=1 cargo fuzz build >/dev/null || exit 1
failed=0
printf '%-18s %8s %12s %10s %8s %8s  %s\n' target seconds runs runs/s cov ft result
for target in "${targets[@]}"; do
    log="$logs/$target.log"
    mkdir -p "corpus/$target"
    extra=()
    [ "$target" = recipe ] && extra=(-dict=recipe.dict -max_len=4096)
    start=$(date +%s)
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 "${extra[@]}" > "$log" 2>&1
    status=$?
    elapsed=$(( $(date +%s) - start ))
    final="$(grep -E '^#[0-9]+' "$log" | tail -1)"
    runs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$final")"
    cov="$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$final")"
    ft="$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$final")"
    rate="$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$final")"
    result=ok
    if [ $status -ne 0 ]; then result="CRASH (see $log)"; failed=1; fi
    printf '%-18s %8s %12s %10s %8s %8s  %s\n' "$target" "$elapsed" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
