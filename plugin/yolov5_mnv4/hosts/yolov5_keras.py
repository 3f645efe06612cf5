"""Keras copies of the MobileNetV4 stages, for YOLOv5's TensorFlow exports.

`export.py --include saved_model pb tflite tfjs edgetpu` rebuilds the network in Keras through
YOLOv5's `models/tf.py`, one `TF<Name>` layer per YAML row, each built from the weights of the
PyTorch layer it mirrors. `TFMobileNetV4Stage` is that layer for our stages. It imports TensorFlow,
so only `hosts.yolov5.register_tf` imports this module, when YOLOv5's `models/tf.py` is imported
(which has imported TensorFlow already); nothing else in the plugin needs TensorFlow.

Everything here runs on TFLite's builtin operators (Conv2D, DepthwiseConv2D, Pad, Add, Mul,
Reshape, BatchMatMul, Softmax, ReLU, GELU), so fp32, fp16 and full-integer int8 conversions need no
Flex (SELECT_TF_OPS) kernels. Feature maps are NHWC, as in the rest of YOLOv5's Keras model.
"""
import copy

import numpy as np
import tensorflow as tf
import torch.nn as nn
from tensorflow import keras

from ..attention import MobileMultiQueryAttention
from ..blocks import FusedInvertedBottleneck, UniversalInvertedBottleneck
from ..layers import FOLDABLE_NORMS, ConvBNAct
from ..model import fuse_blocks


def _array(tensor):
    return tensor.detach().float().cpu().numpy()


ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU)  # what `activation` maps, besides Identity


def activation(module):
    """The TensorFlow function for a PyTorch activation module (None for Identity)."""
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.ReLU):
        return tf.nn.relu
    if isinstance(module, nn.ReLU6):
        return tf.nn.relu6
    if isinstance(module, nn.GELU):  # PyTorch's default is the exact (erf) form; TFLite has both
        approximate = module.approximate == 'tanh'
        return lambda x: tf.nn.gelu(x, approximate=approximate)
    raise TypeError(f'yolov5-mnv4: no TensorFlow activation for {module!r}')


