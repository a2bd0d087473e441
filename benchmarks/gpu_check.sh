#!/usr/bin/env bash
# One prepared check for a single-GPU machine (H100/H200 class, Python 3.12, torch preinstalled,
# no network). Finishes in under 8 minutes: install, environment, matmul ceilings, resnet50
# training throughput (synthetic in-GPU data; then a short real-data run), export, parity on
# CUDA, bench at batch 1/32/256 on CUDA, and a short table printed last.
#
#   bash benchmarks/gpu_check.sh OUTDIR        # results in OUTDIR (results.json, summary.md, ...)
#
# Without a GPU it runs its CPU-safe parts, then says it needs one and exits 3.
set -u
OUT="${1:?usage: benchmarks/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

echo "== install (pip install --no-deps -e .)"
"$PY" -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 \
  || "$PY" -m pip install --no-deps -e . >>"$OUT/pip.log" 2>&1 \
  || echo "pip install failed (see $OUT/pip.log); running from the checkout via sys.path"

echo "== modules"
"$PY" - <<'PY' | tee "$OUT/modules.txt"
import importlib.util
mods = ["torch", "torchvision", "numpy", "PIL", "click", "rich", "safetensors", "matplotlib",
        "onnx", "onnxscript", "onnxruntime", "openvino"]
missing = [m for m in mods if importlib.util.find_spec(m) is None]
print("missing:", ", ".join(missing) or "none")
if "onnx" in missing or "onnxscript" in missing:
    print("-> ONNX export/parity/bench parts are skipped; TorchScript/.pt2/eager still run")
if "safetensors" in missing:
    print("-> training to a run dir, export, parity and bench need safetensors: only the synthetic parts run")
try:
    import onnxruntime as ort
    print("onnxruntime providers:", ort.get_available_providers())
except Exception as e:
    print("onnxruntime:", type(e).__name__)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"

echo "== checks (budget 420 s)"
# A hard stop at 450 s keeps the whole script under 8 minutes even if a section hangs.
timeout 450 "$PY" benchmarks/gpu_check.py "$OUT" --budget 420 "${@:2}" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
