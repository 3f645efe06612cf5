"""Mobile MQA: MobileNetV4's multi-query attention block for NCHW feature maps."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (
    FOLDABLE_NORMS,
    ConvBNAct,
    LayerScale,
    drop_path_or_identity,
    exporting,
    fold_bn_before_conv,
    fold_scale_into_conv,
)


def attend_explicit(q, k, v, scale):
    """softmax(q k^T * scale) v as plain matmuls, which every ONNX opset and TorchScript consumer runs.

    The heads are folded into the query length, as in `attend`, and the matmuls are 3-D, (B, heads * L,
    d) against the one key/value head's (B, S, d): a 4-D matmul under torch.export decomposes into
    broadcasting expand copies that ExecuTorch's XNNPACK delegate leaves outside (tests/test_runtimes.py
    exports both forms), where a 3-D one lowers to a batch matmul it runs.
    """
    b, heads, length, _ = q.shape
    q, k, v = q.reshape(b, heads * length, -1), k.reshape(b, k.shape[-2], -1), v.reshape(b, v.shape[-2], -1)
    out = torch.bmm((q * scale), k.transpose(1, 2)).softmax(dim=-1).bmm(v)
    return out.reshape(b, heads, length, -1)


def attend(q, k, v, scale):
    """softmax(q k^T * scale) v for `heads` query heads, q (B, heads, L, d), sharing one key/value
    head, k and v (B, 1, S, d). Eager runs PyTorch's fused kernel (on CPU 2.4x faster than the
    explicit form for Hybrid-L's /16 block, measured); export gets the explicit form.

    As every head attends to the same keys, the heads are folded into the query length: the kernel
    sees one head on both sides, (B, 1, heads * L, d), a shape the fused CUDA kernels (flash,
    memory-efficient) accept, where heads against one key/value head sends them to the math
    fallback, which builds the whole attention matrix.
    """
    if exporting():
        return attend_explicit(q, k, v, scale)
    b, heads, length, _ = q.shape
    out = F.scaled_dot_product_attention(q.reshape(b, 1, heads * length, -1), k, v, scale=scale)
    return out.view(b, heads, length, -1)


class MobileMultiQueryAttention(nn.Module):
    """x + layer_scale(attention(BN(x))) with `heads` query heads and one shared key and value head.

    With kv_stride 2 the keys and values are computed from their own depthwise 3x3 stride-2 conv + BN,
    which cuts the attention cost by 4. No biases; scale key_dim ** -0.5; the residual is always on.
    """

    def __init__(self, channels, *, heads, key_dim, value_dim, kv_stride, layer_scale=None, drop_path=0.0):
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.scale = key_dim ** -0.5
        self.norm = nn.BatchNorm2d(channels)
        self.query = nn.Conv2d(channels, heads * key_dim, 1, bias=False)
        self.key_down = self._downsampler(channels, kv_stride)
        self.key = nn.Conv2d(channels, key_dim, 1, bias=False)
        self.value_down = self._downsampler(channels, kv_stride)
        self.value = nn.Conv2d(channels, value_dim, 1, bias=False)
        self.output = nn.Conv2d(heads * value_dim, channels, 1, bias=False)
        self.layer_scale = LayerScale(channels, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = drop_path_or_identity(drop_path)

    @staticmethod
    def _downsampler(channels, stride):
        return ConvBNAct(channels, channels, kernel=3, stride=stride, groups=channels) if stride > 1 else nn.Identity()

    def queries_keys_values(self, x):
        """q (B, heads, HW, key_dim) and the shared k (B, 1, P, key_dim), v (B, 1, P, value_dim)."""
        b, _, h, w = x.shape
        normed = self.norm(x)
        q = self.query(normed).reshape(b, self.heads, self.key_dim, h * w).transpose(2, 3)
        # reshaped as q is: an unsqueeze here would stay outside ExecuTorch's XNNPACK delegate
        k = self.key(self.key_down(normed)).reshape(b, 1, self.key_dim, -1).transpose(2, 3)
        v = self.value(self.value_down(normed)).reshape(b, 1, self.value_dim, -1).transpose(2, 3)
        return q, k, v

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = self.queries_keys_values(x)
        out = attend(q, k, v, self.scale).transpose(2, 3).reshape(b, self.heads * self.value_dim, h, w)
        return x + self.drop_path(self.layer_scale(self.output(out)))

    def fuse(self):
        """Fold every BN and the layer scale into convs.

        The input BN folds into the 1x1 query/key/value convs only when nothing else reads it: with
        kv_stride 2 it also feeds the zero-padded depthwise downsamplers, where a folded shift would be
        wrong at the borders, so it stays a BN there.
        """
        for down in (self.key_down, self.value_down):
            if isinstance(down, ConvBNAct):
                down.fuse()
        if isinstance(self.norm, FOLDABLE_NORMS) and isinstance(self.key_down, nn.Identity):
            for conv in (self.query, self.key, self.value):
                fold_bn_before_conv(self.norm, conv)
            self.norm = nn.Identity()
        if isinstance(self.layer_scale, LayerScale):
            fold_scale_into_conv(self.layer_scale.gamma, self.output)
            self.layer_scale = nn.Identity()
