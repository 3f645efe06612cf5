"""A YOLOv5 weights file whose backbone comes from a timm MobileNetV4 checkpoint, for stock
`train.py --cfg <config> --weights <file>`. As a command (installed with the plugin):

    yolov5-mnv4-convert --cfg yolov5-mnv4-conv-s.yaml --timm mnv4s.safetensors --out mnv4s.pt   # in the tree
    python train.py --cfg yolov5-mnv4-conv-s.yaml --weights mnv4s.pt --data ...
    yolov5-mnv4-convert --classify --cfg yolov5-mnv4-conv-s.yaml --timm mnv4s.safetensors --out mnv4s-cls.pt
    python classify/train.py --model mnv4s-cls.pt --data <ImageFolder> ...

--timm takes a .safetensors/.pth/.bin timm state dict, or a timm model name (needs timm and the network).
The YOLOv5 tree is --yolov5, else the current folder.
"""
import argparse
import sys
from pathlib import Path

import yaml

from .. import __version__, resources
from ..hosts.rows import STAGES_PER_ROW, backbone_row, with_pretrained
from ..hosts.yolov5 import YOLOV5_BN_EPS, write_checkpoint
from ..hosts.yolov5_tree import ApplyError, find_tree
from ..pretrained import rescale_bn_for_eps


def build_pretrained_model(yolo, cfg, source):
    """A DetectionModel (from the `models.yolo` module `yolo`) whose backbone is loaded from `source`."""
    return yolo.DetectionModel(with_pretrained(cfg, source))


CLASSIFY_CUTOFF = 6  # layers 0-4 (the whole backbone) kept; Classify replaces layer 5, the SPPF


def write_weights_file(yolo, cfg, source, out, classify=False):
    """Save a YOLOv5 checkpoint of the model of `cfg` (a config dict or a path) with the timm backbone;
    returns its backbone tensor count.

    With `classify`, the checkpoint holds a ClassificationModel instead, for the stock
    `classify/train.py --model <out>`: the five stages and YOLOv5's Classify head (conv 1280, pool,
    linear; trained from scratch: timm's head has another layout), as `--cutoff 6` would cut it.

    train.py rebuilds the model from the config, whose BatchNorms get YOLOv5's eps (1e-3), and copies
    tensors by name. The backbone BN scales are therefore rescaled to eps 1e-3 here, so that the
    rebuilt model computes exactly timm's features in eval mode.
    """
    cfg = cfg if isinstance(cfg, dict) else yaml.safe_load(Path(cfg).read_text())
    model = build_pretrained_model(yolo, cfg, source)
    first = backbone_row(cfg)
    backbone = model.model[first:first + STAGES_PER_ROW]
    for stage in backbone:
        rescale_bn_for_eps(stage, YOLOV5_BN_EPS)
    # The model's yaml no longer names `source` (the DetectionModel dropped it once loaded): fine-tuning
    # from this file never needs the timm file again.
    if classify:
        model = yolo.ClassificationModel(model=model, nc=cfg['nc'], cutoff=CLASSIFY_CUTOFF)
    write_checkpoint(model, out, half=False, mnv4_pretrained=str(source))
    return len(backbone.state_dict())


def find_yolov5_tree(option, prog='yolov5-mnv4-convert'):
    """The YOLOv5 tree named by --yolov5, else the current folder; SystemExit naming the option."""
    try:
        return find_tree(option).root
    except ApplyError as err:
        raise SystemExit(f'{prog}: {err}: run it inside your YOLOv5 checkout or pass --yolov5 /path/to/yolov5') from None


def find_config(name, tree):
    """The config as a dict: a path, a config in the tree (models/mnv4, where apply puts them, or
    models/), else one the plugin ships."""
    for candidate in (Path(name).expanduser(), tree / 'models' / 'mnv4' / name, tree / 'models' / name):
        if candidate.is_file():
            return yaml.safe_load(candidate.read_text())
    shipped = resources.configs()
    if name in shipped:
        return yaml.safe_load(shipped[name])
    raise SystemExit(f'yolov5-mnv4-convert: config {name} not found (as a path, in {tree / "models" / "mnv4"} '
                     f'where yolov5-mnv4-apply installs the configs, or among the shipped ones: '
                     f'{", ".join(shipped)})')


def main(argv=None, prog='yolov5-mnv4-convert'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('--cfg', required=True, help='an MNv4 config name or path')
    parser.add_argument('--timm', required=True, help='timm checkpoint file or timm model name')
    parser.add_argument('--out', type=Path, required=True, help='the YOLOv5 weights file to write (.pt)')
    parser.add_argument('--yolov5', help='the YOLOv5 tree (default: the current folder)')
    parser.add_argument('--classify', action='store_true',
                        help='write a classification model (backbone + Classify) for classify/train.py --model')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    tree = find_yolov5_tree(args.yolov5, prog)
    cfg = find_config(args.cfg, tree)
    from ..hosts.offline import set_offline_defaults
    from ..hosts.yolov5 import register
    set_offline_defaults()  # the user's own settings win
    sys.path.insert(0, str(tree))
    import models.yolo
    register(models.yolo)  # a no-op where the hook did it; works on a tree yolov5-mnv4-apply has not touched
    count = write_weights_file(models.yolo, cfg, args.timm, args.out, classify=args.classify)
    print(f'yolov5-mnv4-convert: wrote {args.out} ({count} backbone tensors from {args.timm})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
