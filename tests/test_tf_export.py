"""TensorFlow exports of MNv4 detectors: the Keras stages, and the stock export.py's SavedModel,
GraphDef, TFLite (fp16, int8) and EdgeTPU input, with parity against the fused PyTorch model.

Needs the `edge` extra (tensorflow-cpu, ai-edge-litert). Without it these tests skip, saying so,
except where MNV4_REQUIRE_EDGE=1 (set by scripts/test.sh, so CI), where that is a failure.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import perturb_, save_detector_checkpoint
from yolov5_mnv4.integration import is_registered

REPO = Path(__file__).resolve().parents[1]
COCO128 = Path(os.environ.get('COCO128', REPO.parent / 'shared' / 'datasets' / 'coco128'))
# What the repository ships for the int8 test: coco128's first 32 train and 64 val images, long side
# 192 (tests/data/README.md). With ../shared beside the checkout the test takes all of coco128.
COCO64 = REPO / 'tests' / 'data' / 'coco64'


def coco():
    """coco128 where ../shared has it (a bigger test), else the shipped subset (enough to pass)."""
    return COCO128 if (COCO128 / 'images' / 'train2017').is_dir() else COCO64
IMG = 160
pytestmark = pytest.mark.edge
PARITY_CONFIGS = ['yolov5-mnv4-conv-s.yaml', 'yolov5-mnv4-hybrid-m.yaml', 'yolov5-mnv4-conv-s-relu.yaml']


def _tensorflow():
    from yolov5_mnv4.edge import import_tensorflow
    try:
        tf = import_tensorflow()
    except ImportError as err:
        if os.environ.get('MNV4_REQUIRE_EDGE'):
            pytest.fail(f'MNV4_REQUIRE_EDGE is set but TensorFlow is missing ({err}): pip install -e .[edge]')
        pytest.skip(f'TensorFlow is not installed ({err}): pip install -e .[edge] to run the TF export tests')
    return tf


@pytest.fixture(scope='module')
def tf():
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    return _tensorflow()


def _real_images(n, size=IMG):
    import cv2
    files = sorted((coco() / 'images' / 'val2017').glob('*.jpg'))[:n]
    return [cv2.resize(cv2.imread(str(f)), (size, size))[:, :, ::-1].astype(np.float32) / 255 for f in files]


def assert_close(got, ref, what, rtol=1e-3, atol=1e-4):
    """|got - ref| <= rtol * |ref| + atol everywhere; returns the worst relative error seen."""
    err = np.abs(got - ref)
    worst = float((err / (np.abs(ref) + atol / rtol)).max())
    bad = err > rtol * np.abs(ref) + atol
    assert not bad.any(), (f'{what}: {bad.sum()} of {bad.size} values off by more than {rtol} relative '
                           f'(max abs {err.max():.3g}, worst relative {worst:.3g})')
    return worst


# --- the Keras stages, every variant, without YOLOv5 --------------------------------------------

@pytest.mark.parametrize('variant', ['conv_small', 'conv_medium', 'conv_large', 'hybrid_medium', 'hybrid_large'])
def test_keras_stages_equal_the_torch_stages(tf, variant):
    from yolov5_mnv4.integration import MobileNetV4Stage
    from yolov5_mnv4.specs import get_variant
    from yolov5_mnv4.tf_layers import TFMobileNetV4Stage

    widths = get_variant(variant).stage_out_channels()
    torch.manual_seed(0)
    stages = [MobileNetV4Stage(3 if i == 0 else widths[i - 1], c, variant, i) for i, c in enumerate(widths)]
    for stage in stages:
        perturb_(stage, seed=stage.index).eval()
    x = torch.rand(1, 3, 96, 160)  # /32 is 3x5: odd sizes where TF's 'same' padding would differ
    keras_x = tf.constant(x.permute(0, 2, 3, 1).numpy())
    for stage in stages:  # unfused on purpose: the Keras stage fuses a copy and leaves this one alone
        keras_stage = TFMobileNetV4Stage(None, None, variant, stage.index, w=stage)
        with torch.no_grad():
            x = stage(x)
        keras_x = keras_stage(keras_x)
        ref = x.permute(0, 2, 3, 1).numpy()
        scale = np.abs(ref).max()
        err = np.abs(keras_x.numpy() - ref).max()
        assert err <= 1e-4 * scale, f'{variant} stage {stage.index}: max abs {err:.3g} at scale {scale:.3g}'
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in stages[1].modules()), 'the torch stage was fused in place'


def test_keras_stage_refuses_another_stage(tf):
    from yolov5_mnv4.integration import MobileNetV4Stage
    from yolov5_mnv4.tf_layers import TFMobileNetV4Stage

    stage = MobileNetV4Stage(3, 32, 'conv_small', 0)
    with pytest.raises(ValueError, match=r"TFMobileNetV4Stage\('conv_medium', 0\) got the PyTorch stage"):
        TFMobileNetV4Stage(3, 32, 'conv_medium', 0, w=stage)


def test_models_tf_is_registered_when_imported_after_models_yolo(tf, yolo):
    import torch.nn as nn

    import models.tf
    assert is_registered(models.tf)
    assert models.tf.TFMobileNetV4Stage.__module__ == 'yolov5_mnv4.tf_layers'
    relu = models.tf.activations(nn.ReLU())
    assert relu is tf.nn.relu
    with pytest.raises(Exception, match='no matching TensorFlow activation'):
        models.tf.activations(nn.Tanh())  # anything else still goes to YOLOv5's own mapping


def test_pypi_yolov5_package_registers_models_tf(tf, offline, tmp_path):
    """The PyPI `yolov5` layout: `import yolov5_mnv4`, then yolov5.models.tf builds our Keras model."""
    code = f'''
import numpy as np, torch, yolov5_mnv4
from yolov5.models.yolo import DetectionModel
from yolov5_mnv4.edge import import_tensorflow, to_torch_layout
import_tensorflow()
import yolov5.models.tf as tfm
from yolov5_mnv4.integration import is_registered
assert is_registered(tfm)
m = DetectionModel({str(REPO / 'models' / 'yolov5-mnv4-hybrid-m.yaml')!r}).eval().fuse()
m.model[-1].inplace = False
x = torch.rand(1, 3, 64, 64)
with torch.no_grad():
    ref = m(x)[0].numpy()
    keras_model = tfm.TFModel(cfg=m.yaml, model=m, nc=80, imgsz=(64, 64))
got = keras_model.predict(x.permute(0, 2, 3, 1).numpy())
got = to_torch_layout((got[0] if isinstance(got, (list, tuple)) else got).numpy(), m.stride, 3, (64, 64))
print('max abs', np.abs(got - ref).max(), 'scale', np.abs(ref).max())
assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
'''
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env={**os.environ, **offline},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


# --- the stock export.py -----------------------------------------------------------------------

def run_yolov5(yolov5_dir, offline, script, *args, env=None, timeout=900):
    result = subprocess.run([sys.executable, script, *map(str, args)], cwd=yolov5_dir, capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, **offline, **(env or {})})
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope='module', params=PARITY_CONFIGS)
def exported(request, tf, yolo, yolov5_dir, offline, tmp_path_factory):
    """A perturbed (so that no BN or bias hides) detector, through `export.py --include saved_model pb tflite`."""
    cfg = request.param
    weights = tmp_path_factory.mktemp(cfg.replace('.yaml', '')) / 'model.pt'
    save_detector_checkpoint(yolo, yolov5_dir / 'models' / 'mnv4' / cfg, weights)
    rc, log = run_yolov5(yolov5_dir, offline, 'export.py', '--weights', weights, '--include', 'saved_model', 'pb',
                         'tflite', '--img', IMG, '--device', 'cpu')
    assert rc == 0 and 'export failure' not in log, log[-4000:]
    from models.experimental import attempt_load
    model = attempt_load(weights, device='cpu', fuse=True).eval()
    return cfg, weights, model


def torch_outputs(model, images):
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(im).permute(2, 0, 1)[None].contiguous())[0].numpy()
                               for im in images])


def test_export_writes_every_tf_format(exported):
    _, weights, _ = exported
    stem = weights.with_suffix('')
    for path in (Path(f'{stem}_saved_model') / 'saved_model.pb', weights.with_suffix('.pb'),
                 Path(f'{stem}-fp16.tflite')):
        assert path.is_file() and path.stat().st_size > 100_000, path


def test_savedmodel_and_tflite_fp32_equal_pytorch(exported, tmp_path):
    from yolov5_mnv4.edge import SavedModel, TFLiteModel, fp32_tflite_from_saved_model, to_torch_layout

    cfg, weights, model = exported
    detect = model.model[-1]
    images = [np.random.default_rng(0).random((IMG, IMG, 3), dtype=np.float32)] + _real_images(2)
    ref = torch_outputs(model, images)
    saved_model = Path(f'{weights.with_suffix("")}_saved_model')
    runners = {'SavedModel': SavedModel(saved_model),
               'TFLite fp32': TFLiteModel(fp32_tflite_from_saved_model(saved_model, tmp_path / 'fp32.tflite'))}
    for name, run in runners.items():
        got = np.concatenate([to_torch_layout(run(im[None]), detect.stride, detect.na, (IMG, IMG)) for im in images])
        worst = assert_close(got, ref, f'{cfg} {name}')
        print(f'{cfg} {name} vs fused PyTorch, random + 2 real images: worst relative error {worst:.2e}')


def test_stock_fp16_tflite_is_close_to_pytorch(exported):
    from yolov5_mnv4.edge import TFLiteModel, to_torch_layout

    cfg, weights, model = exported
    detect = model.model[-1]
    images = _real_images(2)
    ref = torch_outputs(model, images)
    run = TFLiteModel(f'{weights.with_suffix("")}-fp16.tflite')
    got = np.concatenate([to_torch_layout(run(im[None]), detect.stride, detect.na, (IMG, IMG)) for im in images])
    err = np.abs(got - ref)
    print(f'{cfg} TFLite fp16 weights vs PyTorch: max abs xywh {err[..., :4].max():.3g} px, '
          f'scores {err[..., 4:].max():.3g}')
    assert err[..., :4].max() < 1.0 and err[..., 4:].max() < 0.02, 'fp16 weights moved the outputs too far'


@pytest.mark.parametrize('exported', PARITY_CONFIGS[:1], indirect=True)
def test_nms_and_agnostic_nms_exports_run(exported, yolov5_dir, offline, tmp_path):
    """--nms / --agnostic-nms put TF's NMS into the SavedModel and TFLite, as for stock models.

    YOLOv5 calls TF ops on Keras symbols there, which Keras 3 refuses (stock yolov5n too): these
    exports need Keras 2, tf-keras with TF_USE_LEGACY_KERAS=1; our layers run on both Kerases."""
    from yolov5_mnv4.edge import SavedModel

    _, weights, _ = exported
    for flag in ('--nms', '--agnostic-nms'):
        copy = tmp_path / flag.strip('-') / 'model.pt'
        copy.parent.mkdir()
        copy.write_bytes(weights.read_bytes())
        rc, log = run_yolov5(yolov5_dir, offline, 'export.py', '--weights', copy, '--include', 'saved_model',
                             'tflite', flag, '--img', IMG, '--device', 'cpu', env={'TF_USE_LEGACY_KERAS': '1'})
        assert rc == 0 and 'export failure' not in log, log[-4000:]
        assert Path(f'{copy.with_suffix("")}-fp16.tflite').is_file()
        outputs = SavedModel(f'{copy.with_suffix("")}_saved_model').model(np.zeros((1, IMG, IMG, 3), np.float32))
        boxes, scores, classes, count = [t.numpy() for t in outputs[:4]]
        assert boxes.shape == (1, 100, 4) and scores.shape == classes.shape == (1, 100) and count.shape == (1,)


# --- int8, on a trained model: detections, the stock val.py / detect.py, EdgeTPU's input ---------

TRAINED = REPO / 'tests' / 'data' / 'mnv4-conv-s-relu-coco128-160.pt'  # how it was made: tests/data/README.md


@pytest.fixture(scope='module')
def int8_export(tf, yolo, yolov5_dir, offline, tmp_path_factory):
    """`export.py --include saved_model tflite edgetpu --int8` of the trained Conv-S-ReLU detector,
    calibrated on coco128 train; without edgetpu_compiler (none here), EdgeTPU's step must fail
    after the int8 model is written. PATH is emptied so that YOLOv5's attempt to install the compiler
    (curl, apt-get) cannot touch this machine."""
    from yolov5_mnv4.demo import prepare_data
    work = tmp_path_factory.mktemp('int8')
    data_yaml, _ = prepare_data(coco(), yolov5_dir, work)
    weights = work / 'model.pt'
    weights.write_bytes(TRAINED.read_bytes())
    empty_path = work / 'no-tools'
    empty_path.mkdir()
    rc, log = run_yolov5(yolov5_dir, offline, 'export.py', '--weights', weights, '--include', 'saved_model', 'tflite',
                         'edgetpu', '--int8', '--data', data_yaml, '--img', IMG, '--device', 'cpu',
                         env={'PATH': str(empty_path)})
    assert rc == 0, log[-4000:]
    return weights, data_yaml, log


def nms(pred, conf=0.1):
    from utils.general import non_max_suppression
    return non_max_suppression(torch.from_numpy(np.ascontiguousarray(pred)), conf, 0.45)[0]


def matched(reference, other, iou=0.5):
    """How many reference boxes an `other` box of the same class overlaps by IoU >= iou, one to one."""
    from torchvision.ops import box_iou
    if not len(reference) or not len(other):
        return 0
    overlaps = box_iou(reference[:, :4], other[:, :4])
    overlaps[reference[:, 5:6] != other[:, 5].view(1, -1)] = 0
    used, hits = set(), 0
    for i in range(len(reference)):  # reference boxes come sorted by confidence
        for j in overlaps[i].argsort(descending=True).tolist():
            if overlaps[i, j] < iou:
                break
            if j not in used:
                used.add(j)
                hits += 1
                break
    return hits


def test_int8_tflite_detections_agree_with_fp32(int8_export):
    from models.experimental import attempt_load
    from yolov5_mnv4.edge import TFLiteModel, to_torch_layout

    weights, _, log = int8_export
    assert 'TensorFlow Lite: export success' in log.replace('\x1b[34m\x1b[1m', '').replace('\x1b[0m', '')
    model = attempt_load(weights, device='cpu', fuse=True).eval()
    detect = model.model[-1]
    int8 = TFLiteModel(f'{weights.with_suffix("")}-int8.tflite')
    assert int8.quantized, 'the int8 model should take uint8 images'
    images = _real_images(64)
    fp32_boxes = int8_boxes = hits = 0
    score_errors = []
    for im, ref in zip(images, torch_outputs(model, images)[:, None]):
        got = to_torch_layout(int8(im[None]), detect.stride, detect.na, (IMG, IMG))
        score_errors.append(np.abs(got[..., 4:] - ref[..., 4:]).mean())
        ref_det, got_det = nms(ref), nms(got)
        fp32_boxes, int8_boxes, hits = fp32_boxes + len(ref_det), int8_boxes + len(got_det), hits + matched(ref_det, got_det)
    recall, precision = hits / max(fp32_boxes, 1), hits / max(int8_boxes, 1)
    print(f'int8 TFLite vs fp32 PyTorch, {len(images)} val images of {coco().name} at {IMG}, conf 0.1, same class, '
          f'IoU >= 0.5: recall {recall:.3f} of {fp32_boxes} fp32 boxes, precision {precision:.3f} of {int8_boxes}; '
          f'mean abs error of the scores {np.mean(score_errors):.4f}')
    assert fp32_boxes >= 30, 'the trained model should find boxes on these images'
    assert np.mean(score_errors) < 0.005
    # Measured 0.36 / 0.14, and 0.33 / 0.17 for a stock yolov5n trained alike (README, "int8 fidelity"):
    # a weak model's scores sit at the threshold, where int8's small shifts move boxes across it.
    # A broken graph (padding, layout, a lost residual) scores near 0.
    assert recall >= 0.25 and precision >= 0.08


def test_edgetpu_fails_only_for_want_of_its_compiler(int8_export):
    weights, _, log = int8_export
    plain = log.replace('\x1b[34m\x1b[1m', '').replace('\x1b[0m', '')
    assert Path(f'{weights.with_suffix("")}-int8.tflite').is_file()
    assert 'Edge TPU: export requires Edge TPU compiler' in plain, plain[-3000:]
    assert 'Edge TPU: export failure' in plain


def test_stock_val_and_detect_run_the_tf_exports(int8_export, yolov5_dir, offline, tmp_path):
    weights, data_yaml, _ = int8_export
    stem = weights.with_suffix('')
    maps = {}
    for name, w in (('PyTorch', weights), ('TFLite int8', f'{stem}-int8.tflite'), ('SavedModel', f'{stem}_saved_model')):
        rc, log = run_yolov5(yolov5_dir, offline, 'val.py', '--weights', w, '--data', data_yaml, '--img', IMG,
                             '--batch-size', 1, '--device', 'cpu', '--project', tmp_path, '--name', 'val')
        rows = [line.split() for line in log.splitlines() if line.split()[:1] == ['all']]
        assert rc == 0 and rows, log[-3000:]
        maps[name] = float(rows[-1][5])  # all, images, instances, P, R, mAP50, mAP50-95
    print(f'val.py mAP50 on {coco().name} val at', IMG, maps)
    source = tmp_path / 'images'
    source.mkdir()
    for f in sorted((data_yaml.parent / 'dataset' / 'images' / 'val2017').glob('*.jpg'))[:3]:
        (source / f.name).write_bytes(f.read_bytes())
    for w in (f'{stem}-int8.tflite', f'{stem}_saved_model'):
        rc, log = run_yolov5(yolov5_dir, offline, 'detect.py', '--weights', w, '--source', source, '--img', IMG,
                             '--device', 'cpu', '--project', tmp_path, '--name', 'detect', '--exist-ok')
        assert rc == 0, log[-3000:]
        assert len(list((tmp_path / 'detect').glob('*.jpg'))) == 3
