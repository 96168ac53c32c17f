# What the benchmarks share; sourced once `repo`, `work`, `say` and `die` are set.

# Sets `kiln` to the binary to measure: $KILN_BENCH_KILN, else the one
# `cargo build --release -p kiln` makes. A private copy in $work, so a rebuild of the tree
# during the run does not change what is measured.
kiln_binary() {
    local src
    if [ -n "${KILN_BENCH_KILN:-}" ]; then
        src=$KILN_BENCH_KILN
    else
        command -v cargo >/dev/null || die "needs cargo (or KILN_BENCH_KILN=PATH)"
        say "building kiln (cargo build --release -p kiln)..."
        src=$(cd "$repo" && timeout 3600 cargo build --release -p kiln --message-format=json-render-diagnostics |
            python3 -c 'import json,sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "kiln" and m.get("executable"):
        print(m["executable"])') || die "cargo build --release -p kiln failed"
    fi
    [ -x "$src" ] || die "no kiln binary ($src)"
    kiln=$work/kiln
    cp "$src" "$kiln"
    say "kiln: $src ($("$kiln" --version 2>/dev/null || echo '?'))"
}

# Every timed command runs under benches/measure.py (see there what it writes).

# A path for a store (or tree) of its own, made by no one yet: the benches delete nothing
# while they measure; what they made goes with $work at the end. Without a journal (this
# machine's root file system), ext4 will not reuse an inode freed in the last 60 s (360 s
# while its inode table block is dirty), and it looks each such inode up to skip it, on every
# create: a build that creates thousands of files after a store of thousands was removed
# spends seconds in the kernel (`recently_deleted` in `perf record -a`; apt's unpack took
# 16-23 s instead of 9-11 s, a cold copy-tree 17-20 s instead of 5 s). Removing each round's
# store afterwards would put that cost on whichever tool builds next.
fresh_path() { # name
    mktemp -u "$work/$1.XXXXXX"
}

# The builds themselves free inodes too (`go build` makes and removes thousands of temporary
# files; so does dpkg): before a timed cold build, `sync` (the freed inodes' table blocks
# become clean) and wait out ext4's 60 s window, so no tool pays for the build before it.
# KILN_BENCH_SETTLE=seconds (default 61; 0: only sync).
settle() {
    sync
    sleep "${KILN_BENCH_SETTLE:-61}"
}
