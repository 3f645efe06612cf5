#!/usr/bin/env python3
"""Params and GFLOPs of every shipped YOLOv5 config, as YOLOv5 itself reports them: the `summary:` line
that `train.py --cfg <config>` prints (layers, parameters, GFLOPs at 640), taken from the tree's own
model builder for 80 classes. Writes docs/results/configs.json, from which the README's config
table is generated (scripts/render_docs.py).

    python scripts/config_summary.py --yolov5 .cache/yolov5-v7.0
    python scripts/config_summary.py --ultralytics     # the Ultralytics-package configs and their stock twins
    python scripts/config_summary.py --yolov5 /path/to/yolov5 --cfg my-config.yaml --out runs/configs.json
"""
import argparse
import datetime
import json
import logging
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r'summary: (\d+) layers, (\d+) parameters, \d+ gradients, ([\d.]+) GFLOPs')


def summary(yolo, config):
    """(layers, params, GFLOPs at 640) from the `summary:` line the tree logs when it builds `config`."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    own, level, propagate = yolo.LOGGER.handlers[:], yolo.LOGGER.level, yolo.LOGGER.propagate
    yolo.LOGGER.handlers, yolo.LOGGER.propagate = [handler], False  # the lines, not the layer tables on screen
    yolo.LOGGER.setLevel(logging.INFO)
    try:
        kind = yolo.SegmentationModel if config.stem.endswith('-seg') else yolo.DetectionModel
        kind(str(config), nc=80)
    finally:
        yolo.LOGGER.handlers, yolo.LOGGER.propagate = own, propagate
        yolo.LOGGER.setLevel(level)
    found = [SUMMARY.search(line) for line in lines]
    match = next((m for m in found if m), None)
    if match is None:
        raise SystemExit(f'config_summary: no "summary:" line with GFLOPs for {config.name} (is thop installed?)')
    return int(match[1]), int(match[2]), float(match[3])


def ultralytics_summary(out):
    """Params (unfused, as built) and GFLOPs at 640 (torch's FLOP counter, attention included, as the
    benchmark counts them) of every shipped Ultralytics-package config and its stock twin, 80 classes.
    Writes `out` (docs/results/ultralytics_configs.json)."""
    import torch

    from yolov5_mnv4.bench import UltralyticsHost, gflops, ultralytics_models
    from yolov5_mnv4.resources import ultralytics_configs
    model_class = UltralyticsHost().model_class

    def measured(name):  # ours from the plugin's configs, the package's own by name
        config = ultralytics_configs() / f'{name}.yaml'
        torch.manual_seed(0)
        model = model_class(str(config) if config.is_file() else f'{name}.yaml', nc=80, verbose=False).eval()
        return {'params': sum(p.numel() for p in model.parameters()), 'gflops_640': round(gflops(model, 640), 2)}

    rows, twins, models = [], {}, ultralytics_models()
    for i, (name, twin) in enumerate(models.items(), 1):
        rows.append({'config': f'{name}.yaml', 'twin': twin, **measured(name)})
        if twin not in twins:
            twins[twin] = measured(twin)
        print(f'[{i}/{len(models)}] {name}: {rows[-1]["params"]:,} parameters', flush=True)
    import ultralytics
    result = {'command': 'python scripts/config_summary.py --ultralytics', 'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()}, torch {torch.__version__}, ultralytics {ultralytics.__version__}',
              'classes': 80, 'rows': rows, 'twins': twins}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'config_summary: wrote {out}')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, help='a YOLOv5 tree (v7.0 or master) with the plugin applied')
    parser.add_argument('--ultralytics', action='store_true', help="the Ultralytics package's configs instead")
    parser.add_argument('--cfg', type=Path, nargs='*', help='configs to summarise (default: every shipped one)')
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'results' / 'configs.json')
    args = parser.parse_args(argv)
    if args.ultralytics:
        return ultralytics_summary(REPO / 'docs' / 'results' / 'ultralytics_configs.json'
                                   if args.out == parser.get_default('out') else args.out)
    if args.yolov5 is None:
        parser.error('--yolov5 is required (or --ultralytics)')
    sys.path.insert(0, str(REPO / 'scripts'))
    from benchmark import import_yolo
    yolo = import_yolo(args.yolov5.resolve())
    configs = args.cfg or sorted((REPO / 'models').glob('*.yaml'))
    rows = []
    for i, config in enumerate(configs, 1):
        layers, params, gflops = summary(yolo, config)
        rows.append({'config': config.name, 'layers': layers, 'params': params, 'gflops_640': gflops})
        print(f'[{i}/{len(configs)}] {config.name}: {params:,} parameters, {gflops} GFLOPs', flush=True)
    import torch
    result = {'command': 'python scripts/config_summary.py --yolov5 <YOLOv5 v7.0 tree>',
              'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()}, torch {torch.__version__}', 'classes': 80, 'rows': rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'config_summary: wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
