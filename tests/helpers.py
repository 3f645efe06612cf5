"""Shared test helpers: perturbing weights so that a wrong BN, scale or residual cannot hide, peaking the
attention so that a wrong attention cannot hide, real images and the check that a model's outputs
depend on them, deliberate bugs for negative controls, checkpoints, pristine copies of the YOLOv5
tree, the test extra's modules (required in CI)."""
import contextlib
import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

# A parity bound says something only about a model whose outputs move between two real images by
# far more than the bound: at least this many times it (boxes and scores each on their own scale).
INPUT_DEPENDENCE = 100


def require(module, extra='test'):
    """Import `module` of the `extra`; skip (with the reason printed) where it is missing, except where
    MNV4_REQUIRE_TEST_EXTRA=1 (scripts/test.sh, so CI): there a missing module fails the test."""
    if os.environ.get('MNV4_REQUIRE_TEST_EXTRA') == '1':
        import importlib
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f'{module} is in the {extra} extra (pip install -e .[{extra}])')


def require_installed(module, extra, gate='MNV4_REQUIRE_EDGE'):
    """Like require(), for a module this process must not import (TensorFlow: importing it before
    triton, which torchvision.ops brings later in the session, segfaults): only looked up. Missing:
    a failure where the `gate` variable is set (CI), else a skip with the reason."""
    import importlib.util
    if importlib.util.find_spec(module) is None:
        if os.environ.get(gate):
            pytest.fail(f'{gate} is set but {module} is not installed: pip install -e .[{extra}]')
        pytest.skip(f'{module} is in the {extra} extra (pip install -e .[{extra}])')


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


@torch.no_grad()
def calibrate_batchnorm_(model, x, seed=0):
    """Give every BatchNorm the statistics of its input on the batch `x` and an affine weight in
    [0.5, 1.5] (in place; eval mode after): a perturbed detector whose outputs depend on its input.

    With `perturb_` alone a detector is constant: its head's BNs (weights 0.1-0.3, statistics that
    do not match their inputs) shrink the signal layer after layer until the outputs are the biases,
    the same for every image, and a parity test of such a model compares constants. Statistics
    measured here are still far from the defaults (0 and 1), so a BN that is folded wrongly shows.
    """
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: one batch sets the statistics exactly
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
    # A checkpoint's parameters are frozen (train.py's strip_optimizer), and a frozen stage keeps its
    # BatchNorms in eval mode under train(): unfreeze for this one pass, so that every norm sees x.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    model.requires_grad_(True)
    model.train()(x)
    for p in frozen:
        p.requires_grad_(False)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    assert all(bn.num_batches_tracked.item() == 1 for bn in norms), 'a BatchNorm did not see the batch'
    return model.eval()


def input_dependent_(model, size, seed=0, peak=True):
    """`model` (in place, eval mode after) with outputs that depend on the image: BatchNorm statistics of
    the 8 embedded train images at size x size (`calibrate_batchnorm_`) and, with `peak` and where it
    has attention, its attention peaked on the first of them (`peak_attention_`)."""
    from yolov5_mnv4.attention import MobileMultiQueryAttention
    x = real_images(size, 8, 'train2017').to(next(model.parameters()).dtype)
    calibrate_batchnorm_(model, x, seed)
    if peak and any(isinstance(m, MobileMultiQueryAttention) for m in model.modules()):
        peak_attention_(model, x[:1])
    return model.eval()


PEAKED_SPREAD = 4.0


@torch.no_grad()
def peak_attention_(model, x, spread=PEAKED_SPREAD):
    """Scale each Mobile MQA block's query and key projections (in place) so that, on input `x`, its
    attention logits spread across the keys by `spread` (their std over keys, averaged over queries).

    Perturbed or freshly initialised weights give logits that barely vary (spread ~0.1), so every
    query averages all keys and attention bugs (a wrong head layout, a lost scale, even the mean of
    v in place of attention) stay below 1e-5. With spread 4 the mean top attention weight is
    0.1-0.8 per block over 100 keys, as in a trained model, and those bugs are plain.
    Returns the model; `model(x)` must run it (a detector, a stage, or nn.Sequential of stages).
    """
    from yolov5_mnv4.attention import MobileMultiQueryAttention

    def peak(block, args):
        q, k, _ = block.queries_keys_values(args[0])
        logits = (q * block.scale).matmul(k.transpose(-1, -2))
        factor = (spread / logits.std(-1).mean().item()) ** 0.5
        block.query.weight.mul_(factor)
        block.key.weight.mul_(factor)

    blocks = [m for m in model.modules() if isinstance(m, MobileMultiQueryAttention)]
    assert blocks, 'the model has no attention block to peak'
    handles = [block.register_forward_pre_hook(peak) for block in blocks]
    try:
        model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return model


