# kiln tasks. `just` is optional: each recipe is one plain command you can run yourself.

# Check the example recipe (parse, expand, plan).
example:
    cargo run --release -p kiln -- build --check examples/multistage

# Every test, as CI runs them (as root it installs what they need and starts a dockerd; see
# scripts/test.sh). Arguments go to cargo test: `just test -p kiln --test parity`.
test *args:
    bash scripts/test.sh {{args}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks; each prints kiln beside a reference measured in the same run. benches/copy.sh
# (COPY of 20,000 files + 300 MB, beside buildah and tar|gzip|sha256sum; about 8 minutes) installs
# buildah with apt when it is missing and kiln runs as root; KILN_BENCH_INSTALL=0 turns that off.
# benches/run.sh (RUN steps on busybox and Debian bases beside buildah, a 1 GB RUN, diff cost
# against root size; about 10 minutes) installs busybox-static, time and debootstrap the same way.
# Its case 5 (four CPU-bound stages) also runs BuildKit: Debian's docker.io, a dockerd of its
# own on a private socket and data root, installed the same way.
# benches/lazy.sh (a build stage that never ships, a cached 1 GiB archive, cold copy-tree and
# run-steps beside the kiln of main, all beside BuildKit's dockerd of its own; about 10 minutes).
# benches/incremental.sh (the edit-one-file rebuild: 6 x 50 MB vendor COPY, COPY src/ of 20,000
# small files onto /app, a RUN over them, one src file edited; and copy-tree with one small file
# edited; beside BuildKit, about 10 minutes; KILN_BENCH_OLD_KILN=PATH adds cold copy-tree with an
# older kiln) installs busybox-static and docker.io the same way.
# benches/go.sh (the Go-style multi-stage build: `apt-get install golang-go` and `go build` in a
# build stage on a debootstrapped Debian bookworm minbase, a FROM scratch final stage; cold,
# beside BuildKit with `--network host` for the mirror, apt's own seconds shown per tool; about
# 10 minutes, depending on the mirror) makes the Debian base with debootstrap once (kept in
# /var/tmp/kiln-bench, shared with benches/run.sh) and needs docker.io.
# benches/registry.sh (kiln push and pull of a 500 MB image through docker-registry on 127.0.0.1,
# beside skopeo; about 2 minutes) installs docker-registry and skopeo the same way.
# benches/platforms.sh (a two-platform linux/amd64,linux/arm64 build against amd64 alone, and an
# emulated arm64 RUN against a native one; about 3 minutes) installs qemu-user-static, registers
# qemu-aarch64 and adds Debian's arm64 architecture the same way.
bench: bench-parse-instructions
    cargo bench -p kiln-plan --bench scale
    bash benches/copy.sh
    bash benches/run.sh
    cargo bench -p kiln-layer --bench reuse
    bash benches/incremental.sh
    bash benches/registry.sh
    bash benches/lazy.sh
    bash benches/go.sh
    bash benches/platforms.sh

# Parse + plan instruction counts per line under callgrind (needs valgrind): linear growth shows
# as the same count per line at every size, whatever else the machine is doing.
bench-parse-instructions:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v valgrind >/dev/null || { echo "skipped: valgrind not installed"; exit 0; }
    bin=$(cargo bench -p kiln-plan --bench scale --no-run 2>&1 | grep -o 'target/release/deps/scale-[0-9a-f]*' | head -1)
    for n in 1000 5000 20000; do
      out=$(KILN_BENCH_LINES=$n valgrind --tool=callgrind --toggle-collect='*parse_and_plan*' --callgrind-out-file=/dev/null "$bin" 2>&1)
      lines=$(echo "$out" | grep -oE '^[0-9]+ lines' | grep -oE '[0-9]+')
      refs=$(echo "$out" | grep -oE 'I\s+refs:\s+[0-9,]+' | grep -oE '[0-9,]+$' | tr -d ,)
      echo "$lines lines: $refs instructions, $((refs / lines)) per line"
    done

# Fuzz every target one after the other, SECONDS each (needs cargo-fuzz; see fuzz/README.md);
# name targets to run only those: `just fuzz 60 layer_read unpack`.
fuzz seconds="600" *targets:
    fuzz/run-all.sh {{seconds}} {{targets}}
