#!/usr/bin/env bash
# Every test, on a fresh Debian machine with only the Rust toolchain: as root it installs with
# apt what the tests need, makes the rootless test user, starts a dockerd of its own, runs every
# test binary (one failing does not stop the others) and ends with one line:
#   total: N passed, M failed
# (CI parses that line). Not as root it installs and starts nothing and runs what it can.
# Arguments go to `cargo test` (e.g. `-p kiln --test parity`).
#
# KILN_REQUIRE_ALL=1 (as .ci/run sets) turns every test's "skipped: ..." into a failure.
# KILN_CONFORMANCE_DIR: BuildKit's parser test files, outside the repository; by default
# ../shared/conformance/buildkit-parser when it exists, else the conformance tests say "not run".
set -uo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# skopeo, umoci, podman (with runc) and docker.io are the real consumers the end-to-end tests
# hand kiln's images to, and docker.io's BuildKit is what the parity tests compare with;
# busybox-static is the base image the RUN tests build; uidmap gives the rootless test its
# subordinate ids; tmux is the terminal of the progress tests and graphviz checks `kiln graph`'s
# DOT. docker-registry (distribution 2.8) is the registry the registry tests use on 127.0.0.1;
# apache2-utils gives its htpasswd file, openssl the token server's key and certificate, and
# python3 runs that token server (testdata/registry/token_server.py, stdlib only).
# debootstrap makes the real Debian root the SBOM test compares with dpkg-query; rpm builds the
# rpm database fixture; python3-venv holds the SPDX and in-toto validators (from PyPI) that check
# kiln's attestations; gcc and libc6-dev build the static seccomp probe of the isolation tests.
# qemu-user-static runs the multi-platform tests' arm64 RUN steps (registered below).
packages=(ca-certificates git skopeo umoci podman runc busybox-static uidmap procps graphviz
  tmux docker-registry apache2-utils openssl python3 docker.io debootstrap rpm python3-venv
  gcc libc6-dev qemu-user-static)
# python3-yaml parses examples/ci/'s definitions for the test that runs them (ci_definitions.rs);
# strip (binutils, with gcc) slims the kiln binary packed into kiln's own image (own_image.rs).
# chattr (e2fsprogs, present on most installs but not essential) makes the immutable directory
# of the permission-error test (kiln-build tests/error_kinds.rs).
packages+=(python3-yaml binutils e2fsprogs)

