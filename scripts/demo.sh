#!/usr/bin/env bash
# The demo: set up, then train an MNv4-Conv-S detector briefly on the embedded 12-image dataset,
# validate it, run detection on an image, export it, and print where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
tree=${YOLOV5_DIR:-$PWD/.cache/yolov5-${YOLOV5_REF:-v7.0}}
yolov5-mnv4 demo --yolov5 "$tree" --cfg yolov5-mnv4-conv-s.yaml --epochs 3 --out "$PWD/runs/demo" "$@"
