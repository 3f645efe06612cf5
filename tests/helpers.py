"""Shared test helpers: perturbing weights so that a wrong BN, scale or residual cannot hide, checkpoints,
pristine copies of the YOLOv5 tree."""
import contextlib
import shutil

import torch


@torch.no_grad()
def perturb_(module, seed=0):
    """Move every BN statistic, BN affine, layer scale and bias away from its default, in place.

    Magnitudes are chosen so that activations stay O(1) through the deepest variant.
    """
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if not t.dtype.is_floating_point:
            continue
        if name.endswith('running_var'):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith('running_mean') or name.endswith('bias'):
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        elif name.endswith('gamma'):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith('weight') and t.ndim == 1:
            t.copy_(torch.rand(t.shape, generator=g) * 0.2 + 0.1)
    return module


def max_abs_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@contextlib.contextmanager
def keeping_default_act(yolo):
    """YOLOv5's parse_model sets `Conv.default_act` for good when a config has `activation:` (our
    ReLU-head configs do); put it back so that later models in this process keep SiLU."""
    default_act = yolo.Conv.default_act
    try:
        yield
    finally:
        yolo.Conv.default_act = default_act


def write_checkpoint(model, path):
    """The least of what train.py writes that YOLOv5's loaders and `train.py --weights` read: the
    model in fp16 under 'model', and epoch -1 (a finished run)."""
    torch.save({'model': model.half(), 'epoch': -1}, path)
    return path


def save_detector_checkpoint(yolo, cfg, path, nc=80, seed=0):
    """A checkpoint like train.py's (fp16 model with nc and names) of a perturbed, untrained detector."""
    with keeping_default_act(yolo):
        torch.manual_seed(seed)
        model = yolo.DetectionModel(str(cfg), nc=nc)
    perturb_(model, seed)
    model.nc, model.names = nc, {i: f'class{i}' for i in range(nc)}
    return write_checkpoint(model, path)


def pristine_copy(yolov5_dir, tree):
    """Copy the (applied) YOLOv5 tree to `tree` and revert the plugin there: as a fresh clone has it."""
    from yolov5_mnv4.apply import apply
    shutil.copytree(yolov5_dir, tree, ignore=shutil.ignore_patterns('.git', '__pycache__', 'runs'))
    apply(tree, revert=True)
    assert '# yolov5-mnv4' not in (tree / 'models' / 'yolo.py').read_text()
    return tree
