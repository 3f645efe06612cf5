#!/usr/bin/env python3
"""Small datasets for YOLOv5's other tasks, made deterministically from a YOLO detection set
(coco128, or the embedded coco8), for the seg and classify smokes and tests:

    python tests/tools/make_task_data.py seg --source ../shared/datasets/coco128 --out /tmp/coco128-seg
    python tests/tools/make_task_data.py classify --source ../shared/datasets/coco128 --out /tmp/coco128-cls

seg: the same images; each box becomes an instance polygon, the ellipse inscribed in the box
(24 vertices), so every mask is exact and lies inside its real object's box (YOLOv5's segment
label format: class x1 y1 x2 y2 ... normalised). A shape stand-in, not COCO's masks.
classify: an ImageFolder (train/<class>/, val/<class>/) of object crops (the box grown by 10%,
at least 24 px on a side) of the most frequent classes in the train split, at most --per-class each.
"""
import argparse
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2

SPLITS = ('train2017', 'val2017')
VERTICES = 24


def read_boxes(label):
    if not label.is_file():
        return []
    return [(int(r[0]), *map(float, r[1:5])) for r in (line.split() for line in label.read_text().splitlines()) if r]


def ellipse(x, y, w, h):
    points = []
    for k in range(VERTICES):
        a = 2 * math.pi * k / VERTICES
        points += [min(max(x + w / 2 * math.cos(a), 0.0), 1.0), min(max(y + h / 2 * math.sin(a), 0.0), 1.0)]
    return points


def make_seg(source, out):
    for split in SPLITS:
        (out / 'images' / split).mkdir(parents=True, exist_ok=True)
        (out / 'labels' / split).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / 'images' / split).glob('*.jpg')):
            shutil.copyfile(image, out / 'images' / split / image.name)
            rows = [f'{c} ' + ' '.join(f'{v:.6f}' for v in ellipse(x, y, w, h))
                    for c, x, y, w, h in read_boxes(source / 'labels' / split / f'{image.stem}.txt')]
            (out / 'labels' / split / f'{image.stem}.txt').write_text(''.join(r + '\n' for r in rows))
    return sum(1 for _ in (out / 'labels').rglob('*.txt'))


def make_classify(source, out, classes, per_class, names):
    counts = Counter(c for label in (source / 'labels' / SPLITS[0]).glob('*.txt') for c, *_ in read_boxes(label))
    chosen = [c for c, _ in counts.most_common(classes)]
    made = Counter()
    for split, folder in zip(SPLITS, ('train', 'val')):
        for image in sorted((source / 'images' / split).glob('*.jpg')):
            picture = None
            for i, (c, x, y, w, h) in enumerate(read_boxes(source / 'labels' / split / f'{image.stem}.txt')):
                if c not in chosen or made[folder, c] >= per_class:
                    continue
                picture = cv2.imread(str(image)) if picture is None else picture
                H, W = picture.shape[:2]
                x0, x1 = int((x - w * 0.55) * W), int((x + w * 0.55) * W)
                y0, y1 = int((y - h * 0.55) * H), int((y + h * 0.55) * H)
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
                if x1 - x0 < 24 or y1 - y0 < 24:
                    continue
                target = out / folder / names[c]
                target.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target / f'{image.stem}_{i}.jpg'), picture[y0:y1, x0:x1])
                made[folder, c] += 1
    return {f'{folder}/{names[c]}': n for (folder, c), n in sorted(made.items())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=['seg', 'classify'])
    parser.add_argument('--source', type=Path, required=True, help='YOLO detection dataset (images/, labels/)')
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--classes', type=int, default=3, help='classify: how many classes (most frequent first)')
    parser.add_argument('--per-class', type=int, default=30, help='classify: crops per class and split, at most')
    parser.add_argument('--names', type=Path, help='a YAML of class names (default: class<N>)')
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    if args.task == 'seg':
        print(f'make_task_data: {make_seg(args.source, args.out)} polygon label files in {args.out}')
    else:
        import yaml
        names = yaml.safe_load(args.names.read_text()) if args.names else {i: f'class{i}' for i in range(80)}
        names = dict(enumerate(names)) if isinstance(names, list) else names.get('names', names)
        made = make_classify(args.source, args.out, args.classes, args.per_class, names)
        print(f'make_task_data: crops in {args.out}: ' + ', '.join(f'{k} {v}' for k, v in made.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
