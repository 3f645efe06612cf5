"""Checkpoints run on a YOLOv5 tree that was never patched, with the plugin merely importable: the
torch.hub 'custom' route (a fresh clone is unpatched), detect.py, val.py, export.py and
DetectMultiBackend, with the MNv4 stages fused and the same results as on the patched tree. Old
checkpoints (channels-last weights, the golden files) included.
"""
import importlib.util
import json
import lzma
import os
import subprocess
import sys

import pytest
import torch

from helpers import pristine_copy, run_side_by_side, val_rows, within
from make_golden import GOLDEN, stored_output
from smoke import COMPARE_ONNX
from yolov5_mnv4.cli.demo import prepare_data
from yolov5_mnv4.resources import embedded_dataset

IMG = 160
TRAINED = GOLDEN.parent / 'mnv4-conv-s-relu-coco128-160.pt'  # 150 epochs at 160 px; mAP50 0.004: not yet a detector


@pytest.fixture(scope='module')
def unpatched(yolov5_dir, tmp_path_factory):
    """A copy of the YOLOv5 tree with the plugin reverted: as pristine as a fresh clone."""
    return pristine_copy(yolov5_dir, tmp_path_factory.mktemp('unpatched') / 'yolov5')


def run(cwd, env, *args, timeout=900):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def data(yolov5_dir, tmp_path_factory):
    return prepare_data(embedded_dataset(), tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def trained(yolov5_dir, offline, data, tmp_path_factory):
    """best.pt of one epoch of the stock train.py on the patched tree."""
    work = tmp_path_factory.mktemp('train')
    run(yolov5_dir, offline, 'train.py', '--cfg', 'yolov5-mnv4-conv-s.yaml', '--weights', '', '--data', data[0],
        '--epochs', 1, '--img', IMG, '--batch-size', 8, '--workers', 0, '--noplots', '--device', 'cpu',
        '--project', work, '--name', 'train')
    return work / 'train' / 'weights' / 'best.pt'


def test_checkpoints_hold_weights_any_yolov5_can_fuse(yolo, trained):
    """YOLOv5's fuse_conv_and_bn `.view()`s conv weights: their memory must be in the default order.
    1x1 and depthwise kernels may carry channels-last strides, which describe that same memory."""
    model = torch.load(trained, map_location='cpu', weights_only=False)['model']
    weights = [(name, p) for name, p in model.named_parameters() if p.ndim == 4]
    assert weights and all(p.is_contiguous() for _, p in weights), [n for n, p in weights if not p.is_contiguous()]
    full_kernels = [p for _, p in weights if p.shape[1] > 1 and p.shape[2:] != (1, 1)]
    assert full_kernels and all(not p.is_contiguous(memory_format=torch.channels_last) for p in full_kernels)
    # The strides DDP compares with the gradients' (tests/test_training_paths.py: no stride warnings).
    pointwise = [p for _, p in weights if p.shape[2:] == (1, 1) and p.shape[1] > 1]
    assert pointwise and all(p.stride() == torch.empty_like(p, memory_format=torch.channels_last).stride()
                             for p in pointwise)


HUB = '''
import json, sys, torch
tree, weights, images = sys.argv[1], sys.argv[2], sys.argv[3:]
model = torch.hub.load(tree, 'custom', path=weights, source='local', verbose=False)
detector = model.model.model if type(model).__name__ == 'AutoShape' else model
norms = sum(isinstance(m, torch.nn.BatchNorm2d) for layer in detector.model[:5] for m in layer.modules())
model.conf = 0.01
found = [d.tolist() for d in model(images, size=160).xyxy] if type(model).__name__ == 'AutoShape' else None
print('HUB', json.dumps({'type': type(model).__name__, 'norms': norms, 'detections': found}))
'''


def hub(tree, env, weights, images, cwd):
    out = run(cwd, env, '-c', HUB, tree, weights, *images)
    return json.loads(next(line[4:] for line in out.splitlines() if line.startswith('HUB ')))


def same_detections(a, b):
    """Per image, the same boxes, scores and classes (to 1e-3 relative)."""
    assert [len(x) for x in a] == [len(x) for x in b], (a, b)
    rows = [(row_a, row_b) for image_a, image_b in zip(a, b) for row_a, row_b in zip(image_a, image_b)]
    return all(abs(x - y) <= 1e-3 * max(1.0, abs(y)) for row_a, row_b in rows for x, y in zip(row_a, row_b))


@pytest.mark.parametrize('which', ['trained-150-epochs', 'one-epoch'])
def test_torch_hub_returns_autoshape_with_the_patched_trees_detections(which, trained, unpatched, yolov5_dir, offline,
                                                                       data, tmp_path):
    weights = TRAINED if which == 'trained-150-epochs' else trained
    images = sorted(data[1].parent.glob('*.jpg'))
    got = hub(unpatched, offline, weights, images, tmp_path)
    assert got['type'] == 'AutoShape', got
    assert got['norms'] == 0, f'{got["norms"]} BatchNorms of the MNv4 stages left unfolded'
    want = hub(yolov5_dir, offline, weights, images, tmp_path)
    assert want['type'] == 'AutoShape' and same_detections(got['detections'], want['detections'])
    if which == 'trained-150-epochs':
        assert sum(map(len, got['detections'])), 'the trained model should find something on COCO images'
    print(f'{which}: {sum(map(len, got["detections"]))} detections on {len(images)} images, equal on the unpatched '
          f'and the patched tree')


def test_stock_detect_val_export_on_the_unpatched_tree(trained, unpatched, yolov5_dir, offline, data, tmp_path):
    data_yaml, image = data

    copy = tmp_path / 'best.pt'
    copy.write_bytes(trained.read_bytes())
    formats = ['torchscript', 'onnx'] + (['tflite'] if _has_tensorflow() else [])
    common = ['--img', IMG, '--device', 'cpu']
    runs = {  # (tree, arguments): val.py on both trees, detect.py and export.py, side by side
        # the 150-epoch model: a 1-epoch one detects nothing above val.py's 0.001, so its rows are all zero
        'val unpatched': (unpatched, ['val.py', '--weights', TRAINED, '--data', data_yaml, *common, '--save-txt',
                                      '--save-conf', '--project', tmp_path, '--name', 'val-unpatched']),
        'val patched': (yolov5_dir, ['val.py', '--weights', TRAINED, '--data', data_yaml, *common, '--save-txt',
                                     '--save-conf', '--project', tmp_path, '--name', 'val-patched']),
        'detect': (unpatched, ['detect.py', '--weights', trained, '--source', image, *common, '--project', tmp_path,
                               '--name', 'detect', '--exist-ok']),
        'export': (unpatched, ['export.py', '--weights', copy, '--include', *formats, *common]),
    }
    results = run_side_by_side([[sys.executable, *args] for _, args in runs.values()],
                               [tree for tree, _ in runs.values()], offline)
    outputs = {}
    for name, (rc, log) in zip(runs, results):
        assert rc == 0, f'{name}:\n{log[-4000:]}'
        outputs[name] = log
    rows = {name: val_rows(outputs[name]) for name in ('val unpatched', 'val patched')}
    assert all(rows.values()), f'val.py printed no metrics row: {outputs["val unpatched"][-3000:]}'
    assert rows['val unpatched'][0] == rows['val patched'][0]
    detections = {name: {f.name: f.read_text() for f in (tmp_path / name / 'labels').glob('*.txt')}
                  for name in ('val-unpatched', 'val-patched')}
    count = sum(len(text.splitlines()) for text in detections['val-patched'].values())
    print(f'val.py on both trees: {count} detections (class, box, confidence) on {len(detections["val-patched"])} '
          f'images, written alike; {rows["val patched"][0]}')
    assert count >= 10 and detections['val-unpatched'] == detections['val-patched']
    assert (tmp_path / 'detect' / image.name).is_file()
    assert copy.with_suffix('.torchscript').is_file() and copy.with_suffix('.onnx').is_file()
    run(unpatched, offline, '-c', COMPARE_ONNX, copy, IMG)
    if 'tflite' in formats:
        tflite = tmp_path / 'best-fp16.tflite'
        assert tflite.is_file()
        run(unpatched, offline, 'detect.py', '--weights', tflite, '--source', image, '--img', IMG, '--device', 'cpu',
            '--project', tmp_path, '--name', 'detect-tflite', '--exist-ok')
    print(f'unpatched tree: val.py, detect.py and export.py ({", ".join(formats)}) ran')


def _has_tensorflow():
    if importlib.util.find_spec('tensorflow') is None:
        assert not os.environ.get('MNV4_REQUIRE_EDGE'), 'MNV4_REQUIRE_EDGE is set but TensorFlow is missing'
        print('TensorFlow is not installed: the unpatched-tree export skips tflite')
        return False
    return True


GOLDEN_LOAD = '''
import sys, torch
sys.path.insert(0, sys.argv[1])
from models.experimental import attempt_load
from models.common import DetectMultiBackend
from make_golden import golden_input
model = attempt_load(sys.argv[2], device='cpu', fuse=True).eval()
norms = sum(isinstance(m, torch.nn.BatchNorm2d) for layer in model.model[:5] for m in layer.modules())
backend = DetectMultiBackend(sys.argv[2], device=torch.device('cpu'), fuse=True)
with torch.no_grad():
    torch.save({'attempt_load': model(golden_input())[0], 'backend': backend(golden_input())[0], 'norms': norms},
               sys.argv[3])
'''


@pytest.mark.parametrize('key', ['conv-s', 'hybrid-m'])
def test_golden_checkpoints_load_and_fuse_on_the_unpatched_tree(key, unpatched, offline, tmp_path):
    """Written before weights kept their memory order (channels-last 3x3 kernels): they fuse anyway,
    because unpickling our stages registers the plugin into the tree that loads them."""
    weights = tmp_path / f'{key}.pt'
    weights.write_bytes(lzma.decompress((GOLDEN / f'mnv4-{key}-nc3.pt.xz').read_bytes()))
    tools = str(GOLDEN.parents[1] / 'tools')
    run(tmp_path, {**offline, 'PYTHONPATH': tools}, '-c', GOLDEN_LOAD, unpatched, weights, tmp_path / 'out.pt')
    out = torch.load(tmp_path / 'out.pt', weights_only=True)
    assert out['norms'] == (4 if key == 'hybrid-m' else 0)  # only kv-stride-2 attention inputs stay
    assert within(out['attempt_load'], stored_output(key)) and within(out['backend'], stored_output(key))
