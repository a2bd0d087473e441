#!/bin/sh
# The arm64 root's Python (qemu-user through binfmt_misc), for `--on 'cmd:sh benchmarks/arm64_python.sh ROOT'`.
# /proc, /sys and /dev are bound into the root inside a private mount namespace (unshare), so the
# agent sees the CPU (and qemu shows itself: an aarch64 machine on an x86 /proc/cpuinfo) and the
# mounts vanish with the process: nothing changes on the host. Needs root (chroot, mount).
ROOT=${1:?usage: arm64_python.sh ROOT [python args]}
shift
exec unshare --mount --propagation private sh -c '
r=$1; shift
for d in proc sys dev; do mount --bind "/$d" "$r/$d" || exit 1; done
exec chroot "$r" /opt/rt/bin/python "$@"' sh "$ROOT" "$@"
