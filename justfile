# kiln tasks. `just` is optional: each recipe is one plain command you can run yourself.

conformance := justfile_directory() + "/../shared/conformance/buildkit-parser"

# Check the example recipe (parse, expand, plan).
example:
    cargo run --release -p kiln -- build --check examples/multistage

# Every test, as CI runs them.
test:
    KILN_CONFORMANCE_DIR={{conformance}} cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks; each prints kiln beside a reference measured in the same run.
bench:
    cargo bench -p kiln-plan --bench scale

# Fuzz the parser (needs cargo-fuzz; see fuzz/README.md).
fuzz seconds="600":
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run recipe -- -max_total_time={{seconds}}
