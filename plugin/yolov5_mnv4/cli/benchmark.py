"""`yolov5-mnv4 benchmark`: which MobileNetV4 detector is fastest on this device, measured here, beside
its stock twin (yolov5n for Conv-S, yolov5s for the others), in every runtime installed.

    yolov5-mnv4 benchmark --quick                                     # Conv-S and yolov5n, PyTorch and ONNX Runtime, 320
    yolov5-mnv4 benchmark --models MNv4-Conv-S MNv4-Conv-M yolov5n yolov5s --sizes 320 640
    yolov5-mnv4 benchmark --runtimes torch onnxruntime openvino ncnn mnn executorch tflite --yolov5 /path/to/yolov5
    yolov5-mnv4 benchmark --models yolo11n-mnv4-conv-s yolo11n     # the Ultralytics package's models
    yolov5-mnv4 benchmark --weights best.pt --data data.yaml       # your checkpoint, with mAP in every runtime
    yolov5-mnv4 benchmark --runtimes mnn executorch tflite --precisions fp32 fp16 int8

Builds the models from their configs (random weights with BatchNorm statistics of the embedded
images: latency does not depend on training) in a YOLOv5 tree (--yolov5) or the PyPI `yolov5`
package, exports them once per runtime (cached in --out), times them interleaved, and writes a table
(terminal and Markdown), a CSV, JSON and a plot of latency against GFLOPs to --out.
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from .. import __version__, bench

QUICK = dict(models=['MNv4-Conv-S', 'yolov5n'], runtimes=['torch', 'onnxruntime'], sizes=[320], runs=1, reps=10, warmup=3)


def table(rows, ratios, runtimes, sizes):
    """(Markdown lines: one table per size, a cell "ms (IQR)" per runtime, and mAP where measured;
    the ratio table; the CSV's columns: every raw field)."""
    columns = ['model', 'twin', 'params', 'gflops_640']
    lines = []
    for size in sizes:
        header = ['model', 'twin', 'params', 'GFLOPs (640)']
        cells = {r['model']: [r['model'], r['twin'], f'{r["params"]:,}', f'{r["gflops_640"]:.2f}'] for r in rows}
        for runtime in runtimes:
            columns += [f'{runtime}_{size}_ms', f'{runtime}_{size}_iqr']
            header.append(f'{bench.label(runtime)} ms (IQR)')
            for r in rows:
                ms = r.get(f'{runtime}_{size}_ms')
                cells[r['model']].append(f'{ms:.1f} ({r[f"{runtime}_{size}_iqr"]:.1f})' if ms is not None else
                                         'as PyTorch' if runtime == bench.CHANNELS_LAST else '-')
            if any(f'{runtime}_{size}_map50' in r for r in rows):
                columns += [f'{runtime}_{size}_map50', f'{runtime}_{size}_map']
                header.append(f'{bench.label(runtime)} mAP50 / mAP50-95')
                for r in rows:
                    cells[r['model']].append(f'{r[f"{runtime}_{size}_map50"]:.4f} / {r[f"{runtime}_{size}_map"]:.4f}'
                                             if f'{runtime}_{size}_map50' in r else '-')
        lines += [f'At {size}:', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header),
                  *('| ' + ' | '.join(c) + ' |' for c in cells.values()), '']
    ratio_lines = ['Latency ratio to the stock twin, measured side by side in each run (median of the runs, range):', '',
                   '| runtime, size | model / twin | ratio |', '|---|---|---|']
    for key, pairs in ratios.items():
        runtime, size = key.rsplit('_', 1)
        for pair, r in pairs.items():
            ratio_lines.append(f'| {bench.label(runtime)}, {size} | {pair} | {r["median"]:.2f} '
                               f'({r["min"]:.2f}-{r["max"]:.2f}) |')
    return lines, ratio_lines, columns