@torch.no_grad()
def residual_branches(model, x, is_block, modules=None):
    """model(x), and what each block of `modules` (default: model) for which `is_block(module)` holds
    adds to its input (y - x), in forward order: for attention blocks, the attention branch."""
    branches = []
    handles = [m.register_forward_hook(lambda m, args, out: branches.append(out - args[0]))
               for m in (modules or model).modules() if is_block(m)]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, branches


def relative_error(got, ref):
    """max |got - ref| over max |ref|: for an attention branch, its error against its own size."""
    return float(abs(got - ref).max() / abs(ref).max())


def real_images(size, count, split='val2017'):
    """The first `count` embedded COCO images of `split` (8 train, 4 val), letterboxed: (count, 3, size, size)."""
    from yolov5_mnv4.export.images import letterboxed
    from yolov5_mnv4.resources import embedded_dataset
    files = sorted((embedded_dataset() / 'images' / split).glob('*.jpg'))[:count]
    assert len(files) == count, f'the embedded {split} has {len(files)} images, not {count}'
    return torch.from_numpy(np.concatenate([letterboxed(f, size) for f in files]))


def output_errors(got, ref, channels_first=False):
    """parity.detection_errors (largest box error / largest box coordinate, largest score error: each
    part on its own scale, so that at 160 px a score cannot hide under the size of a box coordinate) of
    two detector outputs, tensors or arrays: YOLOv5's (N, anchors, 4 + 1 + classes), or with
    `channels_first` the Ultralytics package's (N, 4 + classes, anchors)."""
    from yolov5_mnv4.export.parity import detection_errors
    got, ref = (np.asarray(y.detach() if isinstance(y, torch.Tensor) else y, np.float64) for y in (got, ref))
    if channels_first:
        got, ref = got.transpose(0, 2, 1), ref.transpose(0, 2, 1)
    return detection_errors(got, ref)


def assert_input_dependent(outputs, bound, what='', channels_first=False, factor=INPUT_DEPENDENCE):
    """`outputs`: a detector's outputs on two different real images (a batch of 2, or a pair). Asserts
    that both boxes and scores move between the images by at least `factor` x `bound`, in the
    measure of `output_errors`; returns (boxes, scores) change. A model whose outputs do not depend on
    its input (untrained, BatchNorm statistics that do not match its inputs) passes any parity bound."""
    first, second = (outputs[:1], outputs[1:2]) if not isinstance(outputs, (list, tuple)) else outputs
    change = output_errors(second, first, channels_first)
    print(f'{what} input dependence: boxes move {change[0]:.2g}, scores {change[1]:.2g} between two images')
    bounds = bound if isinstance(bound, tuple) else (bound, bound)  # (boxes, scores), or one for both
    assert all(c >= factor * b for c, b in zip(change, bounds)), (
        f'{what}: outputs barely depend on the input (boxes {change[0]:.2g}, scores {change[1]:.2g} between two '
        f'real images): a parity bound of {bound} says nothing about such a model')
    return change


def same_padding_(model):
    """TF-style 'same' padding (0 before, 1 after) on the first stride-2 3x3 conv: one pixel off."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.stride == (2, 2) and module.kernel_size == (3, 3):
            module.padding = (0, 0)
            conv = module
            break
    hook = conv.register_forward_pre_hook(lambda m, args: (torch.nn.functional.pad(args[0], (0, 1, 0, 1)),))
    return model, hook


def drop_residuals_(model, which):
    """Switch off the residual of every UIB block that has one (`which='all'`) or of one of them (an index)."""
    from yolov5_mnv4.blocks import UniversalInvertedBottleneck
    blocks = [m for m in model.modules() if isinstance(m, UniversalInvertedBottleneck) and m.has_residual]
    for block in blocks if which == 'all' else [blocks[which]]:
        block.has_residual = False
    return model, None


@contextlib.contextmanager
def folding_the_query_without_shift():
    """A wrong fold of the attention-input BatchNorm, for negative controls: its shift is left out of the
    query projection (key and value keep theirs). Near-uniform attention hides it (the error moves
    the logits of one query alike), peaked attention shows it."""
    from yolov5_mnv4.attention import MobileMultiQueryAttention
    right = MobileMultiQueryAttention.fuse

    def wrong(self):
        right(self)
        if isinstance(self.norm, torch.nn.Identity):  # the norm was folded into query, key and value
            self.query.bias = None

    MobileMultiQueryAttention.fuse = wrong
    try:
        yield
    finally:
        MobileMultiQueryAttention.fuse = right


@torch.no_grad()
def unfused_and_fused(model, x, fuse=lambda m: m.fuse()):
    """(`model`'s outputs on x, a fused deep copy's outputs on x): the model itself stays unfused."""
    model.eval()
    return model(x), fuse(copy.deepcopy(model)).eval()(x)


def fusion_and_wrong_fold(model, x, measure, fuse=lambda m: m.fuse()):
    """The fusion check and its negative control: (`model`'s outputs on x, measure(fused copy's outputs,
    them), measure(outputs of a copy fused with folding_the_query_without_shift, them)). The model stays
    unfused."""
    unfused, fused = unfused_and_fused(model, x, fuse)
    with folding_the_query_without_shift():
        _, wrong = unfused_and_fused(model, x, fuse)
    return unfused, measure(fused, unfused), measure(wrong, unfused)


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
    """`model` as a finished train.py run's checkpoint (fp16; hosts.yolov5.write_checkpoint)."""
    from yolov5_mnv4.hosts.yolov5 import write_checkpoint as write
    return write(model, path)


