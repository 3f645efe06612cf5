#!/usr/bin/env python3
"""TensorRT on an NVIDIA GPU: the MNv4 detectors against stock yolov5n / yolov5s, fp16 and int8, with
parity and latency, and PyTorch CUDA (fp32, fp16) beside them as the baseline.

    pip install tensorrt    # NVIDIA's wheels (pypi.nvidia.com); the PyPI "libs" package is a stub that fetches them
    python scripts/benchmark_tensorrt.py --yolov5 .cache/yolov5-v7.0 [--sizes 640] [--data data.yaml]

Engines are built from ONNX as strongly typed networks (TensorRT 10 deprecated, and 11 removed, the
precision flags and the int8 calibrator): fp16 from the model exported in half precision; int8 from
a QDQ ONNX made by ONNX Runtime's static quantizer (per-channel weights, activations calibrated on
--data's train images, letterboxed; the Detect's decoding is left float, as yolov5-mnv4-export does
for ExecuTorch). The attention is exported in its explicit form (no SDPA).
Parity against the fused fp32 PyTorch model on the embedded COCO image: fp16 the largest box and score
errors, int8 the scores' signal-to-noise per level and detection agreement on --data's val images.
Latency: batch 1, device-resident input and output, interleaved rounds, median and IQR of CUDA-event
times (fp32 without TF32), eager PyTorch and its CUDA-graph replay. Without a CUDA GPU or the tensorrt package it prints why and runs what it can (PyTorch CUDA,
or nothing). Weights are untrained for latency; parity uses them too (fine for a numeric check).
Writes benchmark_tensorrt.md / .json to --out.
"""
import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
from benchmark import build, import_yolo  # noqa: E402

MODELS = ['yolov5n', 'yolov5s', 'MNv4-Conv-S', 'MNv4-Conv-M', 'MNv4-Hybrid-M']
PAIRS = [('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'), ('MNv4-Hybrid-M', 'MNv4-Conv-M')]  # same-run ratios
CALIBRATION_IMAGES = 100


def tensorrt_or_reason():
    try:
        import tensorrt
        return tensorrt, None
    except ImportError as err:
        return None, f'TensorRT not installed ({err}): pip install tensorrt (NVIDIA wheels, needs their index)'


