"""Quantization-aware training (`yolov5-mnv4 qat`, export/pt2e.py, export/qat.py, hosts/yolov5_qat.py)
on the committed testbed: a Conv-S detector that detects its training images (tests/data/testbed).

What each test would catch:
- the BatchNorm eps that prepare_qat_pt2e resets (1e-5 against YOLOv5's 1e-3): the prepared graph,
  fake quantization off, equals the eager model on real images; the same graph prepared without the
  eps fix does not (control);
- int8 files that do not compute what the converted PyTorch int8 model computes: the .pte and the
  Q/DQ .onnx equal it within a bound, boxes and scores apart, on two real images on which the
  outputs differ by far more than the bound; a file written from the same graph recalibrated on
  other images (what a route that drops the QAT ranges would write) misses it (control);
- a fine-tune that changes nothing or a file whose ops are not int8.
"""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import assert_input_dependent, output_errors, require
from make_golden import GOLDEN

TESTBED = 'mnv4-conv-s-coco128-320.pt'
SIZE = 320
# the prepared graph with fake quantization off against the eager model: float rounding only
# (measured ~1e-6 of the largest box, scores ~1e-6); without the eps fix 1e-1 and more
PREPARED_BOUNDS = (1e-4, 1e-4)
# an int8 file against the converted PyTorch int8 model: the runtimes' int8 kernels requantize
# differently from PyTorch's reference (dequantize -> float op -> quantize), one step here and there,
# so a few elements move far (measured on the testbed: scores up to 0.15) while the mean does not.
# Bounded: the mean box error (of the largest box coordinate), the mean score error, and the score
# signal-to-noise per output level. Measured 2026-12-08: ExecuTorch 1.4e-3 / 4.7e-4 / 21.0 dB,
# ONNX Runtime 1.4e-3 / 4.7e-4 / 20.9 dB; the recalibrated control 1.2e-2 / 4.2e-3 / -2.1 dB.
EXPORT_BOUNDS = (4e-3, 1.5e-3)
EXPORT_SNR_DB = 15


@pytest.fixture(scope='module')
def testbed(yolo, testbed_dir):
    from yolov5_mnv4.hosts.yolov5_qat import YOLOv5QATHost
    return YOLOv5QATHost(testbed_dir / 'weights' / TESTBED)


@pytest.fixture(scope='module')
def images(testbed_dir):
    """Two real training images of the testbed (it detects on them), letterboxed: (2, 3, SIZE, SIZE)."""
    from yolov5_mnv4.export.images import letterboxed_images
    ims = letterboxed_images(testbed_dir / 'images' / 'train2017', (SIZE, SIZE), 2)
    return torch.from_numpy(np.concatenate(ims))


def _raw(host):
    from yolov5_mnv4.export.qat import RawOutputs
    return RawOutputs(host.model)


def _prepared(host, fix_eps=True):
    import copy

    from yolov5_mnv4.export import pt2e
    model = copy.deepcopy(host.model)
    if not fix_eps:  # the control: prepare_qat_pt2e as it comes
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
        graph = pt2e.export_for_training(model, torch.zeros(2, 3, SIZE, SIZE))
        prepared = prepare_qat_pt2e(graph, pt2e.quantizer(host.float_modules, qat=True))
    else:
        prepared = pt2e.prepare_qat(model, torch.zeros(2, 3, SIZE, SIZE), host.float_modules)
    pt2e.train_mode(prepared, False)
    return pt2e.fake_quant(prepared, on=False)


def export_errors(got, ref, detect=None):
    """(mean box error / largest box coordinate, mean score error[, lowest per-level score SNR in dB
    with `detect`]) of two YOLOv5-layout detector outputs."""
    from yolov5_mnv4.export.parity import score_snr_db
    got, ref = (np.asarray(y.detach() if isinstance(y, torch.Tensor) else y, np.float64) for y in (got, ref))
    got = got.reshape(ref.shape)
    errors = (float(np.abs(got[..., :4] - ref[..., :4]).mean() / np.abs(ref[..., :4]).max()),
              float(np.abs(got[..., 4:] - ref[..., 4:]).mean()))
    if detect is None:
        return errors
    snr = score_snr_db(list(got), list(ref), [int(s) for s in detect.stride], detect.na, (SIZE, SIZE))
    return errors + (float(np.min(snr)),)


def _files_pass(errors):
    return errors[0] <= EXPORT_BOUNDS[0] and errors[1] <= EXPORT_BOUNDS[1] and errors[2] >= EXPORT_SNR_DB


def _detections(host, raw):
    return host.decoder((SIZE, SIZE))(raw)


