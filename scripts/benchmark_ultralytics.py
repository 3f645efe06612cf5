#!/usr/bin/env python3
"""Latency of the Ultralytics package's stock detectors against their MobileNetV4 twins (the same
head and scale, our backbone: yolo11n / yolo26n against Conv-S, yolo11s / yolo26s against Conv-M), every
model exported by the package's own `model.export()` and timed in one interleaved run, as
scripts/benchmark_edge.py times the YOLOv5 models: ONNX Runtime fp32, OpenVINO f32 and int8 (the
package's nncf route, calibrated on --data), NCNN fp32, and LiteRT int8 where the package's LiteRT
exporter (litert-torch) is installed; batch 1, 2 threads, median and IQR of the runtime's call alone;
ratios MNv4 / stock from the same run. Weights are untrained (latency does not depend on them).

    python scripts/benchmark_ultralytics.py [--sizes 320 640] [--data ../shared/datasets/coco128]

Writes benchmark_ultralytics.md / .json to --out.
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
from yolov5_mnv4.bench import THREADS, gflops, interleaved, ort_session, spread  # noqa: E402

PAIRS = [('yolo11n', 'yolo11n-mnv4-conv-s'), ('yolo26n', 'yolo26n-mnv4-conv-s'),
         ('yolo11s', 'yolo11s-mnv4-conv-m'), ('yolo26s', 'yolo26s-mnv4-conv-m')]
RUNTIMES = ['ort_fp32', 'ov_f32', 'ov_int8', 'ncnn_fp32', 'litert_int8']
LITERT_MISSING = ('litert-torch is not importable: the package exports LiteRT only through it; '
                  'scripts/litert_torch_env.sh installs it into .cache/litert-torch, which this script puts on sys.path')
LITERT_TORCH = REPO / '.cache' / 'litert-torch'


def export_all(name, size, folder, data, with_litert):
    """{runtime: exported path} of one model at one size (reused when a finished folder exists)."""
    from ultralytics import YOLO
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f'{name}.pt'
    if not weights.exists():
        YOLO(f'{name}.yaml').save(str(weights))
    done = folder / 'exports.json'
    if done.exists():
        return json.loads(done.read_text())
    paths = {'ort_fp32': YOLO(weights).export(format='onnx', imgsz=size, simplify=False),
             'ov_f32': YOLO(weights).export(format='openvino', imgsz=size),
             'ov_int8': YOLO(weights).export(format='openvino', imgsz=size, int8=True, data=str(data)),
             'ncnn_fp32': YOLO(weights).export(format='ncnn', imgsz=size)}
    if with_litert:
        paths['litert_int8'] = YOLO(weights).export(format='litert', imgsz=size, quantize=8, data=str(data))
    done.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def openvino_runner(path, nchw):
    import openvino as ov

    from yolov5_mnv4.bench import openvino_compiled
    request = openvino_compiled(next(Path(path).glob('*.xml')), THREADS, INFERENCE_PRECISION_HINT='f32').create_infer_request()
    request.set_input_tensor(0, ov.Tensor(nchw))
    return request.infer


def runners_for(paths, size):
    import numpy as np

    from yolov5_mnv4.export import runtimes
    nchw = np.zeros((1, 3, size, size), np.float32)
    runners = {}
    session = ort_session(paths['ort_fp32'])
    feed = {session.get_inputs()[0].name: nchw}
    runners['ort_fp32'] = lambda: session.run(None, feed)
    runners['ov_f32'] = openvino_runner(paths['ov_f32'], nchw)
    runners['ov_int8'] = openvino_runner(paths['ov_int8'], nchw)
    ncnn = runtimes.NCNNModel(paths['ncnn_fp32'], threads=THREADS)
    ncnn.set_input(nchw)  # (1, 3, H, W): the Mat drops the batch axis
    runners['ncnn_fp32'] = ncnn.invoke
    if 'litert_int8' in paths:
        from yolov5_mnv4.export.tflite import TFLiteModel
        path = Path(paths['litert_int8'])  # a .tflite file (8.4), or a folder holding one
        model = TFLiteModel(path if path.is_file() else next(path.glob('*.tflite')), threads=THREADS)
        model.set_input(np.zeros(model.input['shape'], np.float32))  # NCHW: litert-torch keeps torch's layout
        runners['litert_int8'] = model.invoke
    return runners


def model_size(name, size):
    from ultralytics import YOLO
    model = YOLO(f'{name}.yaml').model.fuse(verbose=False).eval()
    return {'params': sum(p.numel() for p in model.parameters()), 'gflops': round(gflops(model, size), 2)}


def report(rows, args, out, with_litert):
    lines = [f'# Ultralytics-package detectors: stock against MobileNetV4 twins ({args.reps} interleaved rounds, '
             f'batch 1, {THREADS} threads, ms: median (IQR))', '',
             f'{time.strftime("%Y-%m-%d")}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; '
             'python scripts/benchmark_ultralytics.py '
             f'--sizes {" ".join(map(str, args.sizes))}', '']
    columns = [r for r in RUNTIMES if r != 'litert_int8' or with_litert]
    lines += ['| size | model | params (fused) | GFLOPs | ' + ' | '.join(columns) + ' |',
              '|---' * (4 + len(columns)) + '|']
    for row in rows:
        cells = [f"{row[f'{r}_ms']} ({row[f'{r}_iqr']})" for r in columns]
        lines.append(f"| {row['size']} | {row['model']} | {row['params']:,} | {row['gflops']} | " + ' | '.join(cells) + ' |')
    lines += ['', '| size | ratio (MNv4 / stock) | ' + ' | '.join(columns) + ' |', '|---' * (2 + len(columns)) + '|']
    by = {(r['model'], r['size']): r for r in rows}
    for size in args.sizes:
        for stock, ours in PAIRS:
            a, b = by[(ours, size)], by[(stock, size)]
            lines.append(f'| {size} | {ours} / {stock} | ' + ' | '.join(f"{a[f'{r}_ms'] / b[f'{r}_ms']:.2f}"
                                                                       for r in columns) + ' |')
    if not with_litert:
        lines += ['', f'LiteRT int8 not timed: {LITERT_MISSING}.']
    (out / 'benchmark_ultralytics.md').write_text('\n'.join(lines) + '\n')
    (out / 'benchmark_ultralytics.json').write_text(json.dumps(rows, indent=1))
    print('\n'.join(lines))


def main(argv=None):
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128',
                        help='YOLO-format images for the int8 calibration (default: coco128 beside the repository, '
                             'else the embedded images)')
    parser.add_argument('--out', type=Path, default=REPO / 'runs' / 'benchmark-ultralytics')
    parser.add_argument('--sizes', type=int, nargs='+', default=[320, 640])
    parser.add_argument('--reps', type=int, default=20)
    args = parser.parse_args(argv)
    from yolov5_mnv4.hosts.offline import offline_env
    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
    import yolov5_mnv4  # noqa: F401 (registers into the package when it is imported)
    from yolov5_mnv4.resources import dataset_yaml, embedded_dataset
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = args.data.resolve() if (args.data / 'images' / 'train2017').is_dir() else embedded_dataset()
    data = dataset_yaml(source, out)  # the int8 calibration images, copied
    if LITERT_TORCH.is_dir():
        sys.path.append(str(LITERT_TORCH))
    with_litert = importlib.util.find_spec('litert_torch') is not None
    if not with_litert:
        print(f'benchmark_ultralytics: LiteRT int8 left out: {LITERT_MISSING}', flush=True)
    rows = []
    for size in args.sizes:
        runners = {}
        for name in [n for pair in PAIRS for n in pair]:
            print(f'benchmark_ultralytics: {name} at {size}', flush=True)
            paths = export_all(name, size, out / 'exports' / f'{name}-{size}', data, with_litert)
            runners.update({(name, key): run for key, run in runners_for(paths, size).items()})
        print(f'benchmark_ultralytics: timing {len(runners)} runners at {size}: 5 warm-up + {args.reps} rounds', flush=True)
        times = interleaved(runners, args.reps, 5)
        for name in [n for pair in PAIRS for n in pair]:
            row = {'model': name, 'size': size, **model_size(name, size)}
            for key in RUNTIMES:
                if (name, key) in times:
                    median, iqr = spread(times[(name, key)])
                    row[f'{key}_ms'], row[f'{key}_iqr'] = round(median, 1), round(iqr, 1)
            rows.append(row)
    report(rows, args, out, with_litert)
    return 0


if __name__ == '__main__':
    sys.exit(main())
