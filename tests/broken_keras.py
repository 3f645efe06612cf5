"""Deliberately wrong Keras copies of our blocks: the negative controls of the export parity tests.

Each bug is one plausible mistake in `yolov5_mnv4.hosts.yolov5_keras`, put in with pytest's monkeypatch, so
that a test can show that its bound rejects it (a parity test that passes a broken export proves
nothing). `install(name, monkeypatch)` puts bug `name` in; `BUG_VARIANTS[name]` is the variant whose
blocks have the code the bug touches. TensorFlow is imported by `install` only, so that the tests
that use this module collect (and skip, saying why) without it.
"""
BUG_VARIANTS = {
    'query-head-minor': 'hybrid_medium',  # query channels read as (key_dim, heads), not (heads, key_dim)
    'output-head-first': 'hybrid_medium',  # attention output rows read back as (head, pixel)
    'no-scale': 'hybrid_medium',  # the 1/sqrt(key_dim) scale of the logits dropped
    'mean-of-values': 'hybrid_medium',  # every query gets the mean of the values (uniform attention)
    'same-padding': 'conv_small',  # stride-2 convs with TF's 'same' padding: windows one pixel off
    'no-residual': 'conv_small',  # the UIB residual lost
    'tanh-gelu': 'hybrid_large',  # tanh GELU where PyTorch's default is erf (Hybrid-L has GELU)
}
ATTENTION_BUGS = [name for name, variant in BUG_VARIANTS.items() if variant == 'hybrid_medium']


def install(name, monkeypatch):
    import tensorflow as tf
    import torch.nn as nn
    from tensorflow import keras

    from yolov5_mnv4.attention import MobileMultiQueryAttention
    from yolov5_mnv4.blocks import UniversalInvertedBottleneck
    from yolov5_mnv4.hosts import yolov5_keras as tf_layers

    Attention = tf_layers.TFMobileMultiQueryAttention

    class QueryHeadMinor(Attention):
        def split_heads(self, q):
            q = tf.reshape(q, (-1, q.shape[1] * q.shape[2], self.key_dim, self.heads))
            return tf.reshape(tf.transpose(q, (0, 1, 3, 2)), (-1, q.shape[1] * self.heads, self.key_dim))

    class OutputHeadFirst(Attention):
        def merge_heads(self, out, h, w):
            out = tf.reshape(out, (-1, self.heads, h, w, self.value_dim))
            return tf.reshape(tf.transpose(out, (0, 2, 3, 1, 4)), (-1, h, w, self.heads * self.value_dim))

    class NoScale(Attention):
        def __init__(self, w, **kwargs):
            super().__init__(w, **kwargs)
            self.query = tf_layers.conv2d(w.query)

    class MeanOfValues(Attention):
        @staticmethod
        def attend(q, k, v):
            return tf.repeat(tf.reduce_mean(v, axis=1, keepdims=True), q.shape[1], axis=1)

    class NoResidual(tf_layers.TFUniversalInvertedBottleneck):
        def __init__(self, w, **kwargs):
            super().__init__(w, **kwargs)
            self.has_residual = False

    conv2d, activation = tf_layers.conv2d, tf_layers.activation

    def same_padded(conv, scale=1.0, name=None):
        layer = conv2d(conv, scale, name)
        if isinstance(layer, keras.Sequential):  # ZeroPadding2D + the conv with 'valid' padding
            layer = layer.layers[-1]
            layer.padding = 'same'
        return layer

    def tanh_gelu(module):
        return (lambda x: tf.nn.gelu(x, approximate=True)) if isinstance(module, nn.GELU) else activation(module)

    attention_layers = {'query-head-minor': QueryHeadMinor, 'output-head-first': OutputHeadFirst,
                        'no-scale': NoScale, 'mean-of-values': MeanOfValues}
    if name in attention_layers:
        monkeypatch.setitem(tf_layers.KERAS_BLOCKS, MobileMultiQueryAttention, attention_layers[name])
    elif name == 'no-residual':
        monkeypatch.setitem(tf_layers.KERAS_BLOCKS, UniversalInvertedBottleneck, NoResidual)
    elif name == 'same-padding':
        monkeypatch.setattr(tf_layers, 'conv2d', same_padded)
    elif name == 'tanh-gelu':
        monkeypatch.setattr(tf_layers, 'activation', tanh_gelu)
    else:
        raise KeyError(f'no such bug: {name!r}; known: {", ".join(BUG_VARIANTS)}')
