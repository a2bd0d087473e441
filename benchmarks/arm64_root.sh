#!/bin/sh
# Build an emulated arm64 Debian root for tlexport's `--on 'chroot:ROOT'` parity runs
# (docs/devices.md). Idempotent: each step is skipped when already done.
# Usage: sh benchmarks/arm64_root.sh [ROOT]   (default /work/arm64root; needs root, network)
set -eu
ROOT=${1:-${TLEXPORT_ARM64_ROOT:-/work/arm64root}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null || {
  apt-get update -qq && apt-get install -y -qq qemu-user-static debootstrap binfmt-support; }
update-binfmts --enable qemu-aarch64 2>/dev/null || true
update-binfmts --display qemu-aarch64 | grep -q enabled || { echo "qemu-aarch64 binfmt not enabled" >&2; exit 1; }
[ -x "$ROOT/usr/bin/python3" ] || [ -e "$ROOT/debootstrap.done" ] || {
  debootstrap --arch=arm64 --variant=minbase bookworm "$ROOT" "$MIRROR" && touch "$ROOT/debootstrap.done"; }
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Local CAs (a TLS-inspecting egress proxy) must be trusted inside the root too, or pip fails.
for d in proc dev sys; do mountpoint -q "$ROOT/$d" || mount --bind "/$d" "$ROOT/$d"; done
chroot "$ROOT" sh -c 'command -v python3 >/dev/null && python3 -m venv --help >/dev/null 2>&1 || {
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip ca-certificates; }'
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null
fi
chroot "$ROOT" sh -c '[ -x /opt/rt/bin/python ] || python3 -m venv /opt/rt'
# One pip call per runtime so a runtime without an aarch64 wheel only skips itself.
# The host's pip settings (find-links, extra indexes of x86 wheels) are not the root's: env -i.
for pkg in numpy Pillow onnxruntime ai-edge-litert ncnn openvino; do
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 \
    /opt/rt/bin/pip install -q --only-binary=:all: "$pkg" || echo "no aarch64 wheel: $pkg" >&2
done
for d in sys dev proc; do umount "$ROOT/$d" 2>/dev/null || true; done
chroot "$ROOT" /opt/rt/bin/python -c "import platform,sys; print(platform.machine(), sys.version.split()[0])"
chroot "$ROOT" /usr/bin/env -i /opt/rt/bin/pip list 2>/dev/null | grep -iE 'numpy|pillow|onnxruntime|litert|ncnn|openvino' || true
