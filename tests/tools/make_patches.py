#!/usr/bin/env python3
"""Regenerate patches/ from what `yolov5-mnv4-apply` does to real YOLOv5 trees (run after changing the
hook or the configs; tests/test_apply.py checks that the patches still equal the script).

    python tests/tools/make_patches.py v7.0=/path/to/yolov5-v7.0 master=/path/to/yolov5-master
"""
import sys
from pathlib import Path

from yolov5_mnv4.hosts.yolov5_tree import patch_for

PATCHES = Path(__file__).resolve().parents[2] / 'patches'


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for item in argv:
        ref, tree = item.split('=', 1)
        out = PATCHES / f'yolov5-{ref}.patch'
        out.write_text(patch_for(Path(tree)))
        print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
