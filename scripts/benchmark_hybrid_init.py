#!/usr/bin/env python3
"""Training the hybrids from scratch: MobileNetV4's layer scale (1e-5 in Hybrid-M/L, as in timm) sits on
every UIB block, also the stride-2 and width-changing ones that have no residual, where it multiplies the
whole signal. This measures what that does, against an init that keeps the signal (layer scale 1.0 on
the blocks without a residual; the residual blocks and the attention keep 1e-5), with Conv-M (no layer
scale) as the reference curve:

1. the std of each returned stage's output of a freshly built backbone in train mode;
2. the stock train.py from scratch on the same data, recipe and seed, for each init: losses and
   val mAP per epoch (results.csv), and the stage scales of each best.pt on real images after.

    python scripts/benchmark_hybrid_init.py --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128 \
        --epochs 20 --img 160 --out runs/hybrid_init

Writes hybrid_init.json and hybrid_init.md to --out.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {'conv-m': ('yolov5-mnv4-conv-m.yaml', 'plugin'),
        'hybrid-m-init-1e-5': ('yolov5-mnv4-hybrid-m.yaml', 'reference'),
        'hybrid-m-init-1': ('yolov5-mnv4-hybrid-m.yaml', 'keep-signal')}

# Runs train.py in this process after arming the init: sys.argv[1] is the init, the rest train.py's arguments.
TRAIN = '''
import runpy, sys
init = sys.argv.pop(1)
if init != 'plugin':
    sys.path.insert(0, {scripts!r})
    from benchmark_hybrid_init import arm_init
    arm_init(init)
sys.argv[0] = 'train.py'
runpy.run_path('train.py', run_name='__main__')
'''


def arm_init(init):
    """Every UIB built from now on without a residual starts with layer scale 1e-5 ('reference': timm's
    and the TF code's init, on every block) or 1.0 ('keep-signal': there the scale is a per-channel
    factor after the projection's BatchNorm), whatever the plugin's default; residual blocks and
    attention keep 1e-5 either way."""
    import torch

    from yolov5_mnv4.blocks import UniversalInvertedBottleneck
    from yolov5_mnv4.layers import LayerScale
    value = {'reference': 1e-5, 'keep-signal': 1.0}[init]
    build = UniversalInvertedBottleneck.__init__

    def init_(self, *args, **kwargs):
        build(self, *args, **kwargs)
        if not self.has_residual and isinstance(self.layer_scale, LayerScale):
            with torch.no_grad():
                self.layer_scale.gamma.fill_(value)

    UniversalInvertedBottleneck.__init__ = init_
    return build


def stage_scales(backbone_or_stages, x):
    """std of each stage's output (train mode for a fresh backbone, eval for a trained detector)."""
    import torch
    stds = []
    with torch.no_grad():
        for stage in backbone_or_stages:
            x = stage(x)
            stds.append(float(x.float().std()))
    return stds


def fresh_scales():
    """{variant/init: stage output stds}: MobileNetV4 backbones as built, train mode, 8 random 256 px images."""
    import torch

    from yolov5_mnv4 import MobileNetV4
    from yolov5_mnv4.blocks import UniversalInvertedBottleneck
    x = torch.randn(8, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = {}
    for variant, inits in (('conv_medium', ['plugin']), ('hybrid_medium', ['reference', 'keep-signal']),
                           ('hybrid_large', ['reference', 'keep-signal'])):
        for init in inits:
            build = arm_init(init) if init != 'plugin' else None
            torch.manual_seed(0)
            out[f'{variant} init {init}'] = stage_scales(MobileNetV4(variant).train().stages, x)
            if build:
                UniversalInvertedBottleneck.__init__ = build
    return out


def trained_scales(tree, best, size):
    """Stage output stds of a trained detector (eval) on the first 8 embedded val/train images."""
    sys.path.insert(0, str(tree))
    sys.path.insert(0, str(REPO / 'tests'))  # first: a tree built from PyPI has a helpers.py of its own
    from models.experimental import attempt_load

    from helpers import real_images
    model = attempt_load(str(best), device='cpu', fuse=False).eval()
    x = real_images(size, 4, 'val2017')
    return stage_scales(model.model[:5], x)


def train(args, tree, data_yaml, name, cfg, init, env):
    cmd = [sys.executable, '-c', TRAIN.format(scripts=str(REPO / 'scripts')), init, '--cfg', cfg, '--weights', '',
           '--data', str(data_yaml), '--epochs', str(args.epochs), '--img', str(args.img), '--batch-size',
           str(args.batch), '--workers', '0', '--device', 'cpu', '--noplots', '--seed', '0', '--project',
           str(args.out.resolve()), '--name', name, '--exist-ok']
    log = open(args.out / f'{name}.log', 'w')
    return subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)


def epochs_of(results_csv):
    with open(results_csv) as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    keys = ('train/box_loss', 'train/obj_loss', 'train/cls_loss', 'metrics/mAP_0.5', 'metrics/mAP_0.5:0.95')
    return [{k: float(r[k]) for k in keys} for r in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128')
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument('--img', type=int, default=160)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--parallel', type=int, default=2, help='training runs at a time')
    parser.add_argument('--out', type=Path, default=REPO / 'runs' / 'hybrid_init')
    args = parser.parse_args(argv)
    from yolov5_mnv4.cli.demo import prepare_data
    from yolov5_mnv4.hosts.offline import offline_env
    tree = args.yolov5.resolve()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {'command': 'python scripts/benchmark_hybrid_init.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              'date': time.strftime('%Y-%m-%d'), 'fresh_stage_std': fresh_scales()}
    print(json.dumps(result['fresh_stage_std'], indent=1), flush=True)
    shutil.rmtree(args.out / 'data', ignore_errors=True)
    data_yaml, _ = prepare_data(args.data.resolve(), args.out / 'data')
    env = {**os.environ, **offline_env(args.out / 'state')}
    done = [name for name in RUNS if (args.out / name / 'results.csv').is_file()
            and len(epochs_of(args.out / name / 'results.csv')) == args.epochs]  # an earlier run's, kept
    pending, running, start = [(k, v) for k, v in RUNS.items() if k not in done], [], time.time()
    while pending or running:
        while pending and len(running) < args.parallel:
            name, (cfg, init) = pending.pop(0)
            print(f'hybrid_init: training {name} ({cfg}, init {init})', flush=True)
            running.append((name, train(args, tree, data_yaml, name, cfg, init, env)))
        time.sleep(5)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                print(f'hybrid_init: {name} finished (rc {proc.returncode}) after {time.time() - start:.0f} s', flush=True)
                if proc.returncode:
                    raise SystemExit(f'hybrid_init: training {name} failed: see {args.out / name}.log')
    os.environ.update(env)
    result['runs'] = {}
    for name, (cfg, init) in RUNS.items():
        folder = args.out / name
        result['runs'][name] = {'cfg': cfg, 'init': init, 'epochs': epochs_of(folder / 'results.csv'),
                                'trained_stage_std': trained_scales(tree, folder / 'weights' / 'best.pt', args.img)}
    (args.out / 'hybrid_init.json').write_text(json.dumps(result, indent=1) + '\n')
    shown = sorted({0, 4, 9, args.epochs - 1} & set(range(args.epochs)))
    lines = [f'{result["date"]}: `{result["command"]}`', '', 'Training losses (box / obj / cls) and val mAP50 by epoch:', '',
             '| run | ' + ' | '.join(f'epoch {i + 1}' for i in shown) + ' |', '|---|' + '---|' * len(shown)]
    for name, run in result['runs'].items():
        cells = [f'{e["train/box_loss"]:.4f} / {e["train/obj_loss"]:.4f} / {e["train/cls_loss"]:.4f}; '
                 f'{e["metrics/mAP_0.5"]:.4f}' for e in (run['epochs'][i] for i in shown)]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines += ['', '| backbone | stage output std (fresh, train mode; stem, /4, /8, /16, /32) |', '|---|---|']
    lines += [f'| {k} | ' + ' / '.join(f'{v:.2g}' for v in stds) + ' |' for k, stds in result['fresh_stage_std'].items()]
    lines += ['', '| run | stage output std after training (eval, 4 real images) |', '|---|---|']
    lines += [f'| {k} | ' + ' / '.join(f'{v:.2g}' for v in r['trained_stage_std']) + ' |' for k, r in result['runs'].items()]
    (args.out / 'hybrid_init.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
