"""The blog recipe's MNv4-Conv-S detector (the post named in the README), rebuilt for benchmarking only.

Its layers differ from ours, so it is built from our blocks with the blog code's deviations put back:
ReLU6 everywhere, no residual in any UIB, P5 taken after the classifier convs (960 then 1280, both
run at /32, so SPPF works on 1280 channels), its config's head (width 0.5, head P5 concat of SPPF),
and `fuse()` folding only YOLOv5's own Conv modules (its backbone BatchNorms stay unfused).
Not shipped as a model: this is what we replace.
"""
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from yolov5_mnv4 import specs
from yolov5_mnv4.blocks import UniversalInvertedBottleneck

REPO = Path(__file__).resolve().parents[1]
BLOG_CONV_SMALL = specs.Variant(
    'blog_conv_small',
    specs.CONV_SMALL.stages[:4] + (specs.CONV_SMALL.stages[4] + (specs.ConvBN(1, 1, 960), specs.ConvBN(1, 1, 1280)),),
    act_layer=nn.ReLU6)


def build_blog_detector(yolo):
    """A DetectionModel (from the `models.yolo` module `yolo`) equal in cost to the blog recipe's."""
    cfg = yaml.safe_load((REPO / 'models' / 'yolov5_mobilenetv4.yaml').read_text())
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4', [BLOG_CONV_SMALL.name]]
    specs.VARIANTS[BLOG_CONV_SMALL.name] = BLOG_CONV_SMALL  # known to the builder for this build only
    try:
        model = yolo.DetectionModel(cfg)
    finally:
        del specs.VARIANTS[BLOG_CONV_SMALL.name]
    for m in model.modules():
        if isinstance(m, UniversalInvertedBottleneck):
            m.has_residual = False
    return model


def blog_fuse(model, yolo):
    """The blog's fuse(): YOLOv5's own, which leaves the backbone's conv + BN pairs alone (given
    contiguous weights, as our fuse wrapper gives it: its fuse_conv_and_bn .view()s them)."""
    model.to(memory_format=torch.contiguous_format)
    return yolo.BaseModel.fuse.__wrapped__(model)