def test_testbed_detects(testbed, images):
    """The testbed's outputs depend on its input (what every bound below assumes)."""
    with torch.no_grad():
        out = testbed.reference()(images)
    assert_input_dependent(out, PREPARED_BOUNDS, 'testbed')


def test_prepared_graph_equals_eager_and_eps_control(testbed, images, record):
    require('torchao')
    with torch.no_grad():
        ref = testbed.reference()(images)
        fixed = _detections(testbed, _prepared(testbed)(images))
        broken = _detections(testbed, _prepared(testbed, fix_eps=False)(images))
    errors, control = output_errors(fixed, ref), output_errors(broken, ref)
    record('qat/prepared graph vs eager', boxes=errors[0], scores=errors[1], control_boxes=control[0],
           control_scores=control[1])
    print(f'prepared (fake quant off) vs eager: {errors}; without the eps fix: {control}')
    assert all(e <= b for e, b in zip(errors, PREPARED_BOUNDS)), errors
    assert any(c > 10 * b for c, b in zip(control, PREPARED_BOUNDS)), f'the eps control passes: {control}'


def test_batchnorm_momentum_restored(testbed):
    require('torchao')
    from yolov5_mnv4.export import pt2e
    momenta = set(pt2e.batchnorm_momenta(_prepared(testbed)))
    assert momenta == {0.03}, momenta  # YOLOv5's, not prepare_qat_pt2e's 0.1


@pytest.fixture(scope='module')
def qat_run(testbed, testbed_dir, tmp_path_factory):
    """Three QAT steps on the testbed's train images, two batches an epoch, observers and BatchNorm
    frozen after the first (so frozen across the switch back to training at the second epoch),
    converted; written to ExecuTorch and ONNX."""
    require('torchao')
    require('executorch', 'executorch')
    require('onnxscript')
    from yolov5_mnv4.export import qat
    before = {k: v.clone() for k, v in testbed.model.state_dict().items()}
    prepared, losses = qat.finetune(testbed, testbed_dir / 'testbed.yaml', (SIZE, SIZE),
                                    qat.Schedule(steps=3, batch=4, batches=2, lr=1e-4, freeze_at=0.3))
    from yolov5_mnv4.export import pt2e
    # before conversion (which moves the graph to eval mode): what the end of the run left
    training = [bool(n.args[pt2e.TRAINING]) for n in pt2e._batchnorm_nodes(prepared)]
    observing = [bool(m.observer_enabled[0]) for m in prepared.modules() if hasattr(m, 'observer_enabled')]
    int8 = qat.int8_model(prepared, testbed, (SIZE, SIZE))
    folder = tmp_path_factory.mktemp('qat')
    files = qat.write(int8, (SIZE, SIZE), folder / 'testbed-qat', ['executorch', 'onnx'], log=print)
    return {'prepared': prepared, 'int8': int8, 'files': files, 'losses': losses, 'before': before, 'folder': folder,
            'training': training, 'observing': observing}


def test_qat_steps_change_the_weights_not_the_checkpoint(testbed, qat_run):
    after = dict(qat_run['prepared'].named_parameters())
    before = qat_run['before']
    weights = [n for n in after if n.endswith('conv.weight') and n in before]
    assert len(weights) >= 20, f'the prepared graph keeps few of the model\'s conv weights by name: {list(after)[:5]}'
    changed = sum(not torch.equal(after[n].detach(), before[n].to(after[n].dtype)) for n in weights)
    assert changed >= len(weights) // 2, f'{changed} of {len(weights)} conv weights changed in three QAT steps'
    # frozen in the first epoch, and still frozen after the graph was switched to training for the second
    assert qat_run['training'] and not any(qat_run['training']), 'BatchNorm statistics not frozen'
    assert qat_run['observing'] and not any(qat_run['observing']), 'observers not frozen'
    # the host's own model is untouched: the fine-tune works on a copy
    assert all(torch.equal(v, qat_run['before'][k]) for k, v in testbed.model.state_dict().items())


def _recalibrated(int8, prepared, images):
    """The control: the same fine-tuned graph with its observers reset and re-run on other images."""
    import copy

    from torchao.quantization.pt2e import enable_observer

    from yolov5_mnv4.export import pt2e, qat
    graph = copy.deepcopy(prepared)
    for module in graph.modules():
        if hasattr(module, 'activation_post_process') and hasattr(module.activation_post_process, 'reset_min_max_vals'):
            module.activation_post_process.reset_min_max_vals()
    graph.apply(enable_observer)
    with torch.no_grad():
        graph(images.flip(-1) * 0.5)
    return qat.Decoded(pt2e.convert(graph), int8.decoder).eval()


