#!/usr/bin/env python3
"""Edge latency of the MNv4 detectors against stock yolov5n / yolov5s, in one interleaved run:
TFLite through LiteRT with XNNPACK (fp32, fp16 weights, full-integer int8: the files the stock
export.py writes), OpenVINO (f32, its default precision, int8 through nncf) and ONNX Runtime fp32;
batch 1, 2 threads, median and IQR; ratios against the targets. Needs the `edge` extra.

    python scripts/benchmark_edge.py --yolov5 .cache/yolov5-v7.0 [--sizes 320 640] [--models ...]

Weights are untrained (latency does not depend on them); int8 calibrates on 100 coco128 train images
(`--data`), as export.py --int8 does. Writes benchmark_edge.md / .csv / .json to --out.
"""
import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
from benchmark import STOCK, THREADS, interleaved, ort_session, spread  # noqa: E402

MODELS = {'yolov5n': 'yolov5n.yaml', 'yolov5s': 'yolov5s.yaml',
          'MNv4-Conv-S': 'yolov5-mnv4-conv-s.yaml', 'MNv4-Conv-S-ReLU': 'yolov5-mnv4-conv-s-relu.yaml',
          'MNv4-Conv-M': 'yolov5-mnv4-conv-m.yaml', 'MNv4-Conv-M-ReLU': 'yolov5-mnv4-conv-m-relu.yaml',
          'MNv4-Hybrid-M': 'yolov5-mnv4-hybrid-m.yaml'}
RUNTIMES = ['tflite_fp32', 'tflite_fp16', 'tflite_int8', 'ov_f32', 'ov_default', 'ov_int8', 'ort_fp32']
TARGETS = [('MNv4-Conv-S', 'yolov5n', 0.8), ('MNv4-Conv-S-ReLU', 'yolov5n', 0.8),
           ('MNv4-Conv-M', 'yolov5s', 1.0), ('MNv4-Conv-M-ReLU', 'yolov5s', 1.0)]
TARGET_RUNTIMES = ['tflite_int8', 'ov_int8']
CALIBRATION_IMAGES = 100


def config_path(yolov5, name):
    return yolov5 / 'models' / MODELS[name] if name in STOCK else REPO / 'models' / MODELS[name]


def write_checkpoint(yolov5, name, path, env):
    """An untrained checkpoint as train.py writes them, built in a fresh process (a config's
    `activation:` changes YOLOv5's Conv default for the rest of a process)."""
    code = ('import sys, torch; sys.path.insert(0, sys.argv[1]); from models.yolo import DetectionModel; '
            'm = DetectionModel(sys.argv[2], nc=80); m.nc, m.names = 80, {i: str(i) for i in range(80)}; '
            'torch.save({"model": m.half(), "epoch": -1}, sys.argv[3])')
    run([sys.executable, '-c', code, yolov5, config_path(yolov5, name), path], yolov5, env)


def run(cmd, cwd, env):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or 'export failure' in proc.stdout + proc.stderr:
        raise SystemExit(f'benchmark_edge: {" ".join(map(str, cmd[:3]))} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}')


def export_all(yolov5, name, size, work, data, env):
    """The stock export.py's SavedModel, fp16 and int8 .tflite and ONNX, plus an fp32 .tflite."""
    from yolov5_mnv4.edge import fp32_tflite_from_saved_model
    folder = work / f'{name}-{size}'
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / 'model.pt'
    write_checkpoint(yolov5, name, weights, env)
    export = [sys.executable, 'export.py', '--weights', weights, '--img', size, '--device', 'cpu']
    run([*export, '--include', 'saved_model', 'tflite', 'onnx', '--opset', '17'], yolov5, env)
    run([*export, '--include', 'tflite', '--int8', '--data', data], yolov5, env)
    fp32_tflite_from_saved_model(folder / 'model_saved_model', folder / 'model-fp32.tflite')
    return folder


