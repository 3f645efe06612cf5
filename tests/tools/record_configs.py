#!/usr/bin/env python3
"""Record the SHA-256 of every config in models/ in plugin/yolov5_mnv4/shipped_configs.txt.

Run it after changing or adding a config (a test fails until you do). The file keeps every version
ever shipped: `yolov5-mnv4-apply` overwrites (upgrade) or deletes (--revert) a config in a YOLOv5
tree only when its bytes are one of them, so a file a user edited is never lost.
"""
import sys
from pathlib import Path

from yolov5_mnv4.hosts.yolov5_tree import config_digest, shipped_configs

REPO = Path(__file__).resolve().parents[2]
CONFIG_SOURCE = REPO / 'models'  # where the configs are edited
SHIPPED_CONFIGS = REPO / 'plugin' / 'yolov5_mnv4' / 'shipped_configs.txt'


def main():
    known = shipped_configs()
    new = [(config_digest(p.read_bytes()), p.name) for p in sorted(CONFIG_SOURCE.glob('*.yaml'))]
    new = [entry for entry in new if entry not in known]
    if new:
        with open(SHIPPED_CONFIGS, 'a') as f:
            f.writelines(f'{digest}  {name}\n' for digest, name in new)
    print(f'record_configs: {len(new)} new version(s) recorded in {SHIPPED_CONFIGS}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