@pytest.mark.parametrize('fmt', ['executorch', 'onnx'])
def test_int8_files_equal_the_converted_model(testbed, qat_run, images, fmt, record):
    from yolov5_mnv4.export import qat
    run = qat.runner(fmt, qat_run['files'][fmt])
    with torch.no_grad():
        ref = qat_run['int8'](images)
    assert_input_dependent(ref, EXPORT_BOUNDS, f'converted int8 ({fmt} reference)', factor=3)
    got = np.concatenate([run(images[i:i + 1].numpy()) for i in range(len(images))])
    errors = export_errors(got, ref, testbed.detect)
    record(f'qat/{fmt} vs converted int8', boxes_mean=errors[0], scores_mean=errors[1], score_snr_db=errors[2])
    print(f'{fmt} vs the converted PyTorch int8 model: mean box error {errors[0]:.2g}, mean score error '
          f'{errors[1]:.2g}, score SNR >= {errors[2]:.1f} dB')
    assert _files_pass(errors), errors


def test_files_keep_the_qat_ranges_control(testbed, qat_run, images, record):
    """A graph recalibrated on other images is what a route that drops the QAT ranges writes: the
    written .pte must be far from it, else the bound above says nothing about the ranges."""
    from yolov5_mnv4.export import qat
    control = _recalibrated(qat_run['int8'], qat_run['prepared'], images)
    run = qat.runner('executorch', qat_run['files']['executorch'])
    got = np.concatenate([run(images[i:i + 1].numpy()) for i in range(len(images))])
    with torch.no_grad():
        errors = export_errors(got, control(images), testbed.detect)
    record('qat/executorch vs recalibrated control', boxes_mean=errors[0], scores_mean=errors[1], score_snr_db=errors[2])
    print(f'the .pte against the recalibrated control: {errors}')
    # each of the three bounds rejects it on its own
    assert errors[0] > EXPORT_BOUNDS[0] and errors[1] > EXPORT_BOUNDS[1] and errors[2] < EXPORT_SNR_DB, errors


def test_int8_ops(qat_run):
    import onnx
    model = onnx.load(str(qat_run['files']['onnx']))
    ops = [n.op_type for n in model.graph.node]
    convs = ops.count('Conv')
    assert ops.count('QuantizeLinear') >= convs - 3 and ops.count('DequantizeLinear') >= convs, (
        f'{ops.count("QuantizeLinear")} QuantizeLinear for {convs} convs')
    from yolov5_mnv4.export import pt2e
    counts = pt2e.quantized_ops(qat_run['int8'].body)
    quantize = sum(n for op, n in counts.items() if op.startswith('quantize_per'))
    assert quantize >= convs - 3, counts