def calibration_images(data_dir, size, n=CALIBRATION_IMAGES):
    import cv2
    import numpy as np
    files = sorted((data_dir / 'images' / 'train2017').glob('*.jpg'))[:n]
    return [cv2.resize(cv2.imread(str(f)), (size, size))[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
            for f in files]


def openvino_models(onnx_path, calibration):
    """{'ov_f32', 'ov_default', 'ov_int8'}: compiled OpenVINO models, and the default precision's name."""
    import nncf
    import openvino as ov
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    config = {'INFERENCE_NUM_THREADS': THREADS, 'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1}
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    compiled = {'ov_f32': core.compile_model(model, 'CPU', {**config, 'INFERENCE_PRECISION_HINT': 'f32'}),
                'ov_default': core.compile_model(model, 'CPU', config),
                'ov_int8': core.compile_model(quantized, 'CPU', config)}
    default = str(compiled['ov_default'].get_property('INFERENCE_PRECISION_HINT'))
    return compiled, default


def runners_for(folder, size, calibration):
    import numpy as np
    from yolov5_mnv4.edge import TFLiteModel
    nhwc = np.zeros((1, size, size, 3), np.float32)
    nchw = np.zeros((1, 3, size, size), np.float32)
    runners = {}
    for precision in ('fp32', 'fp16', 'int8'):
        model = TFLiteModel(folder / f'model-{precision}.tflite', threads=THREADS)
        runners[f'tflite_{precision}'] = lambda m=model: m(nhwc)
    session = ort_session(folder / 'model.onnx')
    runners['ort_fp32'] = lambda: session.run(None, {session.get_inputs()[0].name: nchw})
    compiled, default = openvino_models(folder / 'model.onnx', calibration)
    for key, model in compiled.items():
        request = model.create_infer_request()
        runners[key] = lambda r=request: r.infer({0: nchw})
    return runners, default


def main(argv=None):
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128')
    parser.add_argument('--out', type=Path, default=REPO / 'runs' / 'benchmark-edge')
    parser.add_argument('--sizes', type=int, nargs='+', default=[320, 640])
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=list(MODELS))
    parser.add_argument('--reps', type=int, default=20, help='timed rounds per model and runtime')
    args = parser.parse_args(argv)
    yolov5, out = args.yolov5.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    from yolov5_mnv4.edge import import_tensorflow
    from yolov5_mnv4.offline import offline_env
    env = {**os.environ, **offline_env()}
    sys.path.insert(0, str(REPO / 'scripts'))
    from smoke import prepare_data
    data_yaml, _ = prepare_data(args.data.resolve(), yolov5, out / 'data')  # a copy: val caches stay out of ../shared
    tf = import_tensorflow()
    rows, defaults = [], set()
    for size in args.sizes:
        calibration = calibration_images(args.data.resolve(), size)
        runners = {}
        for name in args.models:
            print(f'benchmark_edge: exporting {name} at {size}', flush=True)
            folder = export_all(yolov5, name, size, out / 'exports', data_yaml, env)
            model_runners, default = runners_for(folder, size, calibration)
            defaults.add(default)
            runners.update({(name, key): run_ for key, run_ in model_runners.items()})
        print(f'benchmark_edge: timing {len(runners)} runners at {size}: 5 warm-up + {args.reps} interleaved rounds',
              flush=True)
        times = interleaved(runners, args.reps, 5)
        for name in args.models:
            row = {'model': name, 'size': size}
            for key in RUNTIMES:
                median, iqr = spread(times[(name, key)])
                row[f'{key}_ms'], row[f'{key}_iqr'] = round(median, 1), round(iqr, 1)
            rows.append(row)
    report(rows, args, out, defaults, tf)
    return 0


def report(rows, args, out, defaults, tf):
    import ai_edge_litert
    import onnxruntime
    import openvino
    machine = (f'{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or "cpu"}), {THREADS} threads; '
               f'tensorflow {tf.__version__}, ai-edge-litert {ai_edge_litert.__version__}, openvino '
               f'{openvino.__version__} (default precision: {", ".join(sorted(defaults))}), onnxruntime '
               f'{onnxruntime.__version__}')
    columns = ['model', 'size'] + [f'{k}_{s}' for k in RUNTIMES for s in ('ms', 'iqr')]
    with open(out / 'benchmark_edge.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / 'benchmark_edge.json').write_text(json.dumps({'machine': machine, 'rows': rows}, indent=1))
    header = ['model', 'size'] + RUNTIMES
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join([r['model'], str(r['size'])] + [f"{r[f'{k}_ms']} ±{r[f'{k}_iqr']}" for k in RUNTIMES])
              + ' |' for r in rows]
    by = {(r['model'], r['size']): r for r in rows}
    ratios = []
    for ours, stock, target in TARGETS:
        for size in args.sizes:
            if (ours, size) in by and (stock, size) in by:
                parts = [f"{k} {by[(ours, size)][f'{k}_ms'] / by[(stock, size)][f'{k}_ms']:.2f}" for k in RUNTIMES]
                missed = [k for k in TARGET_RUNTIMES
                          if by[(ours, size)][f'{k}_ms'] / by[(stock, size)][f'{k}_ms'] > target]
                ratios.append(f'{ours}/{stock} @{size} (target <= {target} in {" and ".join(TARGET_RUNTIMES)}): '
                              + ', '.join(parts) + (f'  MISSED: {", ".join(missed)}' if missed else '  met'))
    text = '\n'.join([f'machine: {machine}', 'latency: ms, median ±IQR, batch 1', *lines, '', *ratios])
    (out / 'benchmark_edge.md').write_text(text + '\n')
    print('\n' + text)
    print(f'\nbenchmark_edge: wrote {out}/benchmark_edge.md, .csv, .json')


if __name__ == '__main__':
    sys.exit(main())
