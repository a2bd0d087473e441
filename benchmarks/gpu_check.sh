#!/usr/bin/env bash
# The prepared check for a lent CUDA machine (one H100/H200; Python 3.12 with torch, torchvision,
# numpy, onnxruntime (CPU build) and Pillow; no network). Nothing is fetched: the other runtime
# dependencies travel as wheels in .whl/ (git-ignored; make it with `benchmarks/gpu_check.sh
# --fetch-wheels` on a machine with PyPI) and are installed offline into $TLEXPORT_SITE first.
#
#   bash benchmarks/gpu_check.sh OUTDIR [--budget S] [--only a,b] [--device cuda:N]
#   bash benchmarks/gpu_check.sh --smoke OUTDIR      # tiny sizes on the CPU: tests this script
#   bash benchmarks/gpu_check.sh --fetch-wheels      # download the cp312 wheels into .whl/
#
# On a machine lent through the device tool (15 device minutes in all, 10 a command), from the
# checkout the session started in, with .whl/ fetched there first:
#   run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=570)
# (budget 480 s + install; the hard limit of 540 s ends it before the tool's limit). Then, while
# the machine is still warm (30 s), a failed or skipped part alone, e.g.
#   run(command="bash benchmarks/gpu_check.sh $OUT --only parity,bench --budget 150", carry=[".whl"], timeout_s=240)
# reuses the data, run and export that the first call left in /tmp/tlexport-gpu-check.
#
# Sections, time limits, statuses: benchmarks/gpu_check.py. Results in OUTDIR: summary.md,
# results.json, log.txt, parity.json, bench.json, bench.md, bench.png (7 files).
# Exit codes: 0 every required section ok or n/a; 1 a required section failed, errored, timed out
# or was skipped (optional compile sections count only when they fail), or the whole check hit
# its hard limit (budget + 60 s; summary.md then says where); 2 bad usage; 3 --device cuda but
# torch sees no GPU.
set -u
cd "$(dirname "$0")/.."
REPO="$(pwd)"
PY="${PYTHON:-python3}"
WHEELS="onnx==1.23.2 onnxscript==0.7.2 onnx-ir==1.1.0 ml_dtypes==0.5.4 protobuf==7.36.2 packaging==26.2
safetensors==0.8.0 click==8.5.1 rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 Pygments==2.20.0
pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0 matplotlib==3.11.2 contourpy==1.3.3 cycler==0.12.1
fonttools==4.68.0 kiwisolver==1.5.1 pyparsing==3.3.2 python-dateutil==2.9.0.post0 six==1.17.0
PyYAML==6.0.3"

if [ "${1:-}" = "--fetch-wheels" ]; then
  # shellcheck disable=SC2086
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
fi
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT="${1:?usage: benchmarks/gpu_check.sh [--smoke] OUTDIR [gpu_check.py options]}"
shift
BUDGET=$([ ${#SMOKE[@]} -gt 0 ] && echo 2400 || echo 480)
args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = "--budget" ]; then BUDGET="${args[$((i + 1))]:-$BUDGET}"; fi
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/log.txt"
: >"$LOG"

export TLEXPORT_SITE="${TLEXPORT_SITE:-/tmp/tlexport-site}"
if ls .whl/*.whl >/dev/null 2>&1; then
  echo "== installing $(ls .whl/*.whl | wc -l) carried wheels into $TLEXPORT_SITE (offline)" | tee -a "$LOG"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TLEXPORT_SITE" \
    .whl/*.whl >>"$LOG" 2>&1 \
    || echo "wheel install failed (see log.txt): the sections that need them say so and are skipped" | tee -a "$LOG"
else
  echo "== no .whl/ folder: using the modules installed here" | tee -a "$LOG"
fi
# The checkout first (tlexport itself, never installed), then the carried wheels, then the system.
export PYTHONPATH="$REPO:$TLEXPORT_SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1
echo "== gpu_check.py (budget ${BUDGET} s, hard limit $((${BUDGET%.*} + 60)) s)" | tee -a "$LOG"
timeout -k 10 $((${BUDGET%.*} + 60)) "$PY" benchmarks/gpu_check.py "$OUT" "${SMOKE[@]}" "$@"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo "== the hard limit stopped gpu_check.py; summary.md marks the section it was in" | tee -a "$LOG"
  "$PY" benchmarks/gpu_check.py "$OUT" --summarize
  rc=1
fi
echo "== exit $rc (0 ok, 1 a section failed/was skipped, 2 usage, 3 no GPU); results in $OUT"
exit $rc
