#!/bin/sh
# The arm64 root's Python (qemu-user through binfmt_misc), for `--on 'cmd:sh benchmarks/arm64_python.sh ROOT'`.
# /proc and /dev are bound into the root inside a private mount namespace (unshare), so the agent
# sees the CPU (and qemu shows itself: an aarch64 machine on an x86 /proc/cpuinfo) and the mounts
# vanish with the process: nothing changes on the host. /sys is left out on purpose: onnxruntime's
# aarch64 cpuinfo reads the x86 host's /sys/devices/system/cpu and segfaults under qemu (measured,
# onnxruntime 1.32); without it, it warns "cpuinfo_initialize failed" and runs. Needs root.
ROOT=${1:?usage: arm64_python.sh ROOT [python args]}
shift
exec unshare --mount --propagation private sh -c '
r=$1; shift
for d in proc dev; do mountpoint -q "$r/$d" || mount --bind "/$d" "$r/$d" || exit 1; done
if mountpoint -q "$r/sys"; then umount -l "$r/sys" || exit 1; fi  # in this namespace only
exec chroot "$r" /opt/rt/bin/python "$@"' sh "$ROOT" "$@"
