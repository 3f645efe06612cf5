#!/usr/bin/env python3
"""Smoke-run the stock YOLOv5 scripts on an MNv4 config, offline, on CPU:
train -> val -> detect -> export (TorchScript, ONNX) -> ONNX Runtime vs PyTorch on the best.pt in a
fresh process -> fine-tune from best.pt without --cfg.

    python scripts/smoke.py --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128
"""
import argparse
import csv
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from yolov5_mnv4.offline import offline_env

HERE = Path(__file__).resolve().parent
EMBEDDED = HERE.parent / 'plugin' / 'yolov5_mnv4' / 'data' / 'coco8'


def coco_names(yolov5):
    return yaml.safe_load((yolov5 / 'data' / 'coco128.yaml').read_text())['names']


def write_data_yaml(data, names, path):
    """A YOLOv5 data YAML for a folder with images/{train2017,val2017} (an absolute `path:`)."""
    spec = {'path': str(data), 'train': 'images/train2017', 'val': 'images/val2017', 'names': names}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def prepare_data(source, yolov5, work):
    """Copy a YOLO-format dataset (images/ and labels/ with train2017 and val2017) and write its YAML."""
    data = work / 'dataset'
    shutil.copytree(source, data, ignore=shutil.ignore_patterns('*.cache'))
    write_data_yaml(data, coco_names(yolov5), work / 'data.yaml')
    return work / 'data.yaml', sorted((data / 'images' / 'val2017').glob('*.jpg'))[0]


def work_folder(out, label):
    """`out`, or a new folder for this run in $TMPDIR, resolved."""
    return (out or Path(os.environ.get('TMPDIR', '/tmp')) / f'yolov5-mnv4-{label}-{os.getpid()}').resolve()


class Runner:
    def __init__(self, yolov5, work, env):
        self.yolov5, self.work, self.env, self.times = yolov5, work, env, {}

    def __call__(self, step, *args):
        shown = ' '.join(map(str, args if args[0] != '-c' else ('-c <inline check>', *args[2:])))
        print(f'\n=== {step}: python {shown}', flush=True)
        log = self.work / f'{step}.log'
        start = time.perf_counter()
        with open(log, 'w') as out:
            proc = subprocess.run([sys.executable, *map(str, args)], cwd=self.yolov5, env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT)
        self.times[step] = time.perf_counter() - start
        text = log.read_text()
        if proc.returncode != 0:
            print(text[-4000:])
            raise SystemExit(f'smoke: {step} failed (exit {proc.returncode}); log: {log}')
        print(f'=== {step}: ok in {self.times[step]:.1f} s (log: {log})', flush=True)
        return text


def check(condition, message):
    if not condition:
        raise SystemExit(f'smoke: {message}')


def finite_losses(results_csv):
    with open(results_csv) as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    check(rows, f'{results_csv} has no epochs')
    losses = [float(rows[-1][k]) for k in ('train/box_loss', 'train/obj_loss', 'train/cls_loss')]
    check(all(math.isfinite(x) for x in losses), f'non-finite training losses {losses}')
    return losses


def epoch_seconds(train_log):
    """Seconds the first training epoch's batches took, from train.py's progress bar: tqdm's
    "8/8 [00:17<00:00" (v7.0) or ultralytics' "8/8 1.9s/it 15.2s" (master)."""
    epochs = train_log[train_log.find('GPU_mem'):]  # after the epoch table header: not the dataset scans
    bar = re.compile(r'(\d+)/(\d+) (?:\[(\d+):(\d\d)<|[\d.]+s/it ([\d.]+)s)')
    for done, total, minutes, seconds, elapsed in bar.findall(epochs):
        if done == total:
            return float(elapsed) if elapsed else int(minutes) * 60 + int(seconds)
    return None


# Every ONNX output against the PyTorch model's output in the same place: detections, and for a
# segmentation model also the mask prototypes.
COMPARE_ONNX = '''
import sys, numpy as np, torch, onnxruntime as ort
best, onnx_path, img = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = torch.load(best, map_location='cpu', weights_only=False)['model'].float().fuse().eval()
x = torch.rand(1, 3, img, img)
with torch.no_grad():
    ref = model(x)
got = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider']).run(None, {'images': x.numpy()})
for name, r, g in zip(('detections', 'prototypes'), ref, got):
    r = r.numpy()
    err = float(np.abs(r - g).max() / max(1.0, np.abs(r).max()))
    print(f'onnx-vs-torch: {name} {g.shape}, max relative difference {err:.2e}')
    assert r.shape == g.shape and err < 1e-4, (name, err)
'''


def run(args):
    yolov5 = args.yolov5.resolve()
    work = work_folder(args.out, 'smoke')
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data_yaml, image = prepare_data(args.data.resolve(), yolov5, work)
    run_step = Runner(yolov5, work, offline_env(work / 'state'))
    common = ['--img', args.img, '--device', 'cpu']

    log = run_step('train', 'train.py', '--cfg', args.cfg, '--weights', '', '--data', data_yaml, '--epochs',
                   args.epochs, '--batch-size', args.batch, '--workers', 0, '--noplots', '--exist-ok',
                   '--project', work, '--name', 'train', *common)
    best = work / 'train' / 'weights' / 'best.pt'
    check(best.is_file(), f'training wrote no {best}')
    losses = finite_losses(work / 'train' / 'results.csv')
    summary = next((line for line in log.splitlines() if 'summary:' in line), '')  # the first: unfused
    epoch = epoch_seconds(log)

    run_step('val', 'val.py', '--weights', best, '--data', data_yaml, '--project', work, '--name', 'val',
             '--exist-ok', *common)
    run_step('detect', 'detect.py', '--weights', best, '--source', image, '--project', work, '--name', 'detect',
             '--exist-ok', *common)
    check((work / 'detect' / image.name).is_file(), 'detect.py wrote no annotated image')
    run_step('export', 'export.py', '--weights', best, '--include', 'torchscript', 'onnx', *common)
    onnx_path = best.with_suffix('.onnx')
    check(best.with_suffix('.torchscript').is_file() and onnx_path.is_file(),
          'export.py did not write both the .torchscript and the .onnx file')  # v7.0 exits 0 on failure
    run_step('onnxruntime', '-c', COMPARE_ONNX, best, onnx_path, args.img)
    log = run_step('finetune', 'train.py', '--weights', best, '--data', data_yaml, '--epochs', 1,
                   '--batch-size', args.batch, '--workers', 0, '--noplots', '--exist-ok', '--project', work,
                   '--name', 'finetune', *common)
    transferred = next((line for line in log.splitlines() if 'Transferred' in line), '')
    check(transferred, 'fine-tuning from best.pt did not transfer its weights')

    print(f'\nsmoke: {args.cfg} OK; final train losses (box, obj, cls) {losses}')
    print(f'smoke: {summary.strip()}')
    print(f'smoke: one epoch\'s training batches took {epoch} s at --img {args.img} (train.py\'s progress bar)')
    print(f'smoke: fine-tune without --cfg: {transferred.split("Transferred")[-1].strip()}')
    print('smoke: seconds per step: ' + ', '.join(f'{k} {v:.1f}' for k, v in run_step.times.items()))
    print(f'smoke: results in {work}')
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, required=True, help='YOLOv5 checkout with the plugin applied')
    parser.add_argument('--cfg', default='yolov5-mnv4-conv-s.yaml', help='config name or path')
    parser.add_argument('--data', type=Path, default=EMBEDDED, help='YOLO-format dataset folder')
    parser.add_argument('--img', type=int, default=160)
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--out', type=Path, help='work folder (default: a new folder in $TMPDIR)')
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
