#!/usr/bin/env bash
# The cost of each isolation rung (docs/ci.md) on a RUN-heavy recipe, beside the host's
# `sandbox`: a busybox base (built once, untimed), then 4 RUN steps FROM it (N files made in a
# shell loop, every 10th changed, every 10th deleted, a directory recreated), cold each time (a
# fresh copy of the store that holds only the base). Rows: sandbox (host root), userns (host root
# forced through a user namespace), userns + copy snapshotter, chroot (host root forced onto the
# chroot rung, which always copies), and userns inside `podman run` (root, default seccomp).
# hyperfine prints each row's time and the ratio to the fastest.
#
#   bash benches/isolation.sh          KILN=path/to/kiln N=2000 RUNS=5
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KILN=${KILN:-$repo/target/release/kiln}
N=${N:-2000}
RUNS=${RUNS:-5}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
for tool in hyperfine podman busybox; do
    command -v $tool >/dev/null || { echo "isolation bench: $tool is missing" >&2; exit 1; }
done
[ -x "$KILN" ] || { echo "isolation bench: no kiln at $KILN (cargo build --release -p kiln)" >&2; exit 1; }
work=$(mktemp -d /tmp/kiln-isolation-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
cp "$KILN" "$work/kiln"
mkdir -p "$work/base" "$work/runs" "$work/rootfs/bin" "$work/rootfs/tmp" "$work/rootfs/proc" \
    "$work/rootfs/sys" "$work/rootfs/dev" "$work/rootfs/etc"
cp "$(command -v busybox)" "$work/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n' >"$work/base/Dockerfile"
cat >"$work/runs/Dockerfile" <<DOCKERFILE
FROM bbase
ARG N=$N
RUN mkdir -p /data && cd /data && i=0 && while [ \$i -lt \$N ]; do d=d\$((i / 100)); [ -d \$d ] || mkdir \$d; echo "line \$i of the isolation bench" > \$d/f\$i; i=\$((i + 1)); done
RUN cd /data && i=0 && while [ \$i -lt \$N ]; do echo changed >> d\$((i / 100))/f\$i; i=\$((i + 10)); done
RUN cd /data && i=5 && while [ \$i -lt \$N ]; do rm d\$((i / 100))/f\$i; i=\$((i + 10)); done
RUN cd /data && rm -rf d1 && mkdir d1 && i=0 && while [ \$i -lt 50 ]; do echo new \$i > d1/g\$i; i=\$((i + 1)); done
DOCKERFILE
"$work/kiln" --root "$work/base-store" build -q -t bbase "$work/base" >/dev/null
# kiln's binary in a busybox container: busybox and kiln's shared libraries.
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
"$work/rootfs/bin/busybox" --install -s "$work/rootfs/bin"
for lib in $(ldd "$work/kiln" | grep -o '/[^ ]*'); do
    mkdir -p "$work/rootfs$(dirname "$lib")"; cp -L "$lib" "$work/rootfs$lib"
done
printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' >"$work/containers.conf"
podman="podman --root $work/podman/root --runroot $work/podman/run --storage-driver vfs --cgroup-manager cgroupfs --runtime runc"
prepare="rm -rf $work/store && cp -a $work/base-store $work/store"
build="$work/kiln --root $work/store build -q -o type=oci,dest=$work/out.tar $work/runs"
# The container's kiln must work before it is timed.
eval "$prepare"
CONTAINERS_CONF=$work/containers.conf $podman run --rm --network none -e SOURCE_DATE_EPOCH \
    -v "$work:$work" --rootfs "$work/rootfs" $build || { echo "isolation bench: kiln in podman failed" >&2; exit 1; }
CONTAINERS_CONF=$work/containers.conf hyperfine --runs "$RUNS" --prepare "$prepare" \
    -n sandbox "$build --isolation=sandbox" \
    -n userns "$build --isolation=userns" \
    -n userns-copy "KILN_SNAPSHOTTER=copy $build --isolation=userns" \
    -n chroot "$build --isolation=chroot-on-host" \
    -n podman-userns "$podman run --rm --network none -e SOURCE_DATE_EPOCH -v $work:$work --rootfs $work/rootfs $build"
