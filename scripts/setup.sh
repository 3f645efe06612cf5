#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   .venv with torch, the plugin (editable, with its test, tflite, runtimes, qat and ultralytics extras) and
#   YOLOv5 v7.0's requirements; litert-torch in .cache/litert-torch (scripts/litert_torch_env.sh);
#   a YOLOv5 tree in .cache/yolov5-<ref> (git clone, or rebuilt from PyPI yolov5==7.0.14 offline);
#   the plugin applied to that tree.
# Environment: PYTHON (default python3), YOLOV5_REF (default v7.0), YOLOV5_DIR (use your own checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${YOLOV5_REF:-v7.0}
tree=${YOLOV5_DIR:-$PWD/.cache/yolov5-$ref}

step() { printf '\n[setup %s] %s\n' "$(date +%T)" "$*"; }
free_gb() { df -Pk . | awk 'NR==2 {printf "%.1f", $4 / 1048576}'; }
# The full environment takes ~10 GB: torch's CUDA build ~5 GB, then the plugin's extras and YOLOv5's
# requirements ~4.5 GB at their peak (TensorFlow 1.9 GB), litert-torch 0.7 GB (measured 2026-12-07).
# need GB WHAT: stop before a pip step that cannot fit (pip would fail half-way with "No space left on
# device"); MNV4_SETUP_IGNORE_DISK=1 tries anyway.
need() {
  if [ "${MNV4_SETUP_IGNORE_DISK:-0}" != 1 ] && awk -v f="$(free_gb)" -v n="$1" 'BEGIN {exit !(f < n)}'; then
    echo "[setup] error: $2 needs ~$1 GB of disk and $(df -P . | awk 'NR==2 {print $6}') has $(free_gb) GB free." >&2
    echo "[setup] Free some space (pip cache purge; old virtual environments), or set MNV4_SETUP_EXTRAS=test" >&2
    echo "[setup] for the smaller set (no TensorFlow or edge runtimes); MNV4_SETUP_IGNORE_DISK=1 tries anyway." >&2
    exit 1
  fi
}
# pip's cache would keep a second copy of every wheel it downloads: off unless the caller set PIP_NO_CACHE_DIR.
export PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-1}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
extras=${MNV4_SETUP_EXTRAS:-test,tflite,runtimes,qat,ultralytics}
extras_gb=0
if [[ ",$extras," == *,tflite,* ]] &&
   ! python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is None)' 2>/dev/null; then
  extras_gb=5
fi
if ! python -c 'import torch, torchvision' 2>/dev/null; then
  need $((5 + extras_gb)) "torch's CUDA build$([ "$extras_gb" = 0 ] || echo ' and the extras after it')"
  step "installing torch 2.14.1 + torchvision 0.29.1 (large; a few minutes)"
  pip install --progress-bar off torch==2.14.1 torchvision==0.29.1
fi
step "installing the plugin and YOLOv5 v7.0's requirements ($(free_gb) GB free)"
# setuptools<81 and numpy<2.4: YOLOv5 v7.0 imports pkg_resources and calls np.trapz.
# yolov5==7.0.14 brings every package a v7.0 tree (clone or PyPI-built) imports; onnxscript is
# what torch>=2.9's default ONNX exporter needs under v7.0's export.py. The tflite extra (TensorFlow
# 2.21, LiteRT) is for the TF export tests, runtimes (pnnx + ncnn, MNN, ExecuTorch) for the
# NCNN/MNN/ExecuTorch ones: MNV4_SETUP_EXTRAS=test leaves both out.
# The Ultralytics package (a second host) comes with yolov5==7.0.14 too; its extra pins the tested range.
[ "$extras_gb" = 0 ] || need "$extras_gb" "the plugin's extras (TensorFlow, the edge runtimes) with litert-torch"
pip install --progress-bar off -q -e ".[$extras]" 'setuptools<81' 'numpy<2.4' 'yolov5==7.0.14' ipython onnxscript
if [[ ",$extras," == *,ultralytics,* ]] && [ ! -d .cache/ultralytics-8.3/ultralytics ]; then
  # the package's older generation (its DDP worker script imports the trainer class instead of unpickling
  # state), beside the installed 8.4, for tests/test_ultralytics_cli.py: on PYTHONPATH only in that test
  step "getting ultralytics 8.3.100 into .cache/ultralytics-8.3 (the older DDP worker script)"
  pip install --progress-bar off -q --no-deps --target .cache/ultralytics-8.3 'ultralytics==8.3.100'
fi
if [[ ",$extras," == *,tflite,* ]]; then
  step "installing litert-torch for the Ultralytics package's LiteRT export ($(free_gb) GB free)"
  scripts/litert_torch_env.sh
fi
step "getting YOLOv5 $ref into $tree"
python scripts/get_yolov5.py --ref "$ref" --dest "$tree"
step "applying the plugin"
python -m yolov5_mnv4 apply "$tree"
step "done: YOLOv5 at $tree ($(free_gb) GB free)"
