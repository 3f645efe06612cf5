"""One real smoke-train through the stock scripts: train -> val -> detect -> export -> ONNX Runtime
-> fine-tune from best.pt, offline, on coco128 (the embedded coco8 where ../shared is absent)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_side_by_side
from yolov5_mnv4.resources import embedded_dataset

REPO = Path(__file__).resolve().parents[1]
COCO128 = Path(os.environ.get('COCO128', REPO.parent / 'shared' / 'datasets' / 'coco128'))
EMBEDDED = embedded_dataset()


@pytest.mark.smoke
def test_smoke_train_val_detect_export_on_coco128(yolov5_dir, tmp_path):
    data = COCO128 if (COCO128 / 'images' / 'train2017').is_dir() else EMBEDDED
    print(f'smoke data: {data}')
    cmd = [sys.executable, str(REPO / 'tests' / 'tools' / 'smoke.py'), '--yolov5', str(yolov5_dir),
           '--cfg', 'yolov5_mobilenetv4.yaml', '--data', str(data), '--out', str(tmp_path / 'smoke')]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'smoke: yolov5_mobilenetv4.yaml OK' in result.stdout
    assert 'onnx-vs-torch' in (tmp_path / 'smoke' / 'onnxruntime.log').read_text()


TASKS = ('seg', 'classify')


@pytest.fixture(scope='module')
def task_smokes(yolov5_dir, tmp_path_factory):
    """segment/train -> val -> predict -> export ONNX -> ONNX Runtime on polygons made from coco128's
    boxes (Conv-S-seg); classify/train --model <MNv4 detection checkpoint> --cutoff 5 -> val -> predict
    on coco128 object crops (tests/tools/make_task_data.py). Both run side by side: {task: (rc, output, folder)}."""
    data = COCO128 if (COCO128 / 'images' / 'train2017').is_dir() else EMBEDDED
    out = tmp_path_factory.mktemp('tasks')
    commands = [[sys.executable, REPO / 'tests' / 'tools' / 'smoke_tasks.py', task, '--yolov5', yolov5_dir,
                 '--data', data, '--out', out / task] for task in TASKS]
    results = run_side_by_side(commands, cwd=REPO, env=os.environ.copy(), timeout=1500)
    return {task: (rc, output, out / task) for task, (rc, output) in zip(TASKS, results)}


@pytest.mark.smoke
@pytest.mark.parametrize('task', TASKS)
def test_smoke_segment_and_classify(task_smokes, task):
    returncode, output, folder = task_smokes[task]
    print(output[-2000:])
    assert returncode == 0, output[-6000:]
    assert f'smoke-{task}: OK' in output
    if task == 'seg':
        log = (folder / 'seg-onnxruntime.log').read_text()
        assert 'onnx-vs-torch: image 1: detections' in log and 'onnx-vs-torch: image 1: prototypes' in log
    else:
        assert 'classify-model: 4 MNv4 stages + Classify(in=96, classes=3)' in (folder / 'cls-model.log').read_text()