def summary(fair, sizes):
    """Markdown lines: each of our models against its stock twin in every runtime and size, the stock
    model at its best (bench.fair_ratios), with what each ratio says (bench.verdict)."""
    runtimes = list(dict.fromkeys(key.rsplit('_', 1)[0] for key in fair))
    pairs = list(dict.fromkeys(pair for key in fair for pair in fair[key]))
    header = ['runtime', *(f'{pair.replace("MNv4-", "").replace("/", " / ")}, {size}' for pair in pairs for size in sizes)]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for runtime in runtimes:
        cells = [bench.label(runtime)]
        for pair in pairs:
            for size in sizes:
                r = fair.get(f'{runtime}_{size}', {}).get(pair)
                layout = f', against {r["stock_layout"]}' if r and 'stock_layout' in r else ''
                cells.append('-' if r is None else f'{r["median"]:.2f} ({r["min"]:.2f}-{r["max"]:.2f}) {bench.verdict(r)}{layout}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def main(argv=None, prog='yolov5-mnv4 benchmark'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    ultralytics = bench.ultralytics_models()
    parser.add_argument('--models', nargs='*', choices=[*bench.OURS, *bench.STOCK, *ultralytics, *sorted(set(ultralytics.values()))],
                        metavar='MODEL', help='default: Conv-S, Conv-M and their twins; none: only --weights. YOLOv5: '
                        f'{", ".join([*bench.OURS, *bench.STOCK])}; the Ultralytics package: {", ".join(ultralytics)} '
                        f'and their twins {", ".join(sorted(set(ultralytics.values())))}')
    parser.add_argument('--runtimes', nargs='+', choices=list(bench.RUNTIMES),
                        help=f'default: every one installed but {", ".join(bench.ASKED_ONLY)} (which imports TensorFlow)')
    parser.add_argument('--precisions', nargs='+', choices=['fp32', *bench.PRECISIONS], default=['fp32'],
                        help='default fp32; fp16 (weights) in ' + ', '.join(bench.PRECISIONS['fp16']) + '; int8 in '
                        + ', '.join(bench.PRECISIONS['int8']) + ' (calibrated on the embedded images); each where offered')
    parser.add_argument('--sizes', nargs='+', type=int, help='default: 320 640')
    parser.add_argument('--runs', type=int, help='runs of interleaved rounds (default 3)')
    parser.add_argument('--reps', type=int, help='timed rounds per run (default 20)')
    parser.add_argument('--warmup', type=int, help='untimed rounds first (default 5)')
    parser.add_argument('--quick', action='store_true', help='Conv-S and yolov5n in PyTorch and ONNX Runtime at 320, one short run')
    parser.add_argument('--weights', nargs='+', type=Path, default=[], help="trained checkpoints (train.py's best.pt) to time too")
    parser.add_argument('--data', type=Path, help='a YOLO data YAML: also mAP of each --weights checkpoint in each runtime on its val images')
    parser.add_argument('--val-images', type=int, help='with --data: only the first N val images')
    parser.add_argument('--calibration', type=Path, help='int8: calibrate on the first 100 images of this folder '
                        '(default: the 12 embedded COCO images)')
    parser.add_argument('--yolov5', type=Path, help='a YOLOv5 checkout to build the models in (default: the PyPI yolov5 package)')
    parser.add_argument('--out', type=Path, default=Path('runs') / 'mnv4-benchmark', help='results and cached exports')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    # runtimes timed in turn: no thread pool may keep spinning on the cores after its run (OpenMP's
    # default for torch and NCNN; set before torch is imported, which bench does lazily)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    defaults = QUICK if args.quick else dict(models=['MNv4-Conv-S', 'MNv4-Conv-M', 'yolov5n', 'yolov5s'], runtimes=None,
                                               sizes=[320, 640], runs=3, reps=20, warmup=5)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option in ('runs', 'reps'):
        if getattr(args, option) < 1:
            parser.error(f'--{option} must be 1 or more')
    if args.warmup < 0:
        parser.error('--warmup must be 0 or more')
    for weights in args.weights:
        if not weights.is_file():
            parser.error(f'--weights {weights}: no such file')
    if args.data is not None and not args.weights:
        parser.error('--data measures the accuracy of trained checkpoints: give them with --weights')
    if args.data is not None and not args.data.is_file():
        parser.error(f'--data {args.data}: no such file')
    if args.calibration and not args.calibration.is_dir():
        parser.error(f'--calibration {args.calibration}: no such folder')
    installed = bench.available_runtimes()
    if args.runtimes is None:
        args.runtimes, asked_only = bench.default_runtimes(installed)
        for name in asked_only:
            print(f'{prog}: {bench.RUNTIMES[name][1]} is installed but imports TensorFlow: add it with --runtimes ... {name}')
    for name in [r for r in args.runtimes if not installed[r]]:
        print(f'{prog}: skipping {bench.RUNTIMES[name][1]}: its package ({bench.RUNTIMES[name][0]}) is not installed')
    args.runtimes = [r for r in args.runtimes if installed[r]]
    if not args.runtimes:
        parser.error('none of the runtimes asked for is installed')
    variants = [bench.variant(r, p) for p in args.precisions for r in args.runtimes if p == 'fp32' or r in bench.PRECISIONS[p]]
    for precision in [p for p in args.precisions if p != 'fp32']:
        left_out = [bench.RUNTIMES[r][1] for r in args.runtimes if r not in bench.PRECISIONS[precision]]
        if left_out:
            print(f'{prog}: {precision} is not offered here in {", ".join(left_out)}')
    if not variants:
        parser.error(f'none of {", ".join(args.runtimes)} is offered at {", ".join(args.precisions)}')
    args.runtimes = bench.with_stock_layouts(variants, args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    host = bench.Host(args.yolov5)
    print(f'{prog}: {", ".join([*args.models, *(w.name for w in args.weights)])} in {", ".join(bench.label(r) for r in args.runtimes)} at '
          f'{", ".join(map(str, args.sizes))}; {args.runs} run(s) of {args.warmup} + {args.reps} interleaved rounds; '
          f'models from {host.name}', flush=True)
    start = time.time()
    names = [*args.models, *map(str, args.weights)]
    rows, ratios = bench.measure(host, names, args.runtimes, args.sizes, args.runs, args.reps, args.warmup, args.out,
                                 log=lambda line: print(f'{prog}: {line}', flush=True), data=args.data,
                                 val_images=args.val_images, calibration=args.calibration)
    lines, ratio_lines, columns = table(rows, ratios, args.runtimes, args.sizes)
    machine = bench.machine_line()
    header = [f'{time.strftime("%Y-%m-%d")}, {machine}; yolov5-mnv4 {__version__}; fused models, batch 1; '
              f'{args.runs} run(s) of {args.reps} interleaved rounds after {args.warmup} warm-ups; ms (IQR)']
    fair = bench.fair_ratios(rows, ratios)
    overview = [] if not any(fair.values()) else [
        '', f'Ours / the stock twin at its best (in PyTorch its faster layout); "at parity" when every run is '
        f'within {bench.NOISE:.0%} of 1:', '', *summary(fair, args.sizes)]
    text = '\n'.join([*header, '', *lines, *ratio_lines, *overview]) + '\n'
    (args.out / 'benchmark.md').write_text(text)
    with open(args.out / 'benchmark.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    result = {'command': f'yolov5-mnv4 benchmark {" ".join(sys.argv[2:] if argv is None else argv)}'.strip(),
              'date': time.strftime('%Y-%m-%d'), 'machine': machine, 'host': host.name, 'sizes': args.sizes,
              'runtimes': args.runtimes, 'runs': args.runs, 'reps': args.reps, 'warmup': args.warmup, 'rows': rows,
              'ratios': ratios, 'fair_ratios': fair}
    (args.out / 'benchmark.json').write_text(json.dumps(result, indent=1) + '\n')
    bench.plot(rows, args.runtimes, max(args.sizes), args.out / 'latency_vs_gflops.png',
               f'MobileNetV4 detectors and their stock twins ({machine.split(",")[0]})')
    print('\n' + text)
    print(f'{prog}: wrote benchmark.md, benchmark.csv, benchmark.json, latency_vs_gflops.png to {args.out} '
          f'({time.time() - start:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
