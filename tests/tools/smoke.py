#!/usr/bin/env python3
"""Smoke-run the stock YOLOv5 scripts on an MNv4 config, offline, on CPU: the demo's steps
(yolov5_mnv4.demo: train -> val -> detect -> export TorchScript and ONNX), then ONNX Runtime vs
PyTorch on the best.pt in a fresh process, and a fine-tune from best.pt without --cfg.

    python tests/tools/smoke.py --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128
"""
import argparse
import csv
import math
import re
import shutil
import sys

from yolov5_mnv4.demo import Runner, add_run_arguments, check, prepare_data, train_val_detect_export, work_folder
from yolov5_mnv4.offline import offline_env
from yolov5_mnv4.resources import embedded_dataset


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
    data_yaml, image = prepare_data((args.data or embedded_dataset()).resolve(), yolov5, work)
    run_step = Runner(yolov5, work, offline_env(work / 'state'))
    best, log = train_val_detect_export(run_step, work, data_yaml, image, args.cfg, args.img, args.epochs, args.batch)
    losses = finite_losses(work / 'train' / 'results.csv')
    summary = next((line for line in log.splitlines() if 'summary:' in line), '')  # the first: unfused
    epoch = epoch_seconds(log)
    run_step('onnxruntime', '-c', COMPARE_ONNX, best, best.with_suffix('.onnx'), args.img)
    log = run_step('finetune', 'train.py', '--weights', best, '--data', data_yaml, '--epochs', 1,
                   '--batch-size', args.batch, '--workers', 0, '--noplots', '--exist-ok', '--project', work,
                   '--name', 'finetune', '--img', args.img, '--device', 'cpu')
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
    parser = add_run_arguments(argparse.ArgumentParser(description=__doc__.split('\n')[0]), epochs=1)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