if [ "$is_root" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || exit 1
  fi
fi

# The multi-platform tests (crates/kiln/tests/platforms.rs) build an arm64 image: Debian's
# arm64 busybox-static comes from the same mirror (the arm64 architecture added to dpkg), and
# arm64 programs run through qemu-aarch64, registered in binfmt_misc with the F flag (its
# interpreter opened now, so it works inside any root). No qemu-s390x is registered: that test
# shows what a build for a platform without an emulator says.
if [ "$is_root" = 1 ] && command -v dpkg >/dev/null 2>&1; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64 && apt-get update -qq || echo "warning: could not add the arm64 architecture" >&2
  fi
  binfmt=/proc/sys/fs/binfmt_misc
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt" ||
    echo "warning: binfmt_misc cannot be mounted at $binfmt" >&2
  if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-aarch64" ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | grep . >"$binfmt/register" ||
      echo "warning: qemu-aarch64 could not be registered in binfmt_misc" >&2
  fi
fi

# The attestation tests check kiln's SPDX documents with the SPDX project's own tools and its
# in-toto statements with in-toto's own bindings: a venv of their own, made once.
if [ "$is_root" = 1 ] && command -v python3 >/dev/null 2>&1; then
  venv=/opt/kiln-test-venv
  if [ ! -x "$venv/bin/pyspdxtools" ] || ! "$venv/bin/python" -c 'import in_toto_attestation' 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q spdx-tools in-toto-attestation ||
      echo "warning: the SPDX and in-toto validators could not be installed" >&2
  fi
  export KILN_PYSPDXTOOLS="$venv/bin/pyspdxtools" KILN_TEST_PYTHON="$venv/bin/python"
fi

# podman: runc (crun fails on hybrid cgroups), cgroupfs, no network, and a file limit its
# rootless user namespace can grant. An existing file is the machine owner's: left alone.
if [ "$is_root" = 1 ] && [ ! -e /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  cat >/etc/containers/containers.conf <<'EOF'
[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
fi

# Builds also run as an ordinary user (rootless, in a user namespace): the tests find it here.
if [ "$is_root" = 1 ]; then
  id kilnci >/dev/null 2>&1 || useradd --create-home kilnci
  grep -q '^kilnci:' /etc/subuid 2>/dev/null || echo 'kilnci:200000:65536' >>/etc/subuid
  grep -q '^kilnci:' /etc/subgid 2>/dev/null || echo 'kilnci:200000:65536' >>/etc/subgid
  export KILN_TEST_USER="${KILN_TEST_USER:-kilnci}"
fi

# A dockerd of our own: its own data root, exec root and socket (nothing shared with another
# daemon on the machine), no bridge and no iptables (builds use --network none). It stops when
# this script ends, however it ends.
dockerd_pid=""
dockerd_dir=""
stop_dockerd() {
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    kill "$dockerd_pid"
    for _ in $(seq 1 60); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "$dockerd_pid" 2>/dev/null
  fi
  if [ -n "$dockerd_dir" ]; then
    rm -rf "$dockerd_dir" 2>/dev/null || echo "note: could not remove all of $dockerd_dir" >&2
  fi
}
trap stop_dockerd EXIT
trap 'exit 130' INT TERM

if [ "$is_root" = 1 ] && [ -z "${DOCKER_HOST:-}" ] && command -v dockerd >/dev/null 2>&1; then
  dockerd_dir=$(mktemp -d /tmp/kiln-test-dockerd.XXXXXX)
  dockerd --data-root "$dockerd_dir/data" --exec-root "$dockerd_dir/exec" \
    --pidfile "$dockerd_dir/dockerd.pid" --host "unix://$dockerd_dir/docker.sock" \
    --bridge=none --iptables=false >"$dockerd_dir/dockerd.log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST="unix://$dockerd_dir/docker.sock"
  ready=0
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
      ready=1
      break
    fi
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ "$ready" = 1 ]; then
    echo "dockerd $(docker info --format '{{.ServerVersion}}') on $DOCKER_HOST"
  else
    echo "warning: dockerd did not start; its log:" >&2
    tail -20 "$dockerd_dir/dockerd.log" >&2
  fi
fi

default_conformance="$(cd .. && pwd)/shared/conformance/buildkit-parser"
if [ -z "${KILN_CONFORMANCE_DIR:-}" ] && [ -d "$default_conformance" ]; then
  export KILN_CONFORMANCE_DIR="$default_conformance"
fi
if [ -n "${KILN_CONFORMANCE_DIR:-}" ] && [ -d "$KILN_CONFORMANCE_DIR" ]; then
  conformance="conformance: run with $KILN_CONFORMANCE_DIR"
else
  conformance="conformance: not run (no data at ${KILN_CONFORMANCE_DIR:-$default_conformance})"
fi
echo "$conformance"

log=$(mktemp)
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -E '^test result: ' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result: ' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
ignored=$(grep -E '^test result: ' "$log" | grep -oE '[0-9]+ ignored' | awk '{s+=$1} END {print s+0}')
# A test binary that dies before its summary (a crash, an abort) has no "test result" line;
# cargo still names it.
crashed=$(grep -cE '^error: test failed, to rerun pass' "$log")
results=$(grep -cE '^test result: FAILED' "$log")
if [ "$crashed" -gt "$results" ]; then
  echo "note: $((crashed - results)) test binary(ies) ended without a summary; see above" >&2
  failed=$((failed + crashed - results))
fi
rm -f "$log"
echo "$conformance"
echo "ignored: $ignored"
echo "total: ${passed} passed, ${failed} failed"
if [ "$status" = 0 ] && [ "$failed" != 0 ]; then
  status=1
fi
exit "$status"
