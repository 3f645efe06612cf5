"""Which detector is fastest on this device, measured here: the machinery of `yolov5-mnv4 benchmark`
and of scripts/benchmark.py (one implementation).

Models are YOLOv5 detectors built from their configs (ours, and the stock twins yolov5n / yolov5s)
in a YOLOv5 tree or the PyPI `yolov5` package, fused, with BatchNorm statistics of real images (the
embedded COCO images: random statistics could leave a head whose activations underflow). They run in
every runtime asked for whose package imports (the others are skipped with one line): PyTorch eager,
ONNX Runtime, OpenVINO (from the ONNX file), and NCNN, MNN, ExecuTorch through the plugin's own
exporters (export.formats). Every model and runtime is timed round after round, interleaved, so that
the machine's drift hits all alike; each of our models is reported beside its stock twin as the ratio
of their medians in the same run.
"""
import os
import platform
import statistics
import time
from pathlib import Path

THREADS = 2
# Our models by name (the configs' names), by cost, and the stock model whose head each one uses
OURS = {'MNv4-Conv-S': 'yolov5-mnv4-conv-s.yaml', 'MNv4-Conv-M': 'yolov5-mnv4-conv-m.yaml',
        'MNv4-Hybrid-M': 'yolov5-mnv4-hybrid-m.yaml', 'MNv4-Conv-L': 'yolov5-mnv4-conv-l.yaml',
        'MNv4-Hybrid-L': 'yolov5-mnv4-hybrid-l.yaml'}
STOCK = {'yolov5n': 'yolov5n.yaml', 'yolov5s': 'yolov5s.yaml'}
TWINS = {'MNv4-Conv-S': 'yolov5n', 'MNv4-Conv-M': 'yolov5s', 'MNv4-Hybrid-M': 'yolov5s', 'MNv4-Conv-L': 'yolov5s',
         'MNv4-Hybrid-L': 'yolov5s'}
# runtime: (the Python package it needs, what the table calls it)
RUNTIMES = {'torch': ('torch', 'PyTorch'), 'onnxruntime': ('onnxruntime', 'ONNX Runtime'),
            'openvino': ('openvino', 'OpenVINO'), 'ncnn': ('ncnn', 'NCNN'), 'mnn': ('MNN', 'MNN'),
            'executorch': ('executorch', 'ExecuTorch')}


def available_runtimes(names=RUNTIMES):
    """{runtime: installed?} without importing anything heavy (what `yolov5-mnv4 check` lists)."""
    import importlib.util
    return {name: importlib.util.find_spec(RUNTIMES[name][0]) is not None for name in names}


