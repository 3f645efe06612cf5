#!/usr/bin/env bash
# Set up everything the demo and the tests need, idempotently:
#   .venv with torch, the plugin (editable, with its test, tflite, runtimes and ultralytics extras) and
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
# The full environment takes ~9.5 GB (torch's CUDA build 5.5 GB, TensorFlow 1.9 GB). pip's cache would
# keep a second copy of every wheel it downloads: off unless the caller set PIP_NO_CACHE_DIR.
export PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-1}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
if ! python -c 'import torch, torchvision' 2>/dev/null; then
  if awk -v f="$(free_gb)" 'BEGIN {exit !(f < 10)}'; then
    echo "[setup] warning: $(free_gb) GB free here; the environment needs ~9.5 GB (MNV4_SETUP_EXTRAS=test: ~7 GB)" >&2
  fi
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
extras=${MNV4_SETUP_EXTRAS:-test,tflite,runtimes,ultralytics}
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
