"""A YOLOv5 weights file whose backbone comes from a timm MobileNetV4 checkpoint, for stock
`train.py --cfg <config> --weights <file>` (see scripts/timm_to_yolov5.py)."""
import datetime

import torch
import yaml

from .integration import STAGES_PER_ROW, YOLOV5_BN_EPS, backbone_row, with_pretrained
from .pretrained import rescale_bn_for_eps


def build_pretrained_model(yolo, cfg, source):
    """A DetectionModel (from the `models.yolo` module `yolo`) whose backbone is loaded from `source`."""
    return yolo.DetectionModel(with_pretrained(cfg, source))


def write_weights_file(yolo, cfg_path, source, out):
    """Save a YOLOv5 checkpoint of `cfg_path`'s model with the timm backbone; returns its tensor count.

    train.py rebuilds the model from the config, whose BatchNorms get YOLOv5's eps (1e-3), and copies
    tensors by name. The backbone BN scales are therefore rescaled to eps 1e-3 here, so that the
    rebuilt model computes exactly timm's features in eval mode.
    """
    cfg = yaml.safe_load(open(cfg_path))
    model = build_pretrained_model(yolo, cfg, source)
    first = backbone_row(cfg)
    backbone = model.model[first:first + STAGES_PER_ROW]
    for stage in backbone:
        rescale_bn_for_eps(stage, YOLOV5_BN_EPS)
    # The model's yaml no longer names `source` (the DetectionModel dropped it once loaded): fine-tuning
    # from this file never needs the timm file again.
    torch.save({'model': model, 'ema': None, 'epoch': -1, 'optimizer': None, 'best_fitness': None,
                'date': datetime.datetime.now().isoformat(), 'mnv4_pretrained': str(source)}, out)
    return len(backbone.state_dict())
