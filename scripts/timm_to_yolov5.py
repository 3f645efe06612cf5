#!/usr/bin/env python3
"""Turn a timm MobileNetV4 checkpoint into a YOLOv5 weights file for the stock train.py:

    python scripts/timm_to_yolov5.py --cfg yolov5-mnv4-conv-s.yaml --timm mnv4s.safetensors --out mnv4s.pt
    python train.py --cfg yolov5-mnv4-conv-s.yaml --weights mnv4s.pt --data ...   # in the YOLOv5 tree

--timm takes a .safetensors/.pth/.bin timm state dict, or a timm model name (needs timm and the network).
"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resolve_config(name, yolov5):
    for candidate in (Path(name), REPO / 'models' / name, yolov5 / 'models' / 'mnv4' / name):
        if candidate.is_file():
            return candidate
    raise SystemExit(f'timm_to_yolov5: config {name} not found (as a path, in {REPO / "models"} or the tree)')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cfg', required=True, help='an MNv4 config name or path')
    parser.add_argument('--timm', required=True, help='timm checkpoint file or timm model name')
    parser.add_argument('--out', type=Path, required=True, help='the YOLOv5 weights file to write (.pt)')
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0',
                        help='YOLOv5 checkout with the plugin applied')
    args = parser.parse_args(argv)
    from yolov5_mnv4.offline import offline_env
    os.environ.update(offline_env())
    sys.path.insert(0, str(args.yolov5.resolve()))
    import models.yolo
    from yolov5_mnv4.weights_file import write_weights_file
    count = write_weights_file(models.yolo, resolve_config(args.cfg, args.yolov5), args.timm, args.out)
    print(f'timm_to_yolov5: wrote {args.out} ({count} backbone tensors from {args.timm})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
