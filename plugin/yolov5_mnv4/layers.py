"""Small building pieces shared by the MobileNetV4 blocks, the BatchNorm folding they use, and the
one switch between a layer's eager and export forms."""
import contextlib

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

# Every norm that folds: BatchNorm2d and the SyncBatchNorm that train.py --sync-bn converts it to.
FOLDABLE_NORMS = _BatchNorm
_EXPORT_MODE = None  # None: detect an export; True or False: set by export_mode()


def exporting(program=False):
    """Whether layers should take their export form: the attention's explicit matmuls (any export:
    TorchScript tracing or scripting, either ONNX exporter, `torch.export`) and, with `program`, no
    channels-last copy of the input (under `torch.export` only, which records memory formats).

    The dynamo ONNX exporter (torch's default since 2.9) and `torch.export` (ExecuTorch, LiteRT's
    PyTorch converter) show only in `torch.compiler.is_exporting()`, not in `torch.jit.is_tracing()`.
    `export_mode()` overrides the detection, as timm's `set_exportable` does."""
    if _EXPORT_MODE is not None:
        return _EXPORT_MODE
    is_exporting = getattr(torch.compiler, 'is_exporting', None)  # torch >= 2.5
    if is_exporting is not None and is_exporting():
        return True
    return not program and (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


@contextlib.contextmanager
def export_mode(on=True):
    """Within the block, layers take their export form (`on`) or their eager form (`on=False`),
    whatever runs them: for exporters the detection misses, and for tests."""
    global _EXPORT_MODE
    previous, _EXPORT_MODE = _EXPORT_MODE, bool(on)
    try:
        yield
    finally:
        _EXPORT_MODE = previous


def make_divisible(value, divisor=8, round_limit=0.9):
    """Round to the nearest multiple of `divisor`, never more than 10% down (TF and timm rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


class ConvBNAct(nn.Module):
    """kxk conv (no bias) + BatchNorm + optional activation; `fuse()` folds the BN into the conv."""

    def __init__(self, c_in, c_out, *, kernel=1, stride=1, groups=1, act_layer=None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act_layer() if act_layer else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuse(self):
        """Fold the norm into the conv; returns True when the conv alone now computes conv + norm."""
        if isinstance(self.bn, FOLDABLE_NORMS):
            fold_bn_after_conv(self.conv, self.bn)
            self.bn = nn.Identity()
        return isinstance(self.bn, nn.Identity)


class LayerScale(nn.Module):
    """Learnable per-channel scale (MobileNetV4 layer scale)."""

    def __init__(self, channels, init_value=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init_value)))

    def forward(self, x):
        # In the input's dtype: under autocast a float32 gamma would promote the residual stream.
        return x * self.gamma.to(x.dtype).view(1, -1, 1, 1)


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample while training, rescaling survivors."""

    def __init__(self, rate):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'rate={self.rate}'


def drop_path_or_identity(rate):
    return DropPath(rate) if rate > 0 else nn.Identity()


def _bn_scale_shift(bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_bn_after_conv(conv, bn):
    """conv -> bn becomes one conv with a bias."""
    scale, shift = _bn_scale_shift(bn)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.detach().clone())


@torch.no_grad()
def fold_bn_before_conv(bn, conv):
    """bn -> 1x1 conv (ungrouped, unpadded) becomes one conv with a bias; exact only for 1x1 convs."""
    assert conv.kernel_size == (1, 1) and conv.groups == 1, 'only a 1x1 dense conv absorbs a preceding BN'
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight
    extra_bias = (weight.flatten(1) @ shift).view(-1)
    weight.mul_(scale.view(1, -1, 1, 1))
    bias = extra_bias if conv.bias is None else conv.bias + extra_bias
    conv.bias = nn.Parameter(bias.detach().clone())


@torch.no_grad()
def fold_scale_into_conv(gamma, conv):
    """conv -> per-channel scale becomes one conv."""
    conv.weight.mul_(gamma.view(-1, 1, 1, 1))
    if conv.bias is not None:
        conv.bias.mul_(gamma)
