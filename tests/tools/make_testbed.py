"""Make the accuracy testbed (tests/data/testbed): an MNv4-Conv-S detector and stock yolov5n (the
control) trained from scratch by YOLOv5's own train.py on coco128's 128 train2017 images at 320 px,
with one recipe, until each detects its training images (mAP50 >= --target on them), then scored by
val.py on both splits (train2017: what it learned; val2017: held out).

    python tests/tools/make_testbed.py --yolov5 .cache/yolov5-v7.0 [--coco128 ../shared/datasets/coco128]

The recipe (tests/data/testbed/hyp.testbed.yaml) memorises: AdamW lr0 0.002 (linear to 0.1x over 300
epochs), warmup 2 epochs, no augmentation at all (no mosaic, flips, scale, colour), batch 16,
`--cache ram`. Stop rule: train.py validates every epoch on the train split; the run is stopped after
the first epoch whose mAP50 reaches --target, or at --epochs, and train.py's best.pt (highest
0.1 mAP50 + 0.9 mAP50-95 on that split) is kept, stripped to fp16 by YOLOv5's strip_optimizer. A
run folder that already reached the target is adopted, not retrained (resumable across sittings:
a stopped run continues with train.py --resume).
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / 'tests' / 'data' / 'testbed'
MODELS = {'mnv4-conv-s': 'yolov5-mnv4-conv-s.yaml', 'yolov5n': 'yolov5n.yaml'}
SIZE = 320
JPEG_QUALITY = 90


def resized_copy(coco128, out, size=SIZE):
    """coco128's train2017 and val2017 with each image's long side resized to `size` (INTER_AREA,
    JPEG quality 90) and the labels as they are (normalised coordinates do not change)."""
    import cv2
    for split in ('train2017', 'val2017'):
        (out / 'images' / split).mkdir(parents=True, exist_ok=True)
        (out / 'labels' / split).mkdir(parents=True, exist_ok=True)
        for image in sorted((coco128 / 'images' / split).glob('*.jpg')):
            im = cv2.imread(str(image))
            r = size / max(im.shape[:2])
            im = cv2.resize(im, (round(im.shape[1] * r), round(im.shape[0] * r)), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(out / 'images' / split / image.name), im, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            label = coco128 / 'labels' / split / f'{image.stem}.txt'
            if label.is_file():
                shutil.copyfile(label, out / 'labels' / split / label.name)
    return out


def data_yaml(root, val_split, path):
    import yaml

    from yolov5_mnv4.resources import COCO_NAMES
    path.write_text(yaml.safe_dump({'path': str(root), 'train': 'images/train2017', 'val': f'images/{val_split}',
                                    'names': dict(enumerate(COCO_NAMES))}, sort_keys=False))
    return path


def results(run):
    """[(epoch, mAP50, mAP50-95)] of a train.py run so far."""
    path = run / 'results.csv'
    if not path.is_file():
        return []
    rows = list(csv.reader(path.read_text().splitlines()))
    head = [h.strip() for h in rows[0]]
    e, m50, m = head.index('epoch'), head.index('metrics/mAP_0.5'), head.index('metrics/mAP_0.5:0.95')
    return [(int(r[e]), float(r[m50]), float(r[m])) for r in rows[1:] if r]


def train(yolov5, name, data, hyp, runs, target, epochs, env):
    run = runs / name
    done = [r for r in results(run) if r[1] >= target]
    if done and (run / 'weights' / 'best.pt').is_file():
        print(f'{name}: {run} reached mAP50 {done[0][1]:.3f} at epoch {done[0][0]}: adopted', flush=True)
        return run
    resume = (run / 'weights' / 'last.pt').is_file()
    command = ([sys.executable, 'train.py', '--resume', str(run / 'weights' / 'last.pt')] if resume else
               [sys.executable, 'train.py', '--cfg', MODELS[name], '--weights', '', '--data', str(data), '--hyp', str(hyp),
                '--optimizer', 'AdamW', '--device', 'cpu', '--epochs', str(epochs), '--img', str(SIZE), '--batch', '16',
                '--workers', '0', '--noplots', '--cache', 'ram', '--project', str(runs), '--name', name, '--exist-ok'])
    print(f'{name}: {" ".join(command[1:])}', flush=True)
    with open(runs / f'{name}.log', 'a') as log:
        proc = subprocess.Popen(command, cwd=yolov5, env=env, stdout=log, stderr=subprocess.STDOUT)
        seen = 0
        while proc.poll() is None:
            time.sleep(5)
            rows = results(run)
            for epoch, m50, m in rows[seen:]:
                print(f'{name}: epoch {epoch}: mAP50 {m50:.3f}, mAP50-95 {m:.3f} on the train split', flush=True)
            seen = len(rows)
            if rows and rows[-1][1] >= target:
                time.sleep(20)  # train.py saves best.pt and last.pt after validating
                proc.terminate()  # train.py keeps going after SIGINT
                proc.wait(timeout=120)
    return run


def val(yolov5, weights, data, env):
    """(mAP50, mAP50-95) of val.py on the data's val split."""
    import re
    out = subprocess.run([sys.executable, 'val.py', '--weights', str(weights), '--data', str(data), '--img', str(SIZE),
                          '--batch', '16', '--device', 'cpu', '--workers', '0'], cwd=yolov5, env=env,
                         capture_output=True, text=True, check=True)
    row = re.search(r'\s+all\s+\d+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)', out.stdout + out.stderr)
    return float(row.group(3)), float(row.group(4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, required=True, help='a YOLOv5 tree with the plugin applied')
    parser.add_argument('--coco128', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128')
    parser.add_argument('--work', type=Path, default=REPO / 'runs' / 'testbed', help='data copies and train.py runs')
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--target', type=float, default=0.5, help='stop at this mAP50 on the train split')
    parser.add_argument('--epochs', type=int, default=300)
    args = parser.parse_args()
    from yolov5_mnv4.hosts.offline import offline_env
    work = args.work.resolve()
    env = offline_env(work / 'state')
    data_root = work / f'coco128-{SIZE}'
    if not (data_root / 'images' / 'train2017').is_dir():
        resized_copy(args.coco128, data_root)
    on_train, on_val = data_yaml(data_root, 'train2017', work / 'train.yaml'), data_yaml(data_root, 'val2017', work / 'val.yaml')
    hyp = TESTBED / 'hyp.testbed.yaml'
    (TESTBED / 'weights').mkdir(parents=True, exist_ok=True)
    (TESTBED / 'train').mkdir(exist_ok=True)
    for split in ('images', 'labels'):
        shutil.copytree(data_root / split / 'train2017', TESTBED / split / 'train2017', dirs_exist_ok=True)
    for name in args.models:
        run = train(args.yolov5.resolve(), name, on_train, hyp, work / 'runs', args.target, args.epochs, env)
        best = TESTBED / 'weights' / f'{name}-coco128-{SIZE}.pt'
        shutil.copyfile(run / 'weights' / 'best.pt', best)
        subprocess.run([sys.executable, '-c', f'from utils.general import strip_optimizer; strip_optimizer({str(best)!r})'],
                       cwd=args.yolov5, env=env, check=True)
        shutil.copyfile(run / 'results.csv', TESTBED / 'train' / f'{name}.csv')
        scores = {split: val(args.yolov5.resolve(), best, data, env) for split, data in (('train2017', on_train), ('val2017', on_val))}
        print(f'{name}: {best.name} ({os.path.getsize(best) / 1e6:.1f} MB): ' + '; '.join(
            f'{split} mAP50 {m50:.3f}, mAP50-95 {m:.3f}' for split, (m50, m) in scores.items()), flush=True)


if __name__ == '__main__':
    main()
