#!/usr/bin/env bash
# The torch range the plugin declares, tested: for each torch version given (default: the oldest we
# declare and the newest on the package index), make .cache/compat-torch-<version> (a venv with that
# torch, the torchvision that exists for it, or none where none does, and the plugin), then run the core
# checks there: build every variant and fuse it (tests/test_model.py), timm equality where timm installs
# (tests/test_timm_equivalence.py), the Ultralytics build (tests/test_ultralytics.py, config builds only),
# and with torchvision apply + one YOLOv5 smoke epoch (tests/test_smoke.py). Prints one line per version
# and writes the table to runs/compat/compat.md. Several GB per environment; about 10-15 min each on 2 CPUs.
#
#   scripts/compat.sh                         # torch 2.1.2 (+ torchvision 0.16.2) and 2.15.0 (no torchvision)
#   scripts/compat.sh 2.4.1:0.19.1 2.9.1:0.24.1
set -euo pipefail
cd "$(dirname "$0")/.."
# A machine may cap torch in its pip configuration (a constraints file): the versions tested here are
# the point, so this script's installs ignore such a cap (an empty constraints file; its environments only).
mkdir -p runs/compat
: > runs/compat/no-constraints.txt
export PIP_CONSTRAINT=$PWD/runs/compat/no-constraints.txt
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.1.2:0.16.2 2.15.0:)
python=${PYTHON:-python3}
mkdir -p runs/compat
table=runs/compat/compat.md
printf '| torch | torchvision | Python | result |\n|---|---|---|---|\n' > "$table"
for spec in "${versions[@]}"; do
  torch=${spec%%:*}; vision=${spec#*:}; [ "$vision" != "$spec" ] || vision=
  env=.cache/compat-torch-$torch
  log=runs/compat/torch-$torch.log
  echo "[compat] torch $torch, torchvision ${vision:-none}: $env (log: $log)"
  if [ ! -x "$env/bin/python" ]; then
    $python -m venv "$env"
    "$env/bin/pip" install -q --progress-bar off --upgrade pip 'setuptools<81' wheel >> "$log" 2>&1
  fi
  numpy='numpy'; case $torch in 2.[0-2].*) numpy='numpy<2';; esac  # torch < 2.3 was built against numpy 1
  "$env/bin/pip" install -q --progress-bar off "torch==$torch" ${vision:+"torchvision==$vision"} "$numpy" >> "$log" 2>&1
  extras=test; [ -n "$vision" ] && extras=test,ultralytics
  # the plugin and its test extra; timm and ultralytics need torchvision (skipped without it)
  if [ -n "$vision" ]; then
    "$env/bin/pip" install -q --progress-bar off -e ".[$extras]" "torch==$torch" "torchvision==$vision" "$numpy" \
      'setuptools<81' 'yolov5==7.0.14' >> "$log" 2>&1
  else
    "$env/bin/pip" install -q --progress-bar off -e . "torch==$torch" "$numpy" pytest onnx onnxruntime onnxscript >> "$log" 2>&1
  fi
  tests=(tests/test_model.py)
  if [ -n "$vision" ]; then
    tests+=(tests/test_timm_equivalence.py "tests/test_ultralytics.py::test_shipped_config_builds_by_name_and_fuses_every_norm"
            tests/test_smoke.py)
  fi
  pyver=$("$env/bin/python" -c 'import platform; print(platform.python_version())')
  set +e
  YOLOV5_DIR=${YOLOV5_DIR:-$PWD/.cache/yolov5-v7.0} "$env/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}" >> "$log" 2>&1
  rc=$?
  set -e
  summary=$(grep -E '^[0-9]+ (passed|failed)|passed|failed|error' "$log" | tail -1)
  echo "[compat] torch $torch: ${summary:-rc $rc}"
  printf '| %s | %s | %s | %s |\n' "$torch" "${vision:-none}" "$pyver" "${summary:-rc $rc}" >> "$table"
done
cat "$table"
