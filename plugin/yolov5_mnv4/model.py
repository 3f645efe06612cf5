"""One builder that turns a variant table into modules, and the MobileNetV4 backbone it builds."""
import torch
import torch.nn as nn

from .attention import MobileMultiQueryAttention
from .blocks import FusedInvertedBottleneck, UniversalInvertedBottleneck
from .layers import FOLDABLE_NORMS, ConvBNAct, LayerScale, exporting
from .specs import HEAD_CONV_WIDTH, HEAD_FEATURES, MQA, UIB, ConvBN, FusedIB, get_variant

LAYER_SCALE_INIT = 1e-5


def to_channels_last(x):
    """The stem's input in channels-last memory format, which every later layer keeps.

    oneDNN runs MobileNetV4's thin, high-resolution convs several times faster this way on CPUs
    (a 32->32 1x1 conv at 160x160: 0.7 ms against 15 ms in NCHW, measured); values are unchanged.
    Left out under `torch.export` (ExecuTorch, LiteRT): a program records memory formats as dim-order
    ops, and ExecuTorch's portable kernels refuse tensors of mixed dim orders (the split of a YOLO11
    C3k2 head outside the XNNPACK delegate failed at run time); XNNPACK picks its own layout anyway.
    """
    if exporting(program=True):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def build_block(row, c_in, variant, drop_path=0.0):
    """One spec row -> one module; returns (module, output channels)."""
    act = variant.act_layer
    layer_scale = LAYER_SCALE_INIT if variant.layer_scale else None
    if isinstance(row, ConvBN):
        return ConvBNAct(c_in, row.out, kernel=row.kernel, stride=row.stride, act_layer=act), row.out
    if isinstance(row, FusedIB):
        return FusedInvertedBottleneck(c_in, row.out, kernel=row.kernel, stride=row.stride, expand=row.expand,
                                       act_layer=act), row.out
    if isinstance(row, UIB):
        return UniversalInvertedBottleneck(c_in, row.out, start_kernel=row.start_kernel, mid_kernel=row.mid_kernel,
                                           stride=row.stride, expand=row.expand, act_layer=act,
                                           layer_scale=layer_scale, drop_path=drop_path), row.out
    if isinstance(row, MQA):
        return MobileMultiQueryAttention(c_in, heads=row.heads, key_dim=row.key_dim, value_dim=row.value_dim,
                                         kv_stride=row.kv_stride, layer_scale=layer_scale,
                                         drop_path=drop_path), c_in
    raise TypeError(f'unknown MobileNetV4 block row {row!r}')


def drop_path_rates(variant, rate):
    """timm's schedule, one list per stage: block i after the stem gets rate * i / N, where N also
    counts the final 1x1 conv to 960 (HEAD_CONV_WIDTH) that timm keeps as its last block and that our
    backbone leaves to the classifier head (Conv-S at 0.2: first residual block 0.0588, as timm)."""
    counts = [len(stage) for stage in variant.stages[1:]]
    total, rates, seen = sum(counts) + 1, [[0.0] * len(variant.stages[0])], 0
    for n in counts:
        rates.append([rate * (seen + j) / total for j in range(n)])
        seen += n
    return rates


def stage_input_channels(variant, index, in_chans=3):
    return in_chans if index == 0 else variant.stage_out_channels()[index - 1]


def build_stage(variant, index, in_chans=3, drop_path_rate=0.0):
    """The blocks of stage `index` of a variant (a `specs.Variant`; 0 stem, 1-4 the /4../32 stages),
    as a list."""
    c = stage_input_channels(variant, index, in_chans)
    blocks = []
    for row, rate in zip(variant.stages[index], drop_path_rates(variant, drop_path_rate)[index]):
        block, c = build_block(row, c, variant, rate)
        blocks.append(block)
    return blocks


def build_stages(variant, in_chans=3, drop_path_rate=0.0):
    """All stages of a variant (a `specs.Variant`) as a list of nn.Sequential (stem, /4, /8, /16, /32)."""
    return [nn.Sequential(*build_stage(variant, i, in_chans, drop_path_rate)) for i in range(len(variant.stages))]


class ClassifierHead(nn.Module):
    """conv 960 -> global average pool -> conv 1280 (BN + act, on the 1x1 map) -> dropout -> linear."""

    def __init__(self, c_in, num_classes, act_layer, dropout=0.0):
        super().__init__()
        self.conv = ConvBNAct(c_in, HEAD_CONV_WIDTH, act_layer=act_layer)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = ConvBNAct(HEAD_CONV_WIDTH, HEAD_FEATURES, act_layer=act_layer)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_FEATURES, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.pre_logits(self.pool(self.conv(x))).flatten(1)))


class MobileNetV4(nn.Module):
    """A MobileNetV4 backbone; `forward` returns the /4, /8, /16 and /32 feature maps.

    With `num_classes` set it also has the classification head, and `classify(x)` gives logits.
    Channel counts come from the spec, so construction never runs a forward pass.
    """

    def __init__(self, variant='conv_small', in_chans=3, num_classes=None, drop_path_rate=0.0, dropout=0.0):
        super().__init__()
        self.variant = get_variant(variant)
        self.in_chans = in_chans
        self.stages = nn.ModuleList(build_stages(self.variant, in_chans, drop_path_rate))
        self.out_channels = self.variant.stage_out_channels()[1:]
        self.head = (ClassifierHead(self.out_channels[-1], num_classes, self.variant.act_layer, dropout)
                     if num_classes else None)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'MobileNetV4 {self.variant.name} expects an input of shape '
                             f'(N, {self.in_chans}, H, W), got {tuple(x.shape)}')
        x = self.stages[0](to_channels_last(x))
        taps = []
        for stage in self.stages[1:]:
            x = stage(x)
            taps.append(x)
        return taps

    def classify(self, x):
        if self.head is None:
            raise RuntimeError('this MobileNetV4 was built without a classification head (num_classes)')
        return self.head(self.forward(x)[-1])

    def fuse(self):
        """Fold BatchNorms (and layer scales) into convs for inference; returns self."""
        return fuse_blocks(self)


FUSABLE = (ConvBNAct, FusedInvertedBottleneck, UniversalInvertedBottleneck, MobileMultiQueryAttention)


def fuse_blocks(module):
    """Fuse every MobileNetV4 block inside `module` for inference; returns `module`. The fused
    blocks' parameters stop requiring gradients (YOLOv5's fuse means its fused convs to as well)."""
    for m in list(module.modules()):
        if isinstance(m, FUSABLE):
            m.fuse()
            m.requires_grad_(False)
    return module


def is_fused(module):
    """Whether `fuse_blocks` has nothing left to fold in `module`: no conv-BN pair, no layer scale, no
    attention input norm that can fold (one that also feeds strided key/value downsamplers stays a BN,
    see MobileMultiQueryAttention.fuse)."""
    for m in module.modules():
        if isinstance(m, LayerScale) or (isinstance(m, ConvBNAct) and isinstance(m.bn, FOLDABLE_NORMS)):
            return False
        if (isinstance(m, MobileMultiQueryAttention) and isinstance(m.norm, FOLDABLE_NORMS)
                and isinstance(m.key_down, nn.Identity)):
            return False
    return True
