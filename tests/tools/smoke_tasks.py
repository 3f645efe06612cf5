#!/usr/bin/env python3
"""Smoke-run YOLOv5's other tasks on MNv4 backbones through the stock scripts, offline, on CPU:

seg:      segment/train.py -> segment/val.py -> segment/predict.py -> export.py --include onnx
          -> ONNX Runtime vs PyTorch (detections and mask prototypes), on polygons made from the boxes
classify: classify/train.py --model <an MNv4 detection checkpoint> --cutoff 5 -> classify/val.py
          -> classify/predict.py, on an ImageFolder of object crops

    python tests/tools/smoke_tasks.py seg --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128
    python tests/tools/smoke_tasks.py classify --yolov5 .cache/yolov5-v7.0 --data ../shared/datasets/coco128
"""
import argparse
import os
import sys
from pathlib import Path

from make_task_data import make_classify, make_seg
from smoke import COMPARE_ONNX
from yolov5_mnv4.cli.demo import Runner, check, work_folder
from yolov5_mnv4.hosts.offline import offline_env
from yolov5_mnv4.resources import COCO_NAMES, embedded_dataset, write_data_yaml

TESTS = Path(__file__).resolve().parents[1]
SAVE_DETECTION_CHECKPOINT = '''
import sys, torch
sys.path.insert(0, sys.argv[3])
from helpers import write_checkpoint
from models.yolo import DetectionModel
torch.manual_seed(0)
write_checkpoint(DetectionModel(sys.argv[1]), sys.argv[2])
'''


DESCRIBE_CLASSIFIER = '''
import sys, torch
model = torch.load(sys.argv[1], map_location='cpu', weights_only=False)['model']
stages = sum(type(m).__name__ == 'MobileNetV4Stage' for m in model.model)
head = model.model[-1]
print(f'classify-model: {stages} MNv4 stages + {type(head).__name__}(in={head.conv.conv.in_channels}, '
      f'classes={head.linear.out_features})')
'''


def seg(args, step, work, yolov5):
    data = work / 'seg-data'
    make_seg((args.data or embedded_dataset()).resolve(), data)
    write_data_yaml(data, COCO_NAMES, work / 'seg.yaml')
    common = ['--img', args.img, '--device', 'cpu']
    step('seg-train', 'segment/train.py', '--cfg', args.cfg or 'yolov5-mnv4-conv-s-seg.yaml', '--weights', '',
         '--data', work / 'seg.yaml', '--epochs', 1, '--batch-size', args.batch, '--workers', 0, '--noplots',
         '--project', work, '--name', 'seg', '--exist-ok', *common)
    best = work / 'seg' / 'weights' / 'best.pt'
    check(best.is_file(), f'segment/train.py wrote no {best}')
    log = step('seg-val', 'segment/val.py', '--weights', best, '--data', work / 'seg.yaml', '--project', work,
               '--name', 'seg-val', '--exist-ok', *common)
    check(' all ' in log, 'segment/val.py printed no results row')
    image = sorted((data / 'images' / 'val2017').glob('*.jpg'))[0]
    step('seg-predict', 'segment/predict.py', '--weights', best, '--source', image, '--project', work,
         '--name', 'seg-predict', '--exist-ok', *common)
    check((work / 'seg-predict' / image.name).is_file(), 'segment/predict.py wrote no image')
    step('seg-export', 'export.py', '--weights', best, '--include', 'onnx', *common)
    check(best.with_suffix('.onnx').is_file(), 'export.py wrote no .onnx')
    return step('seg-onnxruntime', '-c', COMPARE_ONNX, best, args.img)


def classify(args, step, work, yolov5):
    data = work / 'cls-data'
    made = make_classify((args.data or embedded_dataset()).resolve(), data, 3, 30, COCO_NAMES)
    print(f'classify data: {made}')
    detection = work / 'detection.pt'
    step('cls-detection-checkpoint', '-c', SAVE_DETECTION_CHECKPOINT, args.cfg or 'models/mnv4/yolov5-mnv4-conv-s.yaml',
         detection, TESTS)
    common = ['--img', args.img, '--device', 'cpu']
    log = step('cls-train', 'classify/train.py', '--model', detection, '--cutoff', 5, '--data', data, '--epochs', 1,
               '--batch-size', args.batch, '--workers', 0, '--project', work, '--name', 'cls', '--exist-ok',
               '--pretrained', 'False', *common)
    best = work / 'cls' / 'weights' / 'best.pt'
    check(best.is_file(), f'classify/train.py wrote no {best}')
    described = step('cls-model', '-c', DESCRIBE_CLASSIFIER, best)
    classes = len({key.split('/')[1] for key in made if key.startswith('train/')})
    check(f'classify-model: 4 MNv4 stages + Classify(in=96, classes={classes})' in described,
          'the classifier is not the MNv4 backbone cut at 5 with a Classify head on the /16 stage')
    log = step('cls-val', 'classify/val.py', '--weights', best, '--data', data, *common)
    check(' all ' in log, 'classify/val.py printed no results row')
    image = next((data / 'val').rglob('*.jpg'))
    log = step('cls-predict', 'classify/predict.py', '--weights', best, '--source', image, '--project', work,
               '--name', 'cls-predict', '--exist-ok', *common)
    check((work / 'cls-predict' / image.name).is_file(), 'classify/predict.py wrote no image')
    return log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=['seg', 'classify'])
    parser.add_argument('--yolov5', type=Path, required=True, help='YOLOv5 checkout with the plugin applied')
    parser.add_argument('--cfg', help='config (seg: a -seg config name; classify: a detection config path)')
    parser.add_argument('--data', type=Path, default=None,
                        help='YOLO-format detection dataset to derive from (default: the embedded one)')
    parser.add_argument('--img', type=int, default=None, help='image size (seg 160, classify 64)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--out', type=Path, help='work folder (default: a new folder in $TMPDIR)')
    args = parser.parse_args(argv)
    args.img = args.img or (160 if args.task == 'seg' else 64)
    yolov5 = args.yolov5.resolve()
    work = work_folder(args.out, args.task)
    work.mkdir(parents=True, exist_ok=True)
    env = offline_env(work / 'state')
    # The PyPI-built v7.0 tree's classify/train.py imports `utils` before it puts its root on sys.path
    # (a clone's does not): give it the root up front.
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(yolov5), env.get('PYTHONPATH')]))
    step = Runner(yolov5, work, env)
    (seg if args.task == 'seg' else classify)(args, step, work, yolov5)
    print(f'\nsmoke-{args.task}: OK; seconds per step: ' + ', '.join(f'{k} {v:.1f}' for k, v in step.times.items()))
    print(f'smoke-{args.task}: results in {work}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
