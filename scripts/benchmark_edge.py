#!/usr/bin/env python3
"""Edge latency of the MNv4 detectors against stock yolov5n / yolov5s, in one interleaved run:
TFLite through LiteRT with XNNPACK (fp32, fp16 weights: the files the stock export.py writes; int8:
`yolov5-mnv4-export --int8`'s model, full integer but for the attention's matmuls and softmax, and
for the hybrids also `tflite_int8_full`, the full-integer model that export.py --int8 writes),
OpenVINO (f32, its default precision, int8 through nncf) and ONNX Runtime fp32, with --runtimes also
NCNN, MNN and ExecuTorch (XNNPACK) fp32 and MNN, ExecuTorch int8 as `yolov5-mnv4-export` writes them
(int8 calibrated on --data's first 100 train images); batch 1, 2 threads,
median and IQR; same-run ratios of ours to the stock models. Needs the `edge` extra (and `runtimes` for --runtimes).

    python scripts/benchmark_edge.py --yolov5 .cache/yolov5-v7.0 [--sizes 320 640] [--models ...]

Only the runtime's own call is timed (LiteRT `invoke()`, ONNX Runtime `run`, OpenVINO `infer`, NCNN's
extract, MNN's forward and read, ExecuTorch's execute), each
fed its own input type (uint8 for the int8 TFLite models) set once before the rounds; quantizing
the input and reading the outputs back are not timed. Weights are untrained (latency does not
depend on them); int8 calibrates on 100 coco128 train images (`--data`). Also counts each TFLite
model's XNNPACK partitions. Writes benchmark_edge.md / .csv / .json to --out.
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
from benchmark import STOCK  # noqa: E402
from yolov5_mnv4.bench import THREADS, gflops, interleaved, ort_session, spread  # noqa: E402

MODELS = {'yolov5n': 'yolov5n.yaml', 'yolov5s': 'yolov5s.yaml',
          'MNv4-Conv-S': 'yolov5-mnv4-conv-s.yaml', 'MNv4-Conv-S-ReLU': 'yolov5-mnv4-conv-s-relu.yaml',
          'MNv4-Conv-M': 'yolov5-mnv4-conv-m.yaml', 'MNv4-Conv-M-ReLU': 'yolov5-mnv4-conv-m-relu.yaml',
          'MNv4-Hybrid-M': 'yolov5-mnv4-hybrid-m.yaml', 'MNv4-Hybrid-L': 'yolov5-mnv4-hybrid-l.yaml'}
DEFAULT_MODELS = [name for name in MODELS if name != 'MNv4-Hybrid-L']
RUNTIMES = ['tflite_fp32', 'tflite_fp16', 'tflite_int8', 'tflite_int8_full', 'ov_f32', 'ov_default', 'ov_int8',
            'ort_fp32', 'ncnn_fp32', 'mnn_fp32', 'et_fp32', 'mnn_int8', 'et_int8']
# yolov5-mnv4-export's formats (--runtimes): what each writes beside model.pt
RUNTIME_FILES = {'ncnn_fp32': ('ncnn', 'model_ncnn_model'), 'mnn_fp32': ('mnn', 'model.mnn'),
                 'et_fp32': ('executorch', 'model.pte'), 'mnn_int8': ('mnn', 'model-int8.mnn'),
                 'et_int8': ('executorch', 'model-int8.pte')}
# the same-run ratios written under the table: (ours, the model it is compared with)
PAIRS = [('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-S-ReLU', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'),
         ('MNv4-Conv-M-ReLU', 'yolov5s'), ('MNv4-Hybrid-M', 'MNv4-Conv-M')]
CALIBRATION_IMAGES = 100
EXPORTS_COMPLETE = 'exports-complete'  # written last by export_all


def config_path(yolov5, name):
    return yolov5 / 'models' / MODELS[name] if name in STOCK else REPO / 'models' / MODELS[name]


def write_checkpoint(yolov5, name, path, env):
    """An untrained checkpoint as train.py writes them, built in a fresh process (a config's
    `activation:` changes YOLOv5's Conv default for the rest of a process)."""
    code = ('import sys, torch; sys.path.insert(0, sys.argv[1]); from models.yolo import DetectionModel; '
            'from yolov5_mnv4.hosts.yolov5 import write_checkpoint; '
            'm = DetectionModel(sys.argv[2], nc=80); m.nc, m.names = 80, {i: str(i) for i in range(80)}; '
            'write_checkpoint(m, sys.argv[3])')
    run([sys.executable, '-c', code, yolov5, config_path(yolov5, name), path], yolov5, env)


def run(cmd, cwd, env):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or 'export failure' in proc.stdout + proc.stderr:
        raise SystemExit(f'benchmark_edge: {" ".join(map(str, cmd[:3]))} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}')


def export_all(yolov5, name, size, work, env, calibration, reuse=False):
    """The stock export.py's SavedModel, fp16 .tflite and ONNX; from the SavedModel, an fp32 .tflite and
    the int8 ones (ours; for models with attention also the full-integer one). With `reuse`, a folder
    that an earlier run completed is taken as it is."""
    from yolov5_mnv4.export.tflite import fp32_tflite_from_saved_model, import_tensorflow
    from yolov5_mnv4.export.tflite_int8 import int8_tflite
    folder = work / f'{name}-{size}'
    complete = folder / EXPORTS_COMPLETE
    if reuse and complete.is_file():
        print(f'benchmark_edge: reusing {folder}', flush=True)
        return folder
    complete.unlink(missing_ok=True)
    tf = import_tensorflow()
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / 'model.pt'
    write_checkpoint(yolov5, name, weights, env)
    run([sys.executable, 'export.py', '--weights', weights, '--img', size, '--device', 'cpu',
         '--include', 'saved_model', 'tflite', 'onnx', '--opset', '17'], yolov5, env)
    saved_model = folder / 'model_saved_model'
    fp32_tflite_from_saved_model(saved_model, folder / 'model-fp32.tflite')
    nhwc = [im.transpose(0, 2, 3, 1) for im in calibration]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    (folder / 'model-int8.tflite').write_bytes(int8_tflite(converter, nhwc))
    if 'Hybrid' in name:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        (folder / 'model-int8_full.tflite').write_bytes(int8_tflite(converter, nhwc, float_ops=(), float_nodes=()))
    complete.write_text('exports complete\n')
    return folder


def export_runtimes(yolov5, folder, size, env, data_yaml, precisions=('fp32', 'int8')):
    """NCNN, MNN and ExecuTorch models of folder/model.pt through yolov5-mnv4-export, fp32 and (MNN,
    ExecuTorch) int8 calibrated on data_yaml's train images, unless there."""
    for int8 in [p == 'int8' for p in precisions]:
        missing = [fmt for key, (fmt, name) in RUNTIME_FILES.items()
                   if key.endswith('_int8') == int8 and not (folder / name).exists()]
        if missing:
            run([sys.executable, '-m', 'yolov5_mnv4', 'export', '--weights', folder / 'model.pt', '--include', *missing,
                 '--img', size, *(['--int8', '--data', data_yaml] if int8 else [])], yolov5, env)


def model_size(yolov5, weights, size):
    """{'params_M', 'GFLOPs'} of a checkpoint's fused model at `size` (GFLOPs = 2 x MACs, as YOLOv5 counts)."""
    import torch
    if str(yolov5) not in sys.path:
        sys.path.insert(0, str(yolov5))  # the checkpoint's classes
    model = torch.load(weights, map_location='cpu', weights_only=False)['model'].float().fuse().eval()
    return {'params_M': round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            'GFLOPs': round(gflops(model, size), 2)}


def calibration_images(data_dir, size, n=CALIBRATION_IMAGES):
    """The first `n` train images, letterboxed as yolov5-mnv4-export and export.py --int8 calibrate."""
    from yolov5_mnv4.export.images import letterboxed_images
    return letterboxed_images(data_dir / 'images' / 'train2017', size, n)


def openvino_models(onnx_path, calibration):
    """{'ov_f32', 'ov_default', 'ov_int8'}: compiled OpenVINO models, and the default precision's name."""
    import nncf
    import openvino as ov

    from yolov5_mnv4.bench import openvino_compiled
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    compiled = {'ov_f32': openvino_compiled(model, THREADS, INFERENCE_PRECISION_HINT='f32'),
                'ov_default': openvino_compiled(model, THREADS), 'ov_int8': openvino_compiled(quantized, THREADS)}
    default = str(compiled['ov_default'].get_property('INFERENCE_PRECISION_HINT'))
    return compiled, default


def runners_for(folder, size, calibration, with_runtimes=()):
    """{runtime: the runtime's call alone}, OpenVINO's default precision, {runtime: XNNPACK partitions}."""
    import numpy as np

    from yolov5_mnv4.export.tflite import TFLiteModel
    from yolov5_mnv4.export.tflite_int8 import xnnpack_partitions
    nhwc = np.zeros((1, size, size, 3), np.float32)
    nchw = np.zeros((1, 3, size, size), np.float32)
    runners, partitions = {}, {}
    for key in ('fp32', 'fp16', 'int8', 'int8_full'):
        path = folder / f'model-{key}.tflite'
        if path.is_file():
            model = TFLiteModel(path, threads=THREADS)
            model.set_input(nhwc)  # uint8 for the int8 models, quantized once here
            runners[f'tflite_{key}'] = model.invoke
            partitions[f'tflite_{key}'] = xnnpack_partitions(model.interpreter)[0]
    session = ort_session(folder / 'model.onnx')
    feed = {session.get_inputs()[0].name: nchw}
    runners['ort_fp32'] = lambda: session.run(None, feed)
    if with_runtimes:
        from yolov5_mnv4.export import runtimes
        for key, (fmt, name) in RUNTIME_FILES.items():
            if key.split('_')[1] not in with_runtimes:
                continue
            model = runtimes.load(fmt, folder / name, threads=THREADS)
            model.set_input(nchw)
            runners[key] = model.invoke
    compiled, default = openvino_models(folder / 'model.onnx', calibration)
    for key, model in compiled.items():
        request = model.create_infer_request()
        request.set_input_tensor(0, __import__('openvino').Tensor(nchw))
        runners[key] = request.infer
    return runners, default, partitions


def main(argv=None):
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128')
    parser.add_argument('--out', type=Path, default=REPO / 'runs' / 'benchmark-edge')
    parser.add_argument('--sizes', type=int, nargs='+', default=[320, 640])
    parser.add_argument('--models', nargs='+', choices=list(MODELS), default=DEFAULT_MODELS)
    parser.add_argument('--reps', type=int, default=20, help='timed rounds per model and runtime (0: export only, for a later --reuse run on an idle machine)')
    parser.add_argument('--runtimes', action='store_true',
                        help='also NCNN, MNN and ExecuTorch (XNNPACK) in fp32, through yolov5-mnv4-export (the runtimes extra)')
    parser.add_argument('--runtime-precisions', nargs='+', choices=['fp32', 'int8'], default=['fp32', 'int8'],
                        help='--runtimes: which of their precisions to export and time (int8 exports take the longest)')
    parser.add_argument('--reuse', action='store_true',
                        help="time the exports a finished earlier run left in --out (exports take most of a run's time)")
    args = parser.parse_args(argv)
    yolov5, out = args.yolov5.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    from yolov5_mnv4.export.tflite import import_tensorflow
    from yolov5_mnv4.hosts.offline import offline_env
    env = {**os.environ, **offline_env()}
    tf = import_tensorflow()
    rows, defaults, partitions = [], set(), {}
    data_yaml = out / 'data.yaml'
    if args.runtimes:
        from yolov5_mnv4.resources import COCO_NAMES, write_data_yaml
        write_data_yaml(args.data.resolve(), COCO_NAMES, data_yaml)
    for size in args.sizes:
        calibration = calibration_images(args.data.resolve(), size)
        runners = {}
        for name in args.models:
            print(f'benchmark_edge: {name} at {size}', flush=True)
            folder = export_all(yolov5, name, size, out / 'exports', env, calibration, args.reuse)
            if args.runtimes:
                export_runtimes(yolov5, folder, size, env, data_yaml, args.runtime_precisions)
            if not args.reps:
                continue
            model_runners, default, model_partitions = runners_for(folder, size, calibration, args.runtimes and
                                                                   args.runtime_precisions)
            defaults.add(default)
            runners.update({(name, key): run_ for key, run_ in model_runners.items()})
            partitions[(name, size)] = model_partitions
        if not args.reps:
            continue
        print(f'benchmark_edge: timing {len(runners)} runners at {size}: 5 warm-up + {args.reps} interleaved rounds',
              flush=True)
        times = interleaved(runners, args.reps, 5)
        for name in args.models:
            row = {'model': name, 'size': size, **model_size(yolov5, out / 'exports' / f'{name}-{size}' / 'model.pt', size)}
            for key in RUNTIMES:
                if (name, key) in times:
                    median, iqr = spread(times[(name, key)])
                    row[f'{key}_ms'], row[f'{key}_iqr'] = round(median, 1), round(iqr, 1)
            row['xnnpack_partitions'] = ' '.join(f'{k[7:]}:{n}' for k, n in partitions[(name, size)].items())
            rows.append(row)
    if rows:
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
    used = [k for k in RUNTIMES if any(f'{k}_ms' in r for r in rows)]
    columns = ['model', 'size', 'params_M', 'GFLOPs'] + [f'{k}_{s}' for k in used for s in ('ms', 'iqr')] + ['xnnpack_partitions']
    with open(out / 'benchmark_edge.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / 'benchmark_edge.json').write_text(json.dumps({'machine': machine, 'rows': rows}, indent=1))
    cell = lambda r, k: f"{r[f'{k}_ms']} ±{r[f'{k}_iqr']}" if f'{k}_ms' in r else '-'  # noqa: E731
    header = ['model', 'size', 'params (M)', 'GFLOPs'] + used + ['XNNPACK partitions']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join([r['model'], str(r['size']), str(r['params_M']), str(r['GFLOPs'])]
                                + [cell(r, k) for k in used] + [r['xnnpack_partitions']]) + ' |' for r in rows]
    by = {(r['model'], r['size']): r for r in rows}
    ratios = []
    for ours, stock in PAIRS:
        for size in args.sizes:
            if (ours, size) in by and (stock, size) in by:
                a, b = by[(ours, size)], by[(stock, size)]
                ratio = {k: a[f'{k}_ms'] / b[f'{k}_ms'] for k in RUNTIMES if f'{k}_ms' in a and f'{k}_ms' in b}
                ratios.append(f'{ours}/{stock} @{size}: ' + ', '.join(f'{k} {v:.2f}' for k, v in ratio.items()))
    for (name, size), r in by.items():
        if 'tflite_int8_full_ms' in r:
            ratios.append(f'{name} @{size}: int8 with float attention / full-integer int8 = '
                          f"{r['tflite_int8_ms'] / r['tflite_int8_full_ms']:.2f}")
    text = '\n'.join([f'machine: {machine}', 'latency: ms, median ±IQR, batch 1; x86 CPU timings of runtimes '
                      'built for ARM phones and boards (NCNN, MNN, ExecuTorch, TFLite) are not a phone\'s', *lines, '', *ratios])
    (out / 'benchmark_edge.md').write_text(text + '\n')
    print('\n' + text)
    print(f'\nbenchmark_edge: wrote {out}/benchmark_edge.md, .csv, .json')


if __name__ == '__main__':
    sys.exit(main())
