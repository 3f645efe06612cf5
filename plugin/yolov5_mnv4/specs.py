"""The five MobileNetV4 variants as data: one row per block, one tuple of rows per stage.

Transcribed from the TensorFlow reference (tensorflow/models, official/vision/modeling/backbones/
mobilenet.py), which timm's `mobilenetv4_*` models reproduce block for block. Stage 0 is the stem
(/2); stages 1-4 end at strides 4, 8, 16 and 32, and their outputs are the detection taps.
"""
from typing import NamedTuple, Tuple, Union

import torch.nn as nn


class ConvBN(NamedTuple):
    """Plain conv + BN + activation."""
    kernel: int
    stride: int
    out: int


class FusedIB(NamedTuple):
    """Fused inverted bottleneck: full kxk conv expanding by `expand`, then a linear 1x1 projection."""
    kernel: int
    stride: int
    out: int
    expand: float


class UIB(NamedTuple):
    """Universal inverted bottleneck; a kernel of 0 means that depthwise conv is absent."""
    start_kernel: int
    mid_kernel: int
    stride: int
    out: int
    expand: float


class MQA(NamedTuple):
    """Mobile multi-query attention block; keeps its input width."""
    heads: int
    key_dim: int
    value_dim: int
    kv_stride: int


Block = Union[ConvBN, FusedIB, UIB, MQA]


class Variant(NamedTuple):
    name: str
    stages: Tuple[Tuple[Block, ...], ...]
    act_layer: type = nn.ReLU
    layer_scale: bool = False  # layer scale (gamma init 1e-5) on every UIB and MQA block

    def stage_out_channels(self):
        """Output width of each stage, derived from the rows (MQA keeps the width)."""
        widths, width = [], None
        for stage in self.stages:
            for row in stage:
                width = width if isinstance(row, MQA) else row.out
            widths.append(width)
        return widths


def _repeat(row, n):
    return (row,) * n


_MQA_M16 = MQA(heads=4, key_dim=64, value_dim=64, kv_stride=2)
_MQA_M32 = MQA(heads=4, key_dim=64, value_dim=64, kv_stride=1)
_MQA_L16 = MQA(heads=8, key_dim=48, value_dim=48, kv_stride=2)
_MQA_L32 = MQA(heads=8, key_dim=64, value_dim=64, kv_stride=1)

CONV_SMALL = Variant('conv_small', (
    (ConvBN(3, 2, 32),),
    (ConvBN(3, 2, 32), ConvBN(1, 1, 32)),
    (ConvBN(3, 2, 96), ConvBN(1, 1, 64)),
    (UIB(5, 5, 2, 96, 3), *_repeat(UIB(0, 3, 1, 96, 2), 4), UIB(3, 0, 1, 96, 4)),
    (UIB(3, 3, 2, 128, 6), UIB(5, 5, 1, 128, 4), UIB(0, 5, 1, 128, 4), UIB(0, 5, 1, 128, 3),
     *_repeat(UIB(0, 3, 1, 128, 4), 2)),
))

CONV_MEDIUM = Variant('conv_medium', (
    (ConvBN(3, 2, 32),),
    (FusedIB(3, 2, 48, 4),),
    (UIB(3, 5, 2, 80, 4), UIB(3, 3, 1, 80, 2)),
    (UIB(3, 5, 2, 160, 6), UIB(3, 3, 1, 160, 4), UIB(3, 3, 1, 160, 4), UIB(3, 5, 1, 160, 4),
     UIB(3, 3, 1, 160, 4), UIB(3, 0, 1, 160, 4), UIB(0, 0, 1, 160, 2), UIB(3, 0, 1, 160, 4)),
    (UIB(5, 5, 2, 256, 6), UIB(5, 5, 1, 256, 4), UIB(3, 5, 1, 256, 4), UIB(3, 5, 1, 256, 4),
     UIB(0, 0, 1, 256, 4), UIB(3, 0, 1, 256, 4), UIB(3, 5, 1, 256, 2), UIB(5, 5, 1, 256, 4),
     UIB(0, 0, 1, 256, 4), UIB(0, 0, 1, 256, 4), UIB(5, 0, 1, 256, 2)),
))