def gflops(model, size):
    """GFLOPs of one image at size x size (2 x MACs, YOLOv5's convention), attention included: torch's
    FLOP counter, with the attention's explicit form (the counter does not see inside the fused kernel)."""
    from unittest import mock

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from . import attention
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode(), mock.patch.object(attention, 'attend', attention.attend_explicit):
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def ort_session(path, threads=THREADS):
    """An ONNX Runtime CPU session on `threads` threads that do not spin when idle."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')  # idle threads must not steal
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def interleaved(runners, reps, warmup, progress=None):
    """{name: [ms per round]}: every runner once per round, round after round, so that machine drift
    hits all alike; `progress(round, rounds)` after each round."""
    times = {name: [] for name in runners}
    for round_ in range(warmup + reps):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
        if progress:
            progress(round_ + 1, warmup + reps)
    return times


def spread(samples):
    """(median, interquartile range) of `samples`."""
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q[2] - q[0]


def markdown_table(rows, columns):
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    return lines + ['| ' + ' | '.join(str(r.get(c, '')) for c in columns) + ' |' for r in rows]


def calibrate_batchnorm(model, images):
    """Every BatchNorm of `model` gets the statistics of its input on `images` (one cumulative pass in
    train mode); eval mode after. For latency only: the values are realistic, not trained."""
    import torch
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    with torch.no_grad():
        model.train()(images)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    return model.eval()


class Host:
    """Where the detectors are built: a YOLOv5 tree (`models.yolo`, stock configs in its models/) or
    the PyPI `yolov5` package (`yolov5.models.yolo`)."""

    def __init__(self, tree=None):
        import importlib
        import sys
        if tree is not None:
            from .hosts.yolov5_tree import find_tree
            self.root = find_tree(tree).root
            sys.path.insert(0, str(self.root))
            self.yolo = importlib.import_module('models.yolo')
            self.stock_dir = self.root / 'models'
            self.name = f'YOLOv5 tree {self.root}'
        else:
            try:
                import yolov5  # noqa: F401 (the PyPI package; importing yolov5_mnv4 registers into it)
            except ImportError:
                raise SystemExit('yolov5-mnv4 benchmark: no YOLOv5 to build the models with: pass --yolov5 '
                                 '/path/to/yolov5 (a checkout), or pip install yolov5 (the PyPI package)') from None
            import yolov5_mnv4  # noqa: F401
            self.yolo = importlib.import_module('yolov5.models.yolo')
            self.stock_dir = Path(self.yolo.__file__).parent
            self.name = f'PyPI yolov5 {getattr(sys.modules["yolov5"], "__version__", "")}'.strip()
        import logging
        self.yolo.LOGGER.setLevel(logging.WARNING)  # no model tables for every build

    def config(self, name):
        from .resources import configs
        if name in STOCK:
            return self.stock_dir / STOCK[name]
        folder = Path(os.environ.get('TMPDIR', '/tmp')) / 'yolov5-mnv4-benchmark-configs'
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / OURS[name]
        path.write_bytes(configs()[OURS[name]])
        return path

    def build(self, name, images):
        """The fused eval detector `name`, BatchNorm statistics from `images`, Detect returning what
        exports return (the detections)."""
        import torch
        torch.manual_seed(0)
        model = calibrate_batchnorm(self.yolo.DetectionModel(str(self.config(name))), images).fuse().eval()
        model.model[-1].export = True
        return model


def machine_line(threads=THREADS):
    import torch
    return f'{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads'


def runner(runtime, model, size, folder, threads=THREADS):
    """A function that runs `model` once on a zero image at `size` in `runtime` (exporting it to
    `folder` first where the runtime needs a file; an export already there is reused)."""
    import numpy as np
    import torch
    x = torch.zeros(1, 3, size, size)
    if runtime == 'torch':
        def run():
            with torch.inference_mode():
                model(x)
        return run
    stem = Path(folder) / f'{model.yaml_file_stem}-{size}'
    if runtime in ('onnxruntime', 'openvino'):
        from .export.onnx import onnx_file
        path = stem.with_suffix('.onnx')
        if not path.is_file():
            onnx_file(model, x, path)
        if runtime == 'onnxruntime':
            session, feed = ort_session(path, threads), {'images': x.numpy()}
            return lambda: session.run(None, feed)
        import openvino as ov
        compiled = ov.Core().compile_model(str(path), 'CPU', {'INFERENCE_NUM_THREADS': threads})
        request = compiled.create_infer_request()
        return lambda: request.infer({0: x.numpy()})
    from .export import runtimes
    path = {'ncnn': stem.with_name(stem.name + '_ncnn_model'), 'mnn': stem.with_suffix('.mnn'),
            'executorch': stem.with_suffix('.pte')}[runtime]
    if not path.exists():
        {'ncnn': runtimes.export_ncnn, 'mnn': runtimes.export_mnn, 'executorch': runtimes.export_executorch}[runtime](
            model, x, path)
    loaded, image = runtimes.load(runtime, path, threads), np.zeros((1, 3, size, size), np.float32)
    return lambda: loaded(image)


def measure(host, names, runtimes, sizes, runs, reps, warmup, folder, log=print):
    """Rows {model, params, gflops_640, <runtime>_<size>_ms, _iqr, _runs} and the same-run ratios of
    each of our models to its twin {'<runtime>_<size>': {'<ours>/<twin>': {median, min, max, runs}}}."""
    import torch
    from .export.images import letterboxed_images
    from .resources import embedded_dataset
    torch.set_num_threads(THREADS)
    images = torch.from_numpy(__import__('numpy').concatenate(
        letterboxed_images(embedded_dataset() / 'images' / 'train2017', 160)))
    models, rows = {}, {}
    for i, name in enumerate(names, 1):
        log(f'[{i}/{len(names)}] building {name}')
        models[name] = host.build(name, images)
        models[name].yaml_file_stem = name
        rows[name] = {'model': name, 'twin': TWINS.get(name, '(stock)'), 'params': sum(p.numel() for p in models[name].parameters()),
                      'gflops_640': round(gflops(models[name], 640), 2)}
    for size in sizes:
        runners = {}
        for runtime in runtimes:
            for name, model in models.items():
                log(f'preparing {name} in {RUNTIMES[runtime][1]} at {size}')
                runners[(name, runtime)] = runner(runtime, model, size, folder)
        for (name, runtime), (ms, iqr, per_run) in timed_runs(runners, runs, reps, warmup, log, f'at {size}').items():
            rows[name].update({f'{runtime}_{size}_ms': round(ms, 2), f'{runtime}_{size}_iqr': round(iqr, 2),
                               f'{runtime}_{size}_runs': [round(m, 2) for m in per_run]})
    return list(rows.values()), twin_ratios(rows, runtimes, sizes)


def timed_runs(runners, runs, reps, warmup, log=None, label=''):
    """{key: (median of the runs' medians, median of their IQRs, each run's median)}, in ms: `runs` runs
    of `reps` interleaved rounds (after `warmup`) of every runner; progress to `log` four times a run."""
    per_run = {key: [] for key in runners}
    for run_ in range(runs):
        def progress(done, total, run_=run_):
            if log and (done == total or done % max(1, total // 4) == 0):
                log(f'timing {label}: run {run_ + 1}/{runs}, round {done}/{total}')
        for key, samples in interleaved(runners, reps, warmup, progress).items():
            per_run[key].append(spread(samples))
    return {key: (statistics.median(m for m, _ in results), statistics.median(i for _, i in results),
                  [m for m, _ in results]) for key, results in per_run.items()}


def twin_ratios(rows, runtimes, sizes, pairs=None):
    """{'<runtime>_<size>': {'<ours>/<theirs>': {median, min, max, runs}}}: each run's latency ratio of
    two models timed interleaved in that run, and the median and range over the runs; for `pairs`
    (default: each of our models and its stock twin) where both were measured. `rows`: by model name."""
    ratios = {}
    for size in sizes:
        for runtime in runtimes:
            key = f'{runtime}_{size}'
            ratios[key] = {}
            for ours, theirs in pairs or TWINS.items():
                if ours in rows and theirs in rows and f'{key}_runs' in rows[ours]:
                    per_run = [round(a / b, 3) for a, b in zip(rows[ours][f'{key}_runs'], rows[theirs][f'{key}_runs'])]
                    ratios[key][f'{ours}/{theirs}'] = {'median': round(statistics.median(per_run), 3),
                                                       'min': min(per_run), 'max': max(per_run), 'runs': per_run}
    return ratios


def plot(rows, runtimes, size, path, title):
    """Latency at `size` against GFLOPs at 640: one point per model and runtime."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for runtime, marker in zip(runtimes, 'os^Dv<>'):
        xs = [r['gflops_640'] for r in rows]
        ys = [r[f'{runtime}_{size}_ms'] for r in rows]
        ax.scatter(xs, ys, marker=marker, label=RUNTIMES[runtime][1])
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(5, 4), fontsize=7)
    ax.set_xlabel('GFLOPs at 640')
    ax.set_ylabel(f'latency at {size}, batch 1, {THREADS} threads (ms, median)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
