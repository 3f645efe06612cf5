"""NCNN, MNN and ExecuTorch exports through `yolov5-mnv4 export --include ncnn mnn executorch`, for an
MNv4-Conv-S (the trained one of tests/data: its outputs mean something), an MNv4-Hybrid-M with peaked
attention and a stock yolov5n: files named as YOLOv5 users expect, each runtime's output against the
fused PyTorch model (checked here, not read from the command's report), and broken exports that
the bounds reject. Needs the ncnn, mnn and executorch extras (scripts/setup.sh installs them).
"""
import os
import sys
from pathlib import Path

import pytest
import torch

from helpers import keeping_default_act, run_side_by_side, save_detector_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / 'tests' / 'data' / 'mnv4-conv-s-relu-coco128-160.pt'  # tests/data/README.md
FORMATS = ['ncnn', 'mnn', 'executorch']
# id: (a config of the tree to build a perturbed, BN-calibrated checkpoint from, or a checkpoint file;
# peaked attention; image size)
CASES = {'conv-s-trained': (TRAINED, False, 160),
         'hybrid-m-peaked': ('mnv4/yolov5-mnv4-hybrid-m.yaml', True, 256),
         'yolov5n': ('yolov5n.yaml', False, 160)}

# Largest box error over the largest box coordinate, and largest score error, against the fused
# PyTorch model (export.detection_errors). On the real image: measured 4e-7 to 7e-7 (trained Conv-S)
# and 1.3e-5 to 2.0e-5 (perturbed, untrained detectors, which amplify rounding) in all three runtimes.
# On uniform noise those detectors are worse conditioned: up to 2.6e-4 (yolov5n in NCNN at 160).
REAL_BOUND = 1e-4
NOISE_BOUND = 1e-3
BROKEN = 0.1  # a broken export must be off by at least this (measured 0.4 and more)


@pytest.fixture(scope='module')
def exports(yolo, yolov5_dir, offline, tmp_path_factory):
    """{case: (weights, image size, the command's output)}: one export of each case to all three
    formats, the three commands side by side (lowering to ExecuTorch is mostly single-threaded)."""
    cases = {}
    for case, (source, peaked, size) in CASES.items():
        weights = tmp_path_factory.mktemp(case) / 'best.pt'
        if isinstance(source, Path):
            weights.write_bytes(source.read_bytes())
        else:
            save_detector_checkpoint(yolo, yolov5_dir / 'models' / source, weights, peaked_at=size if peaked else None)
        cases[case] = (weights, size)
    commands = [[sys.executable, '-m', 'yolov5_mnv4', 'export', '--weights', weights, '--include', *FORMATS,
                 '--img', size] for weights, size in cases.values()]
    done = {}
    for (case, (weights, size)), (rc, log) in zip(cases.items(), run_side_by_side(commands, yolov5_dir,
                                                                                  {**os.environ, **offline})):
        assert rc == 0, f'{case}:\n{log[-4000:]}'
        print('\n'.join(line for line in log.splitlines() if line.startswith('yolov5-mnv4-export')))
        done[case] = (weights, size, log)
    return done


@pytest.fixture(params=list(CASES))
def exported(request, exports):
    """(case, weights, image size, the command's output)."""
    return (request.param, *exports[request.param])


def fused(yolo, weights):
    from models.experimental import attempt_load
    with keeping_default_act(yolo):
        return attempt_load(str(weights), device='cpu', fuse=True).float().eval()


def outputs_of(model, images):
    with torch.no_grad():
        return [model(torch.from_numpy(im))[0].numpy() for im in images]


def images(size):
    from yolov5_mnv4.export import parity_images
    return list(parity_images((size, size)).values())


def test_export_writes_each_format_where_yolov5_users_look(exported):
    case, weights, _, log = exported
    folder = weights.with_name('best_ncnn_model')
    assert sorted(p.name for p in folder.iterdir()) == ['model.ncnn.bin', 'model.ncnn.param']
    assert weights.with_name('best.mnn').is_file() and weights.with_name('best.pte').is_file()
    for fmt in FORMATS:
        assert f'yolov5-mnv4-export: {fmt}: real image: max box error' in log, fmt
    assert 'yolov5-mnv4-export: executorch: ops outside the XNNPACK delegate:' in log


@pytest.mark.parametrize('fmt', FORMATS)
def test_runtime_equals_the_fused_pytorch_model(exported, yolo, fmt):
    from yolov5_mnv4 import runtimes
    from yolov5_mnv4.export import detection_errors
    case, weights, size, _ = exported
    path = {'ncnn': weights.with_name('best_ncnn_model'), 'mnn': weights.with_name('best.mnn'),
            'executorch': weights.with_name('best.pte')}[fmt]
    runner = runtimes.load(fmt, path)
    ims = images(size)
    for name, bound, im, ref in zip(('real', 'random'), (REAL_BOUND, NOISE_BOUND), ims, outputs_of(fused(yolo, weights), ims)):
        boxes, scores = detection_errors(runner(im), ref)
        print(f'{case} {fmt} {name}: boxes {boxes:.1e}, scores {scores:.1e} (bound {bound:.0e})')
        assert boxes <= bound and scores <= bound, (case, fmt, name, boxes, scores)


def same_padding_(model):
    """TF-style 'same' padding (0 before, 1 after) on the first stride-2 3x3 conv: one pixel off."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.stride == (2, 2) and module.kernel_size == (3, 3):
            module.padding = (0, 0)
            conv = module
            break
    hook = conv.register_forward_pre_hook(lambda m, args: (torch.nn.functional.pad(args[0], (0, 1, 0, 1)),))
    return model, hook


@pytest.mark.parametrize('fmt', ['ncnn', 'mnn'])
def test_parity_bound_rejects_an_export_with_same_padding(yolo, tmp_path, fmt):
    """The runtime runs what it is given: an export of a one-pixel-off trained Conv-S must fail."""
    from yolov5_mnv4 import runtimes
    from yolov5_mnv4.export import detection_errors, detection_output
    size = CASES['conv-s-trained'][2]
    ims = images(size)
    refs = outputs_of(fused(yolo, TRAINED), ims)
    broken, hook = same_padding_(fused(yolo, TRAINED))
    net = detection_output(broken).eval()
    im = torch.zeros(1, 3, size, size)
    path = (runtimes.export_ncnn(net, im, tmp_path / 'ncnn') if fmt == 'ncnn'
            else runtimes.export_mnn(net, im, tmp_path / 'model.mnn'))
    hook.remove()
    runner = runtimes.load(fmt, path)
    errors = [detection_errors(runner(im), ref) for im, ref in zip(ims, refs)]
    print(f'{fmt} with same padding: (boxes, scores) per image {errors}')
    assert all(max(e) >= BROKEN for e in errors), errors