CONV_LARGE = Variant('conv_large', (
    (ConvBN(3, 2, 24),),
    (FusedIB(3, 2, 48, 4),),
    (UIB(3, 5, 2, 96, 4), UIB(3, 3, 1, 96, 4)),
    (UIB(3, 5, 2, 192, 4), *_repeat(UIB(3, 3, 1, 192, 4), 3), UIB(3, 5, 1, 192, 4),
     *_repeat(UIB(5, 3, 1, 192, 4), 5), UIB(3, 0, 1, 192, 4)),
    (UIB(5, 5, 2, 512, 4), *_repeat(UIB(5, 5, 1, 512, 4), 3), UIB(5, 0, 1, 512, 4),
     UIB(5, 3, 1, 512, 4), *_repeat(UIB(5, 0, 1, 512, 4), 2), UIB(5, 3, 1, 512, 4),
     UIB(5, 5, 1, 512, 4), *_repeat(UIB(5, 0, 1, 512, 4), 3)),
))

HYBRID_MEDIUM = Variant('hybrid_medium', (
    (ConvBN(3, 2, 32),),
    (FusedIB(3, 2, 48, 4),),
    (UIB(3, 5, 2, 80, 4), UIB(3, 3, 1, 80, 2)),
    (UIB(3, 5, 2, 160, 6), UIB(0, 0, 1, 160, 2), UIB(3, 3, 1, 160, 4), UIB(3, 5, 1, 160, 4),
     _MQA_M16, UIB(3, 3, 1, 160, 4), _MQA_M16, UIB(3, 0, 1, 160, 4),
     _MQA_M16, UIB(3, 3, 1, 160, 4), _MQA_M16, UIB(3, 0, 1, 160, 4)),
    (UIB(5, 5, 2, 256, 6), UIB(5, 5, 1, 256, 4), UIB(3, 5, 1, 256, 4), UIB(3, 5, 1, 256, 4),
     UIB(0, 0, 1, 256, 2), UIB(3, 5, 1, 256, 2), UIB(0, 0, 1, 256, 2), UIB(0, 0, 1, 256, 4),
     _MQA_M32, UIB(3, 0, 1, 256, 4), _MQA_M32, UIB(5, 5, 1, 256, 4),
     _MQA_M32, UIB(5, 0, 1, 256, 4), _MQA_M32, UIB(5, 0, 1, 256, 4)),
), layer_scale=True)

HYBRID_LARGE = Variant('hybrid_large', (
    (ConvBN(3, 2, 24),),
    (FusedIB(3, 2, 48, 4),),
    (UIB(3, 5, 2, 96, 4), UIB(3, 3, 1, 96, 4)),
    (UIB(3, 5, 2, 192, 4), *_repeat(UIB(3, 3, 1, 192, 4), 3), UIB(3, 5, 1, 192, 4),
     *_repeat(UIB(5, 3, 1, 192, 4), 2), _MQA_L16, UIB(5, 3, 1, 192, 4), _MQA_L16,
     UIB(5, 3, 1, 192, 4), _MQA_L16, UIB(5, 3, 1, 192, 4), _MQA_L16, UIB(3, 0, 1, 192, 4)),
    (UIB(5, 5, 2, 512, 4), *_repeat(UIB(5, 5, 1, 512, 4), 3), UIB(5, 0, 1, 512, 4),
     UIB(5, 3, 1, 512, 4), *_repeat(UIB(5, 0, 1, 512, 4), 2), UIB(5, 3, 1, 512, 4),
     UIB(5, 5, 1, 512, 4), _MQA_L32, UIB(5, 0, 1, 512, 4), _MQA_L32, UIB(5, 0, 1, 512, 4),
     _MQA_L32, UIB(5, 0, 1, 512, 4), _MQA_L32, UIB(5, 0, 1, 512, 4)),
), act_layer=nn.GELU, layer_scale=True)

VARIANTS = {v.name: v for v in (CONV_SMALL, CONV_MEDIUM, CONV_LARGE, HYBRID_MEDIUM, HYBRID_LARGE)}

HEAD_CONV_WIDTH = 960  # the classification head: conv 960 -> global pool -> conv 1280 -> linear
HEAD_FEATURES = 1280


def get_variant(name):
    """Look a variant up by name; accepts 'conv_small', 'mobilenetv4_conv_small' and 'conv-small'."""
    key = str(name).lower().replace('-', '_')
    key = key[len('mobilenetv4_'):] if key.startswith('mobilenetv4_') else key
    if key not in VARIANTS:
        raise ValueError(f"unknown MobileNetV4 variant {name!r}; valid names: {', '.join(VARIANTS)}")
    return VARIANTS[key]