def conv2d(conv, scale=1.0, name=None):
    """A Keras conv with the weights (times `scale`) of a PyTorch Conv2d: dense or depthwise, any kernel.
    `name` names the Keras layer (TFLite node names contain it).

    Stride-2 convs get an explicit symmetric zero pad and 'valid' padding: TF's 'same' would pad
    the bottom/right only, shifting every window by one pixel against PyTorch.
    """
    k, s = conv.kernel_size[0], conv.stride[0]
    if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1] or k % 2 == 0:
        raise ValueError(f'yolov5-mnv4: only square odd kernels and strides are exported, got {conv}')
    if conv.padding != (k // 2, k // 2) or conv.dilation != (1, 1):
        raise ValueError(f'yolov5-mnv4: only "same" padding without dilation is exported, got {conv}')
    weight = _array(conv.weight) * scale
    bias = _array(conv.bias) * scale if conv.bias is not None else None
    options = dict(strides=s, padding='same' if s == 1 else 'valid', use_bias=bias is not None, name=name,
                   bias_initializer=keras.initializers.Constant(bias) if bias is not None else 'zeros')
    if conv.groups == 1:
        layer = keras.layers.Conv2D(conv.out_channels, k, kernel_initializer=keras.initializers.Constant(
            weight.transpose(2, 3, 1, 0)), **options)  # (out, in, kh, kw) -> (kh, kw, in, out)
    elif conv.groups == conv.in_channels == conv.out_channels:
        layer = keras.layers.DepthwiseConv2D(k, depthwise_initializer=keras.initializers.Constant(
            weight.transpose(2, 3, 0, 1)), **options)  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    else:
        raise ValueError(f'yolov5-mnv4: grouped convs other than depthwise are not exported, got {conv}')
    if s == 1 or k == 1:
        return layer
    return keras.Sequential([keras.layers.ZeroPadding2D(k // 2), layer])


class TFConvBNAct(keras.layers.Layer):
    """A fused ConvBNAct: conv with bias, then its activation."""

    def __init__(self, w, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(w.bn, nn.Identity):
            raise ValueError(f'yolov5-mnv4: {type(w.bn).__name__} was not folded by fuse(); cannot export it')
        self.conv = conv2d(w.conv)
        self.act = activation(w.act)

    def call(self, x):
        x = self.conv(x)
        return self.act(x) if self.act else x


class TFFusedInvertedBottleneck(keras.layers.Layer):
    def __init__(self, w, **kwargs):
        super().__init__(**kwargs)
        self.expand, self.project = TFConvBNAct(w.expand), TFConvBNAct(w.project)

    def call(self, x):
        return self.project(self.expand(x))


class TFUniversalInvertedBottleneck(keras.layers.Layer):
    """UIB with its optional depthwise convs and its residual; layer scale arrives folded."""

    def __init__(self, w, **kwargs):
        super().__init__(**kwargs)
        self.convs = [TFConvBNAct(m) for m in (w.dw_start, w.pw_exp, w.dw_mid, w.pw_proj)
                      if isinstance(m, ConvBNAct)]
        self.has_residual = w.has_residual

    def call(self, x):
        out = x
        for conv in self.convs:
            out = conv(out)
        return x + out if self.has_residual else out


class TFBatchNorm(keras.layers.Layer):
    """An inference BatchNorm as one per-channel multiply and add (constants)."""

    def __init__(self, bn, **kwargs):
        super().__init__(**kwargs)
        scale = _array(bn.weight) / np.sqrt(_array(bn.running_var) + bn.eps)
        self.scale = tf.constant(scale)
        self.shift = tf.constant(_array(bn.bias) - _array(bn.running_mean) * scale)

    def call(self, x):
        return x * self.scale + self.shift


class TFMobileMultiQueryAttention(keras.layers.Layer):
    """Mobile MQA on NHWC maps: x + project(softmax(q k^T) v), `heads` query heads, one key/value head.

    As the key and value are shared, the heads fold into the query length: q is (B, H*W*heads,
    key_dim) against k (B, P, key_dim), so two rank-3 batch matmuls do all heads at once. The
    1/sqrt(key_dim) scale is folded into the query conv.
    """

    def __init__(self, w, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.key_dim, self.value_dim = w.heads, w.key_dim, w.value_dim
        self.norm = TFBatchNorm(w.norm) if isinstance(w.norm, FOLDABLE_NORMS) else None
        self.query = conv2d(w.query, scale=w.scale, name='mqa_query')
        self.key_down = TFConvBNAct(w.key_down) if isinstance(w.key_down, ConvBNAct) else None
        self.value_down = TFConvBNAct(w.value_down) if isinstance(w.value_down, ConvBNAct) else None
        self.key, self.value = conv2d(w.key, name='mqa_key'), conv2d(w.value, name='mqa_value')
        self.project = conv2d(w.output, name='mqa_output')

    def call(self, x):
        return x + self.branch(x)

    def branch(self, x):
        """The attention branch, project(attention(norm(x))), which the residual adds to x."""
        _, h, w, _ = x.shape
        normed = self.norm(x) if self.norm else x
        k = self.key(self.key_down(normed) if self.key_down else normed)
        v = self.value(self.value_down(normed) if self.value_down else normed)
        kv_len = k.shape[1] * k.shape[2]
        out = self.attend(self.split_heads(self.query(normed)), tf.reshape(k, (-1, kv_len, self.key_dim)),
                          tf.reshape(v, (-1, kv_len, self.value_dim)))
        return self.project(self.merge_heads(out, h, w))

    def split_heads(self, q):
        """(B, H, W, heads * key_dim), channels head-major as PyTorch's reshape reads them ->
        (B, H*W*heads, key_dim), rows ordered (pixel, head)."""
        return tf.reshape(q, (-1, q.shape[1] * q.shape[2] * self.heads, self.key_dim))

    def merge_heads(self, out, h, w):
        """(B, H*W*heads, value_dim), rows ordered (pixel, head) -> (B, H, W, heads * value_dim)."""
        return tf.reshape(out, (-1, h, w, self.heads * self.value_dim))

    @staticmethod
    def attend(q, k, v):
        """softmax(q k^T) v: the two BATCH_MATMULs and the SOFTMAX that int8 exports keep in float
        (`tflite_int8.FLOAT_OPS`)."""
        return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1), v)


KERAS_BLOCKS = {
    ConvBNAct: TFConvBNAct,
    FusedInvertedBottleneck: TFFusedInvertedBottleneck,
    UniversalInvertedBottleneck: TFUniversalInvertedBottleneck,
    MobileMultiQueryAttention: TFMobileMultiQueryAttention,
}


def keras_block(block):
    for torch_type, keras_type in KERAS_BLOCKS.items():
        if isinstance(block, torch_type):
            return keras_type(block)
    raise TypeError(f'yolov5-mnv4: no Keras layer for {type(block).__name__}')


class TFMobileNetV4Stage(keras.layers.Layer):
    """The Keras copy of a `MobileNetV4Stage`, built by YOLOv5's models/tf.py parse_model as
    `TFMobileNetV4Stage(c1, c2, variant, index, w=<the PyTorch stage>)`.

    The PyTorch stage normally arrives fused (export.py loads with fuse=True); an unfused one is
    fused on a copy here, so the Keras model always equals the fused PyTorch model.
    """

    def __init__(self, c1, c2, variant, index, w=None, **kwargs):
        super().__init__(**kwargs)
        if w is None:
            raise ValueError('TFMobileNetV4Stage copies a PyTorch MobileNetV4Stage: pass it as w=')
        if (w.variant, w.index) != (variant, index):
            raise ValueError(f'TFMobileNetV4Stage({variant!r}, {index}) got the PyTorch stage '
                             f'({w.variant!r}, {w.index})')
        w = fuse_blocks(copy.deepcopy(w).float().eval())
        self.blocks = [keras_block(block) for block in w]

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x
