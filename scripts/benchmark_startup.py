#!/usr/bin/env python3
"""What the start-up hook (plugin/yolov5_mnv4_startup.py, installed as yolov5_mnv4_startup.pth) costs a
Python process that never uses the Ultralytics package: the import of the hook module itself, as
`python -X importtime -c pass` reports it (cumulative, in microseconds), against the whole start-up of
`python -c pass`; and `python -c pass` with the hook armed and switched off (YOLOV5_MNV4_STARTUP=0),
interleaved in one run (the difference is what arming adds). Medians; writes JSON (default
docs/results/startup.json).

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


def hook_import_us(env):
    """Cumulative microseconds of `import yolov5_mnv4_startup` in one `python -X importtime -c pass`."""
    err = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'pass'], env=env, capture_output=True,
                         text=True, check=True).stderr
    line = next(line for line in err.splitlines() if line.rstrip().endswith('yolov5_mnv4_startup'))
    return int(line.split('|')[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=60)
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'results' / 'startup.json')
    args = parser.parse_args(argv)
    # bytecode cached, as pip's install leaves it (PYTHONDONTWRITEBYTECODE would recompile the hook every time)
    on = {k: v for k, v in os.environ.items() if k not in ('YOLOV5_MNV4_STARTUP', 'PYTHONDONTWRITEBYTECODE')}
    off = {**on, 'YOLOV5_MNV4_STARTUP': '0'}
    probe = subprocess.run([sys.executable, '-c', 'import sys; print("yolov5_mnv4_startup" in sys.modules)'],
                           env=on, capture_output=True, text=True).stdout.strip()
    if probe != 'True':
        raise SystemExit('benchmark_startup: the start-up hook is not installed in this environment '
                         '(pip install the plugin: its wheel or an editable install puts yolov5_mnv4_startup.pth in site-packages)')
    times, imports = {'on': [], 'off': []}, []
    for i in range(args.runs + 5):
        for name, env in (('on', on), ('off', off)) if i % 2 else (('off', off), ('on', on)):
            t = timed(env)
            if i >= 5:  # warm-up rounds dropped
                times[name].append(t)
        if i >= 5:
            imports.append(hook_import_us(on))
    result = {'command': 'python scripts/benchmark_startup.py', 'date': datetime.date.today().isoformat(),
              'machine': f'{platform.machine()}, Python {platform.python_version()}', 'runs': args.runs,
              'median_ms': {k: round(statistics.median(v) * 1e3, 2) for k, v in times.items()}}
    result['ratio'] = round(statistics.median(times['on']) / statistics.median(times['off']), 3)
    result['hook_import_us'] = statistics.median(imports)
    result['hook_share'] = round(result['hook_import_us'] / 1e3 / result['median_ms']['on'], 4)
    print(f'python -c pass: hook armed {result["median_ms"]["on"]} ms, switched off {result["median_ms"]["off"]} ms '
          f'(medians of {args.runs}; ratio {result["ratio"]}); importing the hook module: '
          f'{result["hook_import_us"]} us, {result["hook_share"]:.2%} of the start-up')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
