#!/usr/bin/env bash
# Fills fuzz/corpus/recipe/ (gitignored) with seed inputs for the `recipe` fuzz target:
# every file under testdata/ and examples/, BuildKit's parser test Dockerfiles from
# shared/conformance if present, and the hand-made seeds in fuzz/seeds/.
# Files are named by content hash, as libFuzzer does, so re-running is idempotent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
corpus="$here/corpus/recipe"
conformance="${KILN_CONFORMANCE:-$(dirname "$root")/shared/conformance/buildkit-parser}"
mkdir -p "$corpus"

added=0
add() {
    local file="$1" hash
    [ -f "$file" ] || return 0
    # libFuzzer runs are capped at -max_len=4096; larger files would be truncated anyway.
    hash="$(sha1sum "$file" | cut -d' ' -f1)"
    if [ ! -e "$corpus/$hash" ]; then
        cp "$file" "$corpus/$hash"
        added=$((added + 1))
    fi
}

for dir in "$root/testdata" "$root/examples" "$here/seeds"; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' file; do add "$file"; done < <(find "$dir" -type f -print0)
done
if [ -d "$conformance" ]; then
    while IFS= read -r -d '' file; do add "$file"; done < <(find "$conformance" -type f -name Dockerfile -print0)
fi

echo "seed.sh: added $added new inputs; corpus has $(find "$corpus" -type f | wc -l) files in $corpus"
