#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (gitignored) for the format fuzz targets with real samples:
# kiln builds a small image (long names, links, an empty directory, a whiteout-free tree) and
# writes it as an OCI archive, a docker archive and an OCI layout; its layers (gzip, plain,
# zstd), manifest, index and config seed the layer, archive, layout and JSON targets. Python's
# tarfile adds PAX and GNU-format tars (another writer). The hand-made seeds in
# fuzz/seeds-formats/<target>/ are copied in too. Needs a kiln binary: $KILN, or
# target/debug/kiln (built with cargo if missing). Re-running is idempotent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
corpus="$here/corpus"
kiln="${KILN:-$root/target/debug/kiln}"
[ -x "$kiln" ] || (cd "$root" && cargo build -p kiln)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

add() { # add TARGET FILE [PREFIX-BYTE-IN-OCTAL]
    local target="$1" file="$2" prefix="${3:-}" tmp="$work/add.tmp"
    mkdir -p "$corpus/$target"
    if [ -n "$prefix" ]; then { printf "\\$prefix"; cat "$file"; } > "$tmp"; else cp "$file" "$tmp"; fi
    cp "$tmp" "$corpus/$target/$(sha1sum "$tmp" | cut -c1-40)"
}

# A context with what layers hold: nested dirs, a long name, symlinks, a hardlink, modes.
ctx="$work/ctx"
mkdir -p "$ctx/dir/sub" "$ctx/empty"
long="$(printf 'n%.0s' {1..120})/$(printf 'm%.0s' {1..120})"
mkdir -p "$ctx/$(dirname "$long")"
echo long > "$ctx/$long"
echo hello > "$ctx/dir/file"
printf '\x00\x01binary' > "$ctx/dir/sub/bin"
ln -s file "$ctx/dir/link"
ln -s ../../etc/passwd "$ctx/dir/escape-link"
chmod 0750 "$ctx/dir/sub"
cat > "$ctx/Dockerfile" <<'RECIPE'
FROM scratch
COPY dir /dir
COPY --chmod=0640 dir/file /chmod/file
COPY empty /empty
COPY nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn /long
ENV A=1 B="two words"
LABEL org.example=seed
CMD ["/dir/file"]
RECIPE
"$kiln" build --root "$work/store" --source-date-epoch 1700000000 \
    -o "type=oci,dest=$work/image.tar" -o "type=docker,dest=$work/docker.tar" \
    --progress plain "$ctx" > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
add oci_archive "$work/image.tar"
add oci_archive "$work/docker.tar"

mkdir -p "$work/layout"
tar -xf "$work/image.tar" -C "$work/layout"
python3 - "$work/layout" "$work/seeds" <<'PY'
import hashlib, json, os, sys, tarfile, io, gzip
layout, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
def blob(d): return open(os.path.join(layout, "blobs", *d.split(":")), "rb").read()
index_bytes = open(os.path.join(layout, "index.json"), "rb").read()
index = json.loads(index_bytes)
manifest_desc = index["manifests"][0]
manifest_bytes = blob(manifest_desc["digest"])
manifest = json.loads(manifest_bytes)
config_bytes = blob(manifest["config"]["digest"])
layers = [blob(l["digest"]) for l in manifest["layers"]]
def write(name, data):
    open(os.path.join(out, name), "wb").write(data)
write("json-index", index_bytes); write("json-manifest", manifest_bytes); write("json-config", config_bytes)
for i, layer in enumerate(layers):
    write(f"layer-gz-{i}", layer)
    write(f"layer-tar-{i}", gzip.decompress(layer))
# The layout target's form: parts split at "\n--\n"; "@N"/"#N" stand for part N's digest/size.
parts = [index_bytes, manifest_bytes, config_bytes] + layers
text = [p for p in parts]
def sub(data, digest, size, n):
    return data.replace(digest.encode(), b"@%d" % n).replace(b'"size":%d' % size, b'"size":#%d' % n)
text[0] = sub(text[0], manifest_desc["digest"], manifest_desc["size"], 1)
text[1] = sub(text[1], manifest["config"]["digest"], manifest["config"]["size"], 2)
for i, l in enumerate(manifest["layers"]):
    text[1] = sub(text[1], l["digest"], l["size"], 3 + i)
write("layout", b"\n--\n".join(text))
# Another writer: Python's tarfile in PAX and GNU formats, with long names, owners, xattrs.
for fmt, name in [(tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu"), (tarfile.USTAR_FORMAT, "ustar")]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        def add(info, data=b""):
            info.size = len(data); t.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("etc/"); d.type = tarfile.DIRTYPE; d.mode = 0o755; add(d)
        f = tarfile.TarInfo("etc/passwd"); f.uid = 1000; f.gid = 1000; f.mtime = 1700000000.5 if fmt == tarfile.PAX_FORMAT else 1700000000
        if fmt == tarfile.PAX_FORMAT:
            f.pax_headers = {"SCHILY.xattr.user.note": "v\nw", "uid": "1000"}
        add(f, b"root:x:0:0:root:/root:/bin/sh\n")
        if fmt != tarfile.USTAR_FORMAT:
            g = tarfile.TarInfo("deep/" + "x" * 150 + "/file"); add(g, b"deep")
        s = tarfile.TarInfo("etc/link"); s.type = tarfile.SYMTYPE; s.linkname = "passwd"; add(s)
        h = tarfile.TarInfo("etc/hard"); h.type = tarfile.LNKTYPE; h.linkname = "etc/passwd"; add(h)
        w = tarfile.TarInfo("etc/.wh.gone"); add(w)
        o = tarfile.TarInfo("var/.wh..wh..opq"); add(o)
        p = tarfile.TarInfo("dev/null"); p.type = tarfile.CHRTYPE; p.devmajor = 1; p.devminor = 3; add(p)
        q = tarfile.TarInfo("fifo"); q.type = tarfile.FIFOTYPE; add(q)
    write(f"layer-tar-py-{name}", buf.getvalue())
PY
for f in "$work"/seeds/layer-tar-*; do
    add layer_read "$f" 000
    add unpack "$f"
    gzip -9nc "$f" > "$f.gz" && add layer_read "$f.gz" 001
    if command -v zstd >/dev/null; then zstd -q -c "$f" > "$f.zst" && add layer_read "$f.zst" 002; fi
done
for f in "$work"/seeds/layer-gz-*; do add layer_read "$f" 001; done
for f in "$work"/seeds/json-*; do add oci_json "$f"; done
add oci_layout "$work/seeds/layout"
add oci_json "$(printf '%s' '2023-11-14T22:13:20Z' > "$work/t1" && echo "$work/t1")"
add oci_json "$(printf '%s' 'Sun, 06 Nov 1994 08:49:37 GMT' > "$work/t2" && echo "$work/t2")"

# Hand-made seeds, one file per sample, committed under fuzz/seeds-formats/<target>/.
for dir in "$here"/seeds-formats/*/; do
    target="$(basename "$dir")"
    for f in "$dir"*; do add "$target" "$f"; done
done
# Every .dockerignore the tests and examples use.
while IFS= read -r -d '' f; do add dockerignore "$f"; done \
    < <(find "$root/testdata" "$root/examples" -name .dockerignore -print0 2>/dev/null)
for target in "$corpus"/*/; do
    echo "$(basename "$target"): $(ls "$target" | wc -l) inputs"
done
