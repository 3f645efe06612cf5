#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the whole test suite: unit tests, the YOLOv5 integration tests
# and one smoke-train on coco128 through the stock train/val/detect/export scripts.
#   scripts/test.sh --quick   the tests not marked slow (~2 min), set-up skipped where .venv exists;
#                             it prints how many it left out. CI (.ci/run) runs everything.
# Extra arguments go to pytest, e.g. scripts/test.sh -m 'not smoke'.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then
  quick=1
  shift
fi
if [ "$quick" = 1 ] && [ -x .venv/bin/python ]; then
  echo "[test] --quick: set-up skipped (.venv exists; scripts/setup.sh refreshes it)"
else
  scripts/setup.sh
fi
. .venv/bin/activate
export MNV4_REQUIRE_EDGE=${MNV4_REQUIRE_EDGE:-1}  # the TF export tests fail, not skip, without TensorFlow
export MNV4_REQUIRE_ULTRALYTICS=${MNV4_REQUIRE_ULTRALYTICS:-1}  # and the Ultralytics-package tests without it
export MNV4_REQUIRE_TEST_EXTRA=${MNV4_REQUIRE_TEST_EXTRA:-1}  # timm, onnx, onnxruntime: missing fails, never skips
export YOLOV5_DIR=${YOLOV5_DIR:-$PWD/.cache/yolov5-${YOLOV5_REF:-v7.0}}
if [ "$quick" = 1 ]; then
  exec python -m pytest -m "not slow" "$@"
fi
exec python -m pytest --durations=25 "$@"