def test_bad_input_gets_one_line(yolov5_dir, testbed_dir, tmp_path):
    """Not a detector, a missing data YAML, a runtime that is not installed: one line, before any work."""
    not_a_detector = tmp_path / 'weights.pt'
    torch.save({'model': torch.nn.Linear(2, 2)}, not_a_detector)
    weights = testbed_dir / 'weights' / TESTBED
    cases = [
        (['--weights', str(not_a_detector), '--data', str(testbed_dir / 'testbed.yaml')], 'no YOLOv5 model'),
        (['--weights', str(weights), '--data', str(tmp_path / 'missing.yaml')], 'missing.yaml: no such file'),
        (['--weights', str(weights), '--data', str(testbed_dir / 'testbed.yaml'), '--include', 'tflite'], 'litert-torch'),
    ]
    hidden = tmp_path / 'hidden'  # litert-torch as a machine without it sees it, wherever it is installed
    hidden.mkdir()
    (hidden / 'litert_torch.py').write_text("raise ModuleNotFoundError(\"No module named 'litert_torch'\", name='litert_torch')\n")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(hidden), os.environ.get('PYTHONPATH', '')])}
    for argv, message in cases:
        proc = subprocess.run([sys.executable, '-m', 'yolov5_mnv4', 'qat', '--yolov5', str(yolov5_dir), *argv],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode != 0 and message in proc.stderr, (argv, proc.stderr[-2000:])
        assert 'Traceback' not in proc.stderr and 'preparing' not in proc.stdout, proc.stderr[-2000:]


@pytest.fixture(scope='module')
def ultralytics_golden_data(tmp_path_factory):
    """The Ultralytics golden checkpoint (3 classes) and the embedded images with their classes folded
    into 3, as a data YAML."""
    import lzma
    import shutil

    import yaml

    from yolov5_mnv4.resources import embedded_dataset
    require('ultralytics', 'ultralytics')
    folder = tmp_path_factory.mktemp('qat-ultralytics')
    weights = folder / 'mnv4-ultralytics-yolo11n-conv-s-nc3.pt'
    weights.write_bytes(lzma.decompress((GOLDEN / f'{weights.name}.xz').read_bytes()))
    data = folder / 'coco8'
    shutil.copytree(embedded_dataset(), data)
    for label in data.glob('labels/*/*.txt'):
        label.write_text(''.join(f'{int(line.split()[0]) % 3} {" ".join(line.split()[1:])}\n'
                                 for line in label.read_text().splitlines() if line.strip()))
    (folder / 'data.yaml').write_text(yaml.safe_dump({'path': str(data), 'train': 'images/train2017',
                                                      'val': 'images/val2017', 'names': {0: 'a', 1: 'b', 2: 'c'}}))
    return weights, folder / 'data.yaml'


def test_ultralytics_host_qat_steps_and_formats(ultralytics_golden_data, tmp_path):
    """The package's checkpoints take the same route: two QAT steps change the weights; ExecuTorch and
    ONNX are written with int8 ops. The .pte against the converted model is a smoke check only: the
    golden model's outputs hardly depend on its input (tests/data/README.md), so accuracy is measured
    on the YOLOv5 host's testbed above."""
    require('torchao')
    require('executorch', 'executorch')
    require('onnxscript')
    import importlib

    import onnx

    from yolov5_mnv4.export import pt2e, qat
    from yolov5_mnv4.hosts.ultralytics import register
    from yolov5_mnv4.hosts.ultralytics_qat import UltralyticsQATHost, is_ultralytics_checkpoint
    weights, data = ultralytics_golden_data
    register(importlib.import_module('ultralytics.nn.tasks'))
    assert is_ultralytics_checkpoint(weights)
    host = UltralyticsQATHost(weights)
    size = (160, 160)
    before = {k: v.clone() for k, v in host.model.state_dict().items()}
    prepared, losses = qat.finetune(host, data, size, qat.Schedule(steps=2, batch=4, lr=1e-3, freeze_at=0.5))
    changed = sum(not torch.equal(p.detach(), before[n].to(p.dtype)) for n, p in prepared.named_parameters() if n in before)
    assert changed >= 10 and all(np.isfinite(losses)), (changed, losses)
    int8 = qat.int8_model(prepared, host, size)
    files = qat.write(int8, size, tmp_path / 'yolo11n-qat', ['executorch', 'onnx'], log=print)
    ops = [n.op_type for n in onnx.load(str(files['onnx'])).graph.node]
    assert ops.count('QuantizeLinear') >= ops.count('Conv') - 2 * 3 - 1, ops.count('QuantizeLinear')
    counts = pt2e.quantized_ops(int8.body)
    assert sum(n for op, n in counts.items() if op.startswith('quantize_per')) >= 20, counts
    x = torch.from_numpy(np.concatenate(letterboxed_pair(size)))
    with torch.no_grad():
        ref = int8(x)
    run = qat.runner('executorch', files['executorch'])
    got = np.concatenate([run(x[i:i + 1].numpy()) for i in range(len(x))])
    errors = export_errors(got, ref)
    print(f'Ultralytics host: .pte vs the converted int8 model: mean box error {errors[0]:.2g}, mean score error {errors[1]:.2g}')
    assert errors[0] <= EXPORT_BOUNDS[0] and errors[1] <= EXPORT_BOUNDS[1], errors


def letterboxed_pair(size):
    from yolov5_mnv4.export.images import letterboxed_images
    from yolov5_mnv4.resources import embedded_dataset
    return letterboxed_images(embedded_dataset() / 'images' / 'val2017', size, 2)


def test_seven_bit_weights_stay_in_range():
    """--weight-bits 7 (ONNX Runtime on x86 without VNNI): the converted weights lie in [-63, 63];
    8 bits use [-127, 127] (control: the same model exceeds 63)."""
    require('torchao')
    require('executorch', 'executorch')
    from yolov5_mnv4.export import pt2e
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).eval()
    x = torch.rand(1, 3, 16, 16)
    largest = {}
    for bits in (7, 8):
        converted = pt2e.calibrated(torch.export.export(net, (x,)), [x], weight_bits=bits)
        attrs = [functools.reduce(getattr, n.target.split('.'), converted) for n in converted.graph.nodes if n.op == 'get_attr']
        largest[bits] = max(int(a.abs().max()) for a in attrs if isinstance(a, torch.Tensor) and a.dtype == torch.int8)
    assert largest[7] <= 63 < largest[8] <= 127, largest
