#!/usr/bin/env bash
# What the Ultralytics package's LiteRT exporter (`format=litert`, fp32 and int8) imports, in a folder
# of its own beside the project's environment: litert-torch asks for transformers, kagglehub,
# litert-lm-builder and more that the conversion never imports, and transformers' huggingface_hub
# conflicts with the PyPI yolov5's pin. So only the modules the export imports are installed, with
# --no-deps, into DIR (~700 MB); the rest (torch, torchao, ai-edge-litert, absl, scipy, ml_dtypes)
# comes from the project's environment. Put DIR on PYTHONPATH where you export:
#
#     scripts/litert_torch_env.sh [DIR]                       # default .cache/litert-torch
#     PYTHONPATH=.cache/litert-torch yolov5-mnv4 yolo export model=best.pt format=litert
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.cache/litert-torch}
PY=${PYTHON:-.venv/bin/python}
# Versions that worked together with torch 2.14.1 and ai-edge-litert 2.3.0 on Python 3.11 (2026-12-01;
# jax 0.11 and later need Python 3.12).
PACKAGES=(litert-torch==0.10.0 ai-edge-quantizer==0.10.0 litert-converter==0.5.0 jax==0.10.2
          jaxlib==0.10.2 jaxtyping multipledispatch wadler_lindig immutabledict opt_einsum)
if PYTHONPATH="$DIR" "$PY" -c 'import litert_torch' 2>/dev/null; then
    echo "litert_torch_env: $DIR is ready"
    exit 0
fi
# What litert-torch imports from the environment itself (the tflite and runtimes extras bring them)
if ! "$PY" -c 'import torchao, scipy, absl, ai_edge_litert' 2>/dev/null; then
    echo "litert_torch_env: adding torchao, scipy, absl-py and ai-edge-litert to the environment of $PY"
    "$PY" -m pip install --progress-bar off -q 'torchao>=0.17' scipy absl-py 'ai-edge-litert>=2.3,<2.4'
fi
echo "litert_torch_env: installing litert-torch into $DIR (no dependencies beyond the conversion's own)"
"$PY" -m pip install --progress-bar off -q --no-deps --upgrade --target "$DIR" "${PACKAGES[@]}"
PYTHONPATH="$DIR" "$PY" -c 'import litert_torch, ai_edge_quantizer, jax; print("litert_torch_env: ready, jax", jax.__version__)'
