#!/usr/bin/env bash
# The environment that Rockchip's rknn-toolkit2 needs, apart from the project's: it pins torch <= 2.4,
# numpy <= 1.26, onnx <= 1.18 and protobuf <= 4.25, which the project's own environment cannot hold.
# Python 3.11 (the toolkit ships wheels for 3.6 to 3.12). Its torch is imported at the toolkit's import
# time even for ONNX models, so it is installed too (the CPU part is enough; PyPI's 2.4.0 wheel is used).
#
#     scripts/rknn_env.sh [ENV_DIR]          # default .cache/rknn-env
#     .cache/rknn-env/bin/python scripts/rknn_check.py convert --work runs/rknn
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-.cache/rknn-env}
PYTHON=${PYTHON:-python3.11}
TOOLKIT=${RKNN_TOOLKIT_VERSION:-2.5.0}
if ! command -v "$PYTHON" >/dev/null; then
    echo "rknn_env: $PYTHON not found; rknn-toolkit2 $TOOLKIT has wheels for Python 3.6-3.12: PYTHON=python3.x $0" >&2
    exit 1
fi
if [ ! -x "$ENV/bin/python" ]; then
    echo "rknn_env: creating $ENV"
    "$PYTHON" -m venv "$ENV"
fi
echo "rknn_env: installing rknn-toolkit2 $TOOLKIT and its pins (torch 2.4.0 is large: a few minutes)"
"$ENV/bin/python" -m pip install -q --upgrade "pip<25"
"$ENV/bin/python" -m pip install -q "rknn-toolkit2==$TOOLKIT" "torch==2.4.0" opencv-python-headless pyyaml
"$ENV/bin/python" -c "from rknn.api import RKNN; import torch, numpy, onnx; print('rknn_env: ready:', torch.__version__, numpy.__version__, onnx.__version__)"
