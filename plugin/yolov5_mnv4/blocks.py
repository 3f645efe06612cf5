"""MobileNetV4's convolutional blocks: the fused and the universal inverted bottleneck."""
import torch.nn as nn

from .layers import ConvBNAct, LayerScale, drop_path_or_identity, fold_scale_into_conv, make_divisible


class FusedInvertedBottleneck(nn.Module):
    """Full kxk conv expanding the width (BN + act), then a linear 1x1 projection (BN).

    In MobileNetV4 it is always stride 2, so it never has a residual.
    """

    def __init__(self, c_in, c_out, *, kernel, stride, expand, act_layer):
        super().__init__()
        hidden = make_divisible(c_in * expand)
        self.expand = ConvBNAct(c_in, hidden, kernel=kernel, stride=stride, act_layer=act_layer)
        self.project = ConvBNAct(hidden, c_out)

    def forward(self, x):
        return self.project(self.expand(x))

    def fuse(self):
        self.expand.fuse()
        self.project.fuse()


class UniversalInvertedBottleneck(nn.Module):
    """UIB: [start dw] -> 1x1 expand -> [middle dw, carries the stride] -> 1x1 linear projection.

    A kernel of 0 leaves that depthwise conv out (IB = (0, k), ConvNext = (k, 0), ExtraDW = (k, k),
    FFN = (0, 0)). The residual is added when stride is 1 and the width is kept.
    """

    def __init__(self, c_in, c_out, *, start_kernel, mid_kernel, stride, expand, act_layer,
                 layer_scale=None, drop_path=0.0):
        super().__init__()
        if stride > 1 and not mid_kernel:
            raise ValueError('a strided UIB needs a middle depthwise conv to carry the stride')
        hidden = make_divisible(c_in * expand)
        self.dw_start = ConvBNAct(c_in, c_in, kernel=start_kernel, groups=c_in) if start_kernel else nn.Identity()
        self.pw_exp = ConvBNAct(c_in, hidden, act_layer=act_layer)
        self.dw_mid = (ConvBNAct(hidden, hidden, kernel=mid_kernel, stride=stride, groups=hidden, act_layer=act_layer)
                       if mid_kernel else nn.Identity())
        self.pw_proj = ConvBNAct(hidden, c_out)
        self.has_residual = stride == 1 and c_in == c_out
        # Without a residual the scale multiplies the whole signal: timm's 1e-5 there leaves a model
        # trained from scratch with stage outputs of 1e-5 that the next BatchNorm cannot renormalize (its
        # eps dominates), and its backbone barely learns (docs/design.md). There it starts at 1.0, a
        # per-channel factor after the projection's BatchNorm; residual branches keep `layer_scale`.
        # Loaded weights (timm's, a checkpoint's) replace either.
        if layer_scale:
            self.layer_scale = LayerScale(c_out, layer_scale if self.has_residual else 1.0)
        else:
            self.layer_scale = nn.Identity()
        self.drop_path = drop_path_or_identity(drop_path if self.has_residual else 0.0)

    def forward(self, x):
        out = self.layer_scale(self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x)))))
        return x + self.drop_path(out) if self.has_residual else out

    def fuse(self):
        for conv_bn in (self.dw_start, self.pw_exp, self.dw_mid):
            if isinstance(conv_bn, ConvBNAct):
                conv_bn.fuse()
        # The scale multiplies the projection's norm output: it folds into the conv only with that norm.
        if self.pw_proj.fuse() and isinstance(self.layer_scale, LayerScale):
            fold_scale_into_conv(self.layer_scale.gamma, self.pw_proj.conv)
            self.layer_scale = nn.Identity()