def save_detector_checkpoint(yolo, cfg, path, nc=80, seed=0, peaked_at=None):
    """A checkpoint like train.py's (fp16 model with nc and names) of a perturbed, untrained detector
    whose outputs depend on its input (`calibrate_batchnorm_` on the 8 embedded train images); with
    `peaked_at=size` its attention is peaked (`peak_attention_`) on the first of them at size x size."""
    with keeping_default_act(yolo):
        torch.manual_seed(seed)
        model = yolo.DetectionModel(str(cfg), nc=nc)
    input_dependent_(perturb_(model, seed), peaked_at or 160, seed, peak=bool(peaked_at))
    model.nc, model.names = nc, {i: f'class{i}' for i in range(nc)}
    return write_checkpoint(model, path)


def pristine_copy(yolov5_dir, tree):
    """Copy the (applied) YOLOv5 tree to `tree` and revert the plugin there: as a fresh clone has it."""
    from yolov5_mnv4.hosts.yolov5_tree import apply
    shutil.copytree(yolov5_dir, tree, ignore=shutil.ignore_patterns('.git', '__pycache__', 'runs'))
    apply(tree, revert=True)
    assert '# yolov5-mnv4' not in (tree / 'models' / 'yolo.py').read_text()
    return tree


VAL_ROW = re.compile(r'(?:^|\s)all\s+(\d+)\s+(\d+)((?:\s+[-+\d.e]+){4})(?=\s|$)')


def val_rows(output):
    """val.py's 'all' metrics rows in `output`, each as ['all', images, instances, P, R, mAP50, mAP50-95].

    Found anywhere in a line: on a loaded machine tqdm's monitor thread can redraw the progress bar
    just before the row is logged, and the row then follows the bar on the same line."""
    return [['all', images, instances, *numbers.split()] for images, instances, numbers in VAL_ROW.findall(output)]



def run_side_by_side(commands, cwd, env, timeout=900):
    """Start every command (a list of arguments) at once, wait for all; [(returncode, output)] in
    order. `cwd`: one folder for all, or a list with one per command. Most of an export's or a YOLOv5
    script's time is single-threaded Python (imports, graph conversion), so on CI's two CPUs three of
    them take about the time of two."""
    cwds = cwd if isinstance(cwd, list) else [cwd] * len(commands)
    procs = [subprocess.Popen([str(c) for c in cmd], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd, folder in zip(commands, cwds)]
    results = []
    for proc in procs:
        output, _ = proc.communicate(timeout=timeout)
        results.append((proc.returncode, output))
    return results


# What the test modules share (they never import one another).
BACKBONE_PARAMS = {'conv_small': 1_136_864, 'conv_medium': 6_955_472, 'conv_large': 29_585_064,
                   'hybrid_medium': 8_314_608, 'hybrid_large': 34_758_824}


def run_python(code, cwd, env, *args, timeout=300):
    """`python -c code *args` in a fresh interpreter (this one's), output captured as text."""
    import sys
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def tree_digest(root):
    """{relative path: sha256} of every file under `root` but .git: to show a tree unchanged."""
    import hashlib
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob('*')) if p.is_file() and '.git' not in p.parts}


def save_timm(model, path):
    """A timm model's state dict as a .safetensors or .pth file, as timm users have them."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if Path(path).suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return path


def within(a, b, bound=1e-4, channels_first=False):
    """Same shape, boxes within `bound` of the largest coordinate and scores within `bound` (output_errors)."""
    return a.shape == b.shape and max(output_errors(a, b, channels_first)) <= bound


def int8_failures(measured, bounds):
    """Names of the int8 `bounds` ({'score SNR': dB on every level, 'recall': ..., 'precision': ...}, each
    a least value) that `measured` ({snr: per level, recall, precision}) fails."""
    failed = {'score SNR': min(measured['snr']) < bounds['score SNR'], 'recall': measured['recall'] < bounds['recall'],
              'precision': measured['precision'] < bounds['precision']}
    return [name for name, fails in failed.items() if fails]
