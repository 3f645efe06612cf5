#!/usr/bin/env python3
"""What the start-up hook (plugin/yolov5_mnv4_startup.py, installed as yolov5_mnv4_startup.pth) costs a
Python process that never uses the Ultralytics package: `python -c pass` with the hook on and off
(YOLOV5_MNV4_STARTUP=0), interleaved, in one run. Prints the medians and their ratio and writes them
as JSON (default docs/results/startup.json).

    python scripts/benchmark_startup.py [--runs 60] [--out docs/results/startup.json]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(env):
    start = time.perf_counter()
    subprocess.run([sys.executable, '-c', 'pass'], env=env, check=True)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=60)
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'results' / 'startup.json')
    args = parser.parse_args(argv)
    on = {k: v for k, v in os.environ.items() if k != 'YOLOV5_MNV4_STARTUP'}
    off = {**on, 'YOLOV5_MNV4_STARTUP': '0'}
    probe = subprocess.run([sys.executable, '-c', 'import sys; print("yolov5_mnv4_startup" in sys.modules)'],
                           env=on, capture_output=True, text=True).stdout.strip()
    if probe != 'True':
        raise SystemExit('benchmark_startup: the start-up hook is not installed in this environment '
                         '(pip install the plugin: its wheel or an editable install puts yolov5_mnv4_startup.pth in site-packages)')
    times = {'on': [], 'off': []}
    for i in range(args.runs + 5):
        for name, env in (('on', on), ('off', off)) if i % 2 else (('off', off), ('on', on)):
            t = timed(env)
            if i >= 5:  # warm-up rounds dropped
                times[name].append(t)
    result = {'command': 'python scripts/benchmark_startup.py', 'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()}, Python {platform.python_version()}', 'runs': args.runs,
              'median_ms': {k: round(statistics.median(v) * 1e3, 2) for k, v in times.items()}}
    result['ratio'] = round(statistics.median(times['on']) / statistics.median(times['off']), 3)
    print(f'python -c pass: hook on {result["median_ms"]["on"]} ms, off {result["median_ms"]["off"]} ms '
          f'(medians of {args.runs}); ratio {result["ratio"]}')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