def cuda_timer(fn, reps, warmup):
    """Milliseconds per call of `fn` by CUDA events, one sample per call."""
    import torch
    samples = []
    for i in range(warmup + reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        if i >= warmup:
            samples.append(start.elapsed_time(end))
    return samples


def interleaved_cuda(runners, reps, warmup):
    """Every runner once per round, round after round (drift hits all alike)."""
    times = {name: [] for name in runners}
    for name, fn in runners.items():
        cuda_timer(fn, 0, warmup)
    for _ in range(reps):
        for name, fn in runners.items():
            times[name] += cuda_timer(fn, 1, 0)
    return times


def cuda_graph(fn):
    """`fn` captured once as a CUDA graph; returns its replay (no Python or launch cost per kernel)."""
    import torch
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        fn()
    return graph.replay


def qdq_onnx(src, dst, calibration, float_prefix):
    """ONNX Runtime's static QDQ quantization of `src`: int8 per-channel weights, int8 activations
    calibrated on `calibration` (NCHW float arrays); nodes under `float_prefix` other than Conv stay float."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{'images': im} for im in calibration])

        def get_next(self):
            return next(self.items, None)

    excluded = [n.name for n in onnx.load(str(src)).graph.node if n.name.startswith(float_prefix) and n.op_type != 'Conv']
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
    return dst


class Engine:
    """A TensorRT engine built from an ONNX file (strongly typed), run on torch CUDA tensors."""

    def __init__(self, trt, onnx_path, x):
        import torch
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            raise RuntimeError('TensorRT could not parse the ONNX: '
                               + '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors)))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise RuntimeError('TensorRT could not build the engine (see its log above)')
        self.size_mb = blob.nbytes / 1e6
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        out = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        dtype = {trt.float32: torch.float32, trt.float16: torch.float16}[self.engine.get_tensor_dtype(out)]
        self.input = x.clone()
        self.output = torch.empty(tuple(self.engine.get_tensor_shape(out)), dtype=dtype, device='cuda')
        self.context.set_tensor_address('images', self.input.data_ptr())
        self.context.set_tensor_address(out, self.output.data_ptr())
        self.stream = torch.cuda.current_stream()

    def run(self):
        self.context.execute_async_v3(self.stream.cuda_stream)

    def __call__(self, x):
        self.input.copy_(x.to(self.input.dtype))
        self.run()
        self.stream.synchronize()
        return self.output.float().cpu().numpy()


def measure(args, yolo, name, size, work, trt, calibration, val_images):
    import torch

    from yolov5_mnv4.cli.export import detection_output, parity_images
    from yolov5_mnv4.export.parity import detection_errors, int8_report
    from yolov5_mnv4.export.runtimes import onnx_file
    model = build(yolo, args.yolov5, name).cuda()
    model.model[-1].export = False
    net = detection_output(model).eval()
    x = torch.zeros(1, 3, size, size, device='cuda')
    with torch.no_grad():
        net(x)  # Detect caches its grids (exported as constants)
    row, runners = {'model': name, 'size': size}, {}
    half = detection_output(copy.deepcopy(model).half()).eval()
    xh = x.half()
    with torch.no_grad():
        half(xh)
    runners['torch_fp32'] = lambda: net(x)
    runners['torch_fp16'] = lambda: half(xh)
    # eager PyTorch at batch 1 is bound by Python and kernel launches on a big GPU; replayed CUDA
    # graphs measure the GPU's work, what TensorRT's engines are compared with
    runners['graph_fp32'] = cuda_graph(lambda: net(x))
    runners['graph_fp16'] = cuda_graph(lambda: half(xh))
    real = torch.from_numpy(parity_images((size, size))['real']).cuda()
    with torch.no_grad():
        ref = net(real).cpu().numpy()
        row['torch_fp16 parity'] = '%.1e / %.1e' % detection_errors(half(real.half()).float().cpu().numpy(), ref)
    if trt is not None:
        fp32_onnx = onnx_file(net, x, work / f'{name}-{size}.onnx')
        engines = {'trt_fp16': onnx_file(half, x.half(), work / f'{name}-{size}-fp16.onnx')}
        if calibration is not None:
            detect = f'/model/model.{len(model.model) - 1}/'
            engines['trt_int8'] = qdq_onnx(fp32_onnx, work / f'{name}-{size}-int8.onnx', calibration[size], detect)
        for key, path in engines.items():
            try:
                engine = Engine(trt, path, x)
            except RuntimeError as err:
                row[f'{key} parity'] = f'failed: {str(err)[:200]}'
                continue
            runners[key] = engine.run
            row[f'{key} MB'] = round(engine.size_mb, 1)
            if key == 'trt_fp16':
                row[f'{key} parity'] = '%.1e / %.1e' % detection_errors(engine(real), ref)
            else:
                d = model.model[-1]
                with torch.no_grad():
                    refs = [net(torch.from_numpy(im).cuda()).cpu().numpy()[0] for im in val_images[size]]
                outs = [engine(torch.from_numpy(im).cuda()) for im in val_images[size]]
                row[f'{key} parity'] = int8_report(outs, refs, d.stride, d.na, (size, size))[-1]
    with torch.no_grad():
        times = interleaved_cuda(runners, args.reps, args.warmup)
    for key, samples in times.items():
        q = statistics.quantiles(samples, n=4)
        row[key], row[f'{key} iqr'] = round(statistics.median(samples), 3), round(q[2] - q[0], 3)
    return row


def report(rows, out, notes):
    keys = [k for k in ('torch_fp32', 'torch_fp16', 'graph_fp32', 'graph_fp16', 'trt_fp16', 'trt_int8') if any(k in r for r in rows)]
    lines = ['| model | size | ' + ' | '.join(f'{k} ms (IQR)' for k in keys) + ' |', '|---|---|' + '---|' * len(keys)]
    for r in rows:
        lines.append(f'| {r["model"]} | {r["size"]} | ' + ' | '.join(
            f'{r[k]:.2f} ({r[k + " iqr"]:.2f})' if k in r else '-' for k in keys) + ' |')
    lines += ['', 'Same-run ratios of the median latencies:', '']
    by = {(r['model'], r['size']): r for r in rows}
    for ours, stock in PAIRS:
        for size in sorted({r['size'] for r in rows}):
            a, b = by.get((ours, size)), by.get((stock, size))
            if a and b:
                ratios = ', '.join(f'{k} {a[k] / b[k]:.2f}' for k in keys if k in a and k in b)
                lines.append(f'- {ours} / {stock} at {size}: {ratios}')
    lines += ['', 'Parity against the fused fp32 PyTorch model (fp16: box error of the largest coordinate / '
              'score error; int8: scores per level and detections on val images):', '']
    for r in rows:
        for k in [k for k in r if k.endswith('parity')]:
            lines.append(f'- {r["model"]} {r["size"]} {k[:-7]}: {r[k]}')
    text = '\n'.join(notes + [''] + lines) + '\n'
    out.mkdir(parents=True, exist_ok=True)
    (out / 'benchmark_tensorrt.md').write_text(text)
    (out / 'benchmark_tensorrt.json').write_text(json.dumps({'notes': notes, 'rows': rows}, indent=1))
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--sizes', type=int, nargs='+', default=[640])
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--data', type=Path, help='data YAML: int8 calibrates on its train images (none: no int8)')
    parser.add_argument('--reps', type=int, default=50)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--out', type=Path, default=REPO / 'docs' / 'results')
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print('benchmark_tensorrt: skipped: no CUDA GPU here (TensorRT builds and runs engines on NVIDIA GPUs only)')
        return 0
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    trt, reason = tensorrt_or_reason()
    notes = [f'GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, '
             + (f'TensorRT {trt.__version__}' if trt else f'no TensorRT: {reason}')]
    print(f'benchmark_tensorrt: {notes[0]}', flush=True)
    yolo = import_yolo(args.yolov5)
    work = args.out / 'tensorrt-work'
    work.mkdir(parents=True, exist_ok=True)
    calibration = val_images = None
    if trt is not None and args.data:
        from yolov5_mnv4.cli.export import dataset_images
        calibration = {s: dataset_images(args.data, 'train', (s, s), CALIBRATION_IMAGES) for s in args.sizes}
        val_images = {s: dataset_images(args.data, 'val', (s, s), 32) for s in args.sizes}
    rows = []
    for size in args.sizes:
        for name in args.models:
            print(f'benchmark_tensorrt: {name} at {size}', flush=True)
            rows.append(measure(args, yolo, name, size, work, trt, calibration, val_images))
            torch.cuda.empty_cache()
    report(rows, args.out, notes)
    return 0


if __name__ == '__main__':
    sys.exit(main())
