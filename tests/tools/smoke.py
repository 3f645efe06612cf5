#!/usr/bin/env python3
"""Smoke-run the stock YOLOv5 scripts on an MNv4 config, offline, on CPU: the demo's steps
(yolov5_mnv4.cli.demo: train -> val -> detect -> export TorchScript and ONNX), then ONNX Runtime vs
PyTorch on the best.pt in a fresh process, and a fine-tune from best.pt without --cfg.

    python tests/tools/smoke.py --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128
"""
import argparse
import csv
import math
import re
import shutil
import sys
from pathlib import Path

from yolov5_mnv4.cli.demo import Runner, add_run_arguments, check, prepare_data, train_val_detect_export, work_folder
from yolov5_mnv4.hosts.offline import offline_env
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


TESTS = Path(__file__).resolve().parents[1]
ONNX_BOUND = 1e-4  # boxes relative to the largest coordinate, scores (and mask coefficients) absolute

# Run inside the tree: `python -c COMPARE_ONNX best.pt <img>`. A model of one epoch barely depends on
# its input (2.7e-4 between two images, measured for Conv-S), so the parity is checked on a copy of
# best.pt with BatchNorm statistics of the embedded train images, exported by the tree's own export.py
# (its run(), as `export.py --include onnx` does): every ONNX output against the PyTorch model's output
# in the same place on two real images, detections and for a segmentation model the mask prototypes.
COMPARE_ONNX = f'''
import sys
from pathlib import Path
sys.path.insert(0, {str(TESTS)!r})
import numpy as np, onnxruntime as ort, torch
import export
from helpers import assert_input_dependent, input_dependent_, output_errors, real_images, write_checkpoint
best, img, bound = Path(sys.argv[1]), int(sys.argv[2]), {ONNX_BOUND!r}
model = torch.load(best, map_location='cpu', weights_only=False)['model'].float()
calibrated = write_checkpoint(input_dependent_(model, img, peak=False), best.with_name(best.stem + '-calibrated.pt'))
export.run(weights=str(calibrated), imgsz=(img, img), include=('onnx',), device='cpu')
model = torch.load(calibrated, map_location='cpu', weights_only=False)['model'].float().fuse().eval()
x = real_images(img, 2)
with torch.no_grad():
    ref = model(x)
assert_input_dependent(ref[0], bound, 'best.pt with calibrated BatchNorms')
session = ort.InferenceSession(str(calibrated.with_suffix('.onnx')), providers=['CPUExecutionProvider'])
for i in range(2):
    got = session.run(None, {{'images': x[i:i + 1].numpy()}})
    boxes, scores = output_errors(got[0], ref[0][i:i + 1])
    print(f'onnx-vs-torch: image {{i}}: detections {{got[0].shape}}, boxes {{boxes:.2e}} of the largest coordinate, '
          f'scores {{scores:.2e}}')
    assert got[0].shape == tuple(ref[0][i:i + 1].shape) and max(boxes, scores) < bound, (boxes, scores)
    if len(got) > 1:
        protos = ref[1][i:i + 1].numpy()
        error = float(np.abs(got[1] - protos).max() / np.abs(protos).max())
        print(f'onnx-vs-torch: image {{i}}: prototypes {{got[1].shape}}, {{error:.2e}} of the largest')
        assert got[1].shape == protos.shape and error < bound, error
'''


def run(args):
    yolov5 = args.yolov5.resolve()
    work = work_folder(args.out, 'smoke')
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data_yaml, image = prepare_data((args.data or embedded_dataset()).resolve(), work)
    run_step = Runner(yolov5, work, offline_env(work / 'state'))
    best, log = train_val_detect_export(run_step, work, data_yaml, image, args.cfg, args.img, args.epochs, args.batch)
    losses = finite_losses(work / 'train' / 'results.csv')
    summary = next((line for line in log.splitlines() if 'summary:' in line), '')  # the first: unfused
    epoch = epoch_seconds(log)
    run_step('onnxruntime', '-c', COMPARE_ONNX, best, args.img)
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
