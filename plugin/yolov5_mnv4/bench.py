"""Which detector is fastest on this device, measured here: the machinery of `yolov5-mnv4 benchmark`
and of scripts/benchmark.py (one implementation).

Models are YOLOv5 detectors built from their configs (ours, and the stock twins yolov5n / yolov5s)
in a YOLOv5 tree or the PyPI `yolov5` package, fused, with BatchNorm statistics of real images (the
embedded COCO images: random statistics could leave a head whose activations underflow). They run in
every runtime asked for whose package imports (the others are skipped with one line): PyTorch eager,
ONNX Runtime, OpenVINO (from the ONNX file), NCNN, MNN, ExecuTorch through the plugin's own
exporters (export.formats), and TFLite (YOLOv5's Keras copy of the model, converted by TensorFlow and
run by LiteRT: only when asked for, since it imports TensorFlow). Every model and runtime is timed round after round, interleaved, so that
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
            'executorch': ('executorch', 'ExecuTorch'), 'tflite': ('tensorflow', 'TFLite (LiteRT)')}
# precisions beyond fp32, and the runtimes that offer them here (fp16: weights stored in fp16; int8:
# post-training quantization calibrated on the embedded images, the Detect head kept float as the
# export command does but in MNN; OpenVINO's through nncf, which is needed for it)
PRECISIONS = {'fp16': ('ncnn', 'mnn', 'tflite'), 'int8': ('mnn', 'executorch', 'tflite', 'openvino')}
ASKED_ONLY = ('tflite',)  # not in the default "every runtime installed": it imports TensorFlow (a second or more)
# The stock models in PyTorch a second time, in channels-last memory (weights and input): our stem hands
# channels-last activations to every later layer, YOLOv5's head and Detect included, so NCHW stock
# models alone would compare two memory layouts, not two backbones. Ours run as shipped (key 'torch').
CHANNELS_LAST = 'torch-channels_last'
# Same-run ratios within this of 1 in every run are read as parity: on shared 2-CPU machines, runs of the
# same model differ by up to ~10% (docs/benchmarks.md)
NOISE = 0.10


def variant(runtime, precision='fp32'):
    """The key of `runtime` at `precision` in rows and ratios: 'mnn', 'mnn-int8'."""
    return runtime if precision == 'fp32' else f'{runtime}-{precision}'


def label(key):
    """'mnn-int8' -> 'MNN int8'; 'torch-channels_last' -> 'PyTorch channels-last'."""
    runtime, _, precision = key.partition('-')
    precision = precision.replace('_', '-')
    return RUNTIMES[runtime][1] + (f' {precision}' if precision else '')


def with_stock_layouts(keys, names):
    """`keys` (variant() keys) with CHANNELS_LAST after 'torch' when a stock model is among `names`."""
    if 'torch' not in keys or CHANNELS_LAST in keys or not any(is_stock(n) for n in names):
        return list(keys)
    at = keys.index('torch') + 1
    return [*keys[:at], CHANNELS_LAST, *keys[at:]]


def is_stock(name):
    """Whether `name` is a stock model (YOLOv5's or the Ultralytics package's twin of one of ours)."""
    return name in STOCK or name in set(ultralytics_models().values())


def default_runtimes(installed):
    """(the runtimes the benchmark uses when none are named, those installed that it uses only when
    asked for): `installed` is available_runtimes()."""
    found = [name for name, ok in installed.items() if ok]
    return [n for n in found if n not in ASKED_ONLY], [n for n in found if n in ASKED_ONLY]


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


def openvino_compiled(model, threads=THREADS, **hints):
    """`model` (a path or an openvino Model) compiled for the CPU as every benchmark here runs OpenVINO:
    `threads` inference threads, latency mode with one stream (batch 1, one request at a time); `hints`
    add to that (INFERENCE_PRECISION_HINT='f32')."""
    import openvino as ov
    core = ov.Core()
    config = {'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1, **hints}
    return core.compile_model(core.read_model(str(model)) if isinstance(model, (str, Path)) else model, 'CPU', config)


def openvino_int8(path, calibration, detect=None):
    """The ONNX model at `path` quantized by nncf's post-training quantization (OpenVINO's int8 route),
    calibrated on `calibration` (NCHW float batches), as an OpenVINO model; the nodes whose names start
    with `detect` (the Detect's, '/model.24/') stay float, as in the other int8 routes."""
    import re
    try:
        import nncf
    except ImportError as err:
        raise SystemExit(f'yolov5-mnv4: OpenVINO int8 quantizes with nncf ({err}): pip install nncf') from None
    import openvino as ov
    images = list(calibration)
    ignored = nncf.IgnoredScope(patterns=[f'{re.escape(detect)}.*']) if detect else None
    return nncf.quantize(ov.Core().read_model(str(path)), nncf.Dataset(images), subset_size=len(images),
                         ignored_scope=ignored)


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
    """(median, interquartile range) of `samples` (0 for a single sample)."""
    if len(samples) < 2:
        return statistics.median(samples), 0.0
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
            from .hosts.yolov5 import register
            register(self.yolo)  # a tree never patched builds our configs too, as it loads our checkpoints
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

    def load(self, weights):
        """A trained checkpoint (train.py's best.pt), fused, eval, Detect returning the detections."""
        import torch
        try:
            ckpt = torch.load(str(weights), map_location='cpu', weights_only=False)
        except ModuleNotFoundError as err:
            raise SystemExit(f'yolov5-mnv4 benchmark: {weights} needs the YOLOv5 code it was trained with '
                             f'({err}): pass --yolov5 /path/to/yolov5') from None
        model = (ckpt.get('ema') or ckpt['model']).float().fuse().eval()
        model.model[-1].export = True
        return model

    def build(self, name, images):
        """The fused eval detector `name`, BatchNorm statistics from `images`, Detect returning what
        exports return (the detections)."""
        import torch
        torch.manual_seed(0)
        model = calibrate_batchnorm(self.yolo.DetectionModel(str(self.config(name))), images).fuse().eval()
        model.model[-1].export = True
        return model

    def keras(self, model, size):
        """YOLOv5's Keras copy of `model` at size x size (what its TFLite export converts)."""
        from .hosts.yolov5 import keras_detector
        return keras_detector(model, (size, size), self.yolo.__name__.rpartition('.')[0] + '.tf')  # beside models.yolo


def ultralytics_models():
    """{our Ultralytics-package config's name (stem): its stock twin}: yolo11n-mnv4-conv-s -> yolo11n."""
    from .resources import ultralytics_configs
    return {p.stem: p.stem.split('-mnv4')[0] for p in sorted(ultralytics_configs().glob('*.yaml'))}


class UltralyticsHost:
    """The Ultralytics package, for its detectors (yolo11n/s, yolo26n/s, yolov5nu/su) and our configs
    for it: built from their YAML, fused, Detect in export mode (what its exports compute)."""

    name = 'the Ultralytics package'

    def __init__(self):
        from ultralytics.nn.tasks import DetectionModel

        import yolov5_mnv4  # noqa: F401 (registers when the package is imported)
        self.model_class = DetectionModel

    def build(self, name, images):
        import torch

        from .resources import ultralytics_configs
        torch.manual_seed(0)
        config = ultralytics_configs() / f'{name}.yaml'
        model = self.model_class(str(config) if config.is_file() else f'{name}.yaml', verbose=False)
        model = calibrate_batchnorm(model, images).fuse(verbose=False).eval()
        model.model[-1].export = True
        return model


def is_ultralytics(name):
    return name in ultralytics_models() or name in set(ultralytics_models().values())


def machine_line(threads=THREADS):
    import torch
    return f'{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads'


def predictor(key, model, size, folder, threads=THREADS, calibration=None):
    """A function from an NCHW float32 batch at `size` to the detector's output as a numpy array
    ((1, anchors, 5 + classes)), running `model` in the runtime and precision `key` (variant()),
    exported to `folder` first where the runtime needs a file (an export already there, from an
    earlier run, is reused); int8 is calibrated on `calibration` (NCHW float batches)."""
    import numpy as np
    import torch
    runtime, _, precision = key.partition('-')
    x = torch.zeros(1, 3, size, size)
    if runtime == 'torch':
        layout = torch.channels_last if key == CHANNELS_LAST else torch.contiguous_format
        if key == CHANNELS_LAST:
            model = channels_last_copy(model)  # the other runtimes export the NCHW model

        def predict(image):
            with torch.inference_mode():
                return model(torch.from_numpy(image).contiguous(memory_format=layout))[0].numpy()
        return predict
    stem = f'{model.bench_name}-{size}' + (f'-{precision}' if precision else '')  # may hold dots: suffixes are added
    if runtime in ('onnxruntime', 'openvino'):
        from .export.onnx import onnx_file
        path = Path(folder) / f'{stem}.onnx'
        if not path.is_file():
            onnx_file(model, x, path)
        if runtime == 'onnxruntime':
            session = ort_session(path, threads)
            return lambda image: session.run(None, {'images': image})[0]
        if precision == 'int8':  # quantized once, saved beside the ONNX file, reused like the other exports
            quantized = path.with_suffix('.xml')
            if not quantized.is_file():
                import openvino as ov
                ov.save_model(openvino_int8(path, calibration, f'/model.{len(model.model) - 1}/'), str(quantized))
            compiled = openvino_compiled(quantized, threads)
        else:
            compiled = openvino_compiled(path, threads, INFERENCE_PRECISION_HINT='f32')
        request = compiled.create_infer_request()
        return lambda image: np.asarray(request.infer({0: image})[0])
    if runtime == 'tflite':
        from .export.tflite import TFLiteModel
        path = Path(folder) / f'{stem}.tflite'
        if not path.is_file():
            tflite_file(model.bench_keras(model, size), path, precision, calibration)
        loaded = TFLiteModel(path, threads)

        def predict(image):  # NCHW -> NHWC; boxes back to pixels (YOLOv5's TF Detect divides by the size)
            y = np.array(loaded(image.transpose(0, 2, 3, 1)), np.float32)
            y[..., :4] *= size
            return y
        return predict
    from .export import runtimes
    path = Path(folder) / {'ncnn': f'{stem}_ncnn_model', 'mnn': f'{stem}.mnn', 'executorch': f'{stem}.pte'}[runtime]
    if not path.exists():
        calibrate = calibration if precision == 'int8' else None
        with torch.no_grad():
            model(x)  # Detect caches its grids: exported as constants, as export.py's dry run does
        if runtime == 'ncnn':
            runtimes.export_ncnn(model, x, path, half=precision == 'fp16')
        elif runtime == 'mnn':
            runtimes.export_mnn(model, x, path, half=precision == 'fp16', calibration=calibrate)
        else:  # the Detect's own ops stay float in int8 (export command: one scale for boxes and scores fails)
            runtimes.export_executorch(model, x, path, calibrate, float_modules=(f'model.{len(model.model) - 1}',))
    loaded = runtimes.load(runtime, path, threads)
    return lambda image: np.asarray(loaded(image))


def channels_last_copy(model):
    """A copy of `model` with its 4-D weights in channels-last memory: what `.to(memory_format=
    torch.channels_last)` does to a YOLOv5 model, without YOLOv5's `_apply`, which also maps Detect's
    cached 5-D grids and fails on them. Attributes the benchmark hung on it (`bench_*`) are shared."""
    import copy

    import torch
    model = copy.deepcopy(model, {id(v): v for k, v in vars(model).items() if k.startswith('bench_')})
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def tflite_file(keras_model, path, precision='', calibration=None):
    """A .tflite of `keras_model` on TFLite's builtin operators: fp32 weights (''), fp16 weights
    (export.py's default) or int8 with the Detect and the attention's matmuls and softmax in float (the
    export command's), calibrated on `calibration` (NCHW float batches)."""
    from .export.tflite import builtin_tflite, import_tensorflow
    from .export.tflite_int8 import int8_tflite
    converter = import_tensorflow().lite.TFLiteConverter.from_keras_model(keras_model)
    Path(path).write_bytes(int8_tflite(converter, [im.transpose(0, 2, 3, 1) for im in calibration])
                           if precision == 'int8' else builtin_tflite(converter, half=precision == 'fp16'))
    return Path(path)


def supports(key, model):
    """Whether `key` is measured for `model` here: TFLite only for YOLOv5-host models (the Ultralytics
    package's TFLite export goes through onnx2tf, outside this benchmark); channels-last only for the
    stock models (ours run channels-last as shipped)."""
    if key == CHANNELS_LAST:
        return getattr(model, 'bench_stock', False)
    return not key.startswith('tflite') or hasattr(model, 'bench_keras')


def runner(key, model, size, folder, threads=THREADS, calibration=None):
    """A function that runs `model` once on a zero image at `size` in `key`'s runtime (for timing)."""
    import numpy as np
    predict = predictor(key, model, size, folder, threads, calibration)
    image = np.zeros((1, 3, size, size), np.float32)
    return lambda: predict(image)


def measure(host, names, runtimes, sizes, runs, reps, warmup, folder, log=print, data=None, val_images=None,
            calibration=None):
    """Rows {model, params, gflops_640, <runtime>_<size>_ms, _iqr, _runs} and the same-run ratios of
    each of our models to its twin {'<runtime>_<size>': {'<ours>/<twin>': {median, min, max, runs}}}.
    `runtimes`: variant() keys ('mnn', 'mnn-int8', CHANNELS_LAST: see with_stock_layouts); int8 calibrates
    on the embedded images, or on the first 100 images of the folder `calibration`.
    `names`: model names (OURS, STOCK) or checkpoint paths; with `data` (a YOLO data YAML), also
    <runtime>_<size>_map50 and _map for the checkpoints, on its val images."""
    import torch

    from .export.images import letterboxed_images
    from .resources import embedded_dataset
    torch.set_num_threads(THREADS)
    images = torch.from_numpy(__import__('numpy').concatenate(
        letterboxed_images(embedded_dataset() / 'images' / 'train2017', 160)))
    models, rows, package = {}, {}, None
    for i, name in enumerate(names, 1):
        log(f'[{i}/{len(names)}] {"loading" if Path(name).suffix == ".pt" else "building"} {name}')
        if is_ultralytics(name):
            package = package or UltralyticsHost()
            models[name] = package.build(name, images)
        else:
            models[name] = host.load(name) if Path(name).suffix == '.pt' else host.build(name, images)
            models[name].bench_keras = host.keras
        models[name].bench_name = export_name(name)
        models[name].bench_stock = is_stock(name)
        rows[name] = {'model': Path(name).name if Path(name).suffix == '.pt' else name,
                      'twin': {**TWINS, **ultralytics_models()}.get(
                          name, '(checkpoint)' if Path(name).suffix == '.pt' else '(stock)'), 'params': sum(p.numel() for p in models[name].parameters()),
                      'gflops_640': round(gflops(models[name], 640), 2)}
    for size in sizes:
        runners = {}
        calibrating = calibration_images(size, calibration) if any(k.endswith('-int8') for k in runtimes) else None
        for runtime in runtimes:
            for name, model in models.items():
                if not supports(runtime, model):
                    if runtime != CHANNELS_LAST:  # ours are timed once, as shipped: nothing to say
                        log(f'skipping {name} in {label(runtime)}: not exported to it by this benchmark')
                    continue
                log(f'preparing {name} in {label(runtime)} at {size}')
                runners[(name, runtime)] = runner(runtime, model, size, folder, calibration=calibrating)
        if data is not None:
            items = validation_set(data, val_images)
            for runtime in runtimes:
                for name, model in models.items():
                    if Path(name).suffix == '.pt' and supports(runtime, model):
                        log(f'mAP of {Path(name).name} in {label(runtime)} at {size} on {len(items)} val images')
                        map50, map_ = evaluate(predictor(runtime, model, size, folder, calibration=calibrating), items, size)
                        rows[name].update({f'{runtime}_{size}_map50': round(map50, 4), f'{runtime}_{size}_map': round(map_, 4)})
        for (name, runtime), (ms, iqr, per_run) in timed_runs(runners, runs, reps, warmup, log, f'at {size}').items():
            rows[name].update({f'{runtime}_{size}_ms': round(ms, 2), f'{runtime}_{size}_iqr': round(iqr, 2),
                               f'{runtime}_{size}_runs': [round(m, 2) for m in per_run]})
    return list(rows.values()), twin_ratios(rows, runtimes, sizes)


def fair_ratios(rows, ratios):
    """{'<runtime>_<size>': {'<ours>/<twin>': ratio}} from twin_ratios(), one per runtime: in PyTorch
    the ratio to the stock model in its faster layout (NCHW or channels-last, by its median there),
    named in the ratio's 'stock_layout'. The ratios a summary leads with."""
    by = {r['model']: r for r in rows}
    fair = {}
    for key, pairs in ratios.items():
        runtime, size = key.rsplit('_', 1)
        if runtime == CHANNELS_LAST:
            continue
        fair[key] = {}
        for pair, ratio in pairs.items():
            theirs = by[pair.split('/')[1]]
            cl = ratios.get(f'{CHANNELS_LAST}_{size}', {}).get(pair)
            if runtime == 'torch' and cl is not None:
                faster = theirs[f'{CHANNELS_LAST}_{size}_ms'] < theirs[f'torch_{size}_ms']
                fair[key][pair] = {**(cl if faster else ratio), 'stock_layout': 'channels-last' if faster else 'NCHW'}
            else:
                fair[key][pair] = ratio
    return fair


def verdict(ratio, noise=NOISE):
    """What a same-run ratio ({min, max}) of ours to the stock model says: 'at parity' when every run
    lies within `noise` of 1, else 'faster' / 'slower' when every run is below / above 1, else 'mixed'."""
    if 1 - noise <= ratio['min'] and ratio['max'] <= 1 + noise:
        return 'at parity'
    if ratio['max'] < 1:
        return 'faster'
    return 'slower' if ratio['min'] > 1 else 'mixed'


CALIBRATION_IMAGES = 100  # export.py --int8 calibrates on up to this many


def calibration_images(size, folder=None):
    """The embedded COCO images (train and val), or the first 100 images of `folder`, letterboxed to
    `size`: NCHW float batches in [0, 1]."""
    from .export.images import letterboxed_images
    from .resources import embedded_dataset
    if folder is not None:
        return letterboxed_images(folder, size, CALIBRATION_IMAGES)
    root = embedded_dataset() / 'images'
    return [*letterboxed_images(root / 'train2017', size), *letterboxed_images(root / 'val2017', size)]


def timed_runs(runners, runs, reps, warmup, log=None, what=''):
    """{key: (median of the runs' medians, median of their IQRs, each run's median)}, in ms: `runs` runs
    of `reps` interleaved rounds (after `warmup`) of every runner; progress to `log` four times a run."""
    per_run = {key: [] for key in runners}
    for run_ in range(runs):
        def progress(done, total, run_=run_):
            if log and (done == total or done % max(1, total // 4) == 0):
                log(f'timing {what}: run {run_ + 1}/{runs}, round {done}/{total}')
        for key, samples in interleaved(runners, reps, warmup, progress).items():
            per_run[key].append(spread(samples))
    return {key: (statistics.median(m for m, _ in results), statistics.median(i for _, i in results),
                  [m for m, _ in results]) for key, results in per_run.items()}


def export_name(name):
    """The file stem of `name`'s cached exports: the plugin's version (the built model can change with
    it) and, for a checkpoint, a digest of its bytes (a retrained best.pt is not the cached one)."""
    from . import __version__
    if Path(name).suffix == '.pt':
        import hashlib
        return f'{Path(name).stem}-{hashlib.sha256(Path(name).read_bytes()).hexdigest()[:10]}'
    return f'{name}-{__version__}'


def twin_ratios(rows, runtimes, sizes, pairs=None):
    """{'<runtime>_<size>': {'<ours>/<theirs>': {median, min, max, runs}}}: each run's latency ratio of
    two models timed interleaved in that run, and the median and range over the runs; for `pairs`
    (default: each of our models and its stock twin) where both were measured. `rows`: by model name.
    Under CHANNELS_LAST the stock model's channels-last time divides ours as shipped ('torch')."""
    ratios = {}
    for size in sizes:
        for runtime in runtimes:
            key = f'{runtime}_{size}'
            ratios[key] = {}
            mine = f'torch_{size}' if runtime == CHANNELS_LAST else key  # ours: as shipped
            for ours, theirs in pairs or [*TWINS.items(), *ultralytics_models().items()]:
                if ours in rows and theirs in rows and f'{mine}_runs' in rows[ours] and f'{key}_runs' in rows[theirs]:
                    per_run = [round(a / b, 3) for a, b in zip(rows[ours][f'{mine}_runs'], rows[theirs][f'{key}_runs'])]
                    ratios[key][f'{ours}/{theirs}'] = {'median': round(statistics.median(per_run), 3),
                                                       'min': min(per_run), 'max': max(per_run), 'runs': per_run}
    return ratios


def plot(rows, runtimes, size, path, title):
    """Latency at `size` against GFLOPs at 640: one point per model and runtime."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for runtime, marker in zip(runtimes, 'os^Dv<>pPX*hH8d'):
        measured = [r for r in rows if f'{runtime}_{size}_ms' in r]
        xs = [r['gflops_640'] for r in measured]
        ys = [r[f'{runtime}_{size}_ms'] for r in measured]
        ax.scatter(xs, ys, marker=marker, label=label(runtime))
        for r, x, y in zip(measured, xs, ys):
            ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(5, 4), fontsize=7)
    ax.set_xlabel('GFLOPs at 640')
    ax.set_ylabel(f'latency at {size}, batch 1, {THREADS} threads (ms, median)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- accuracy: mAP of each model in each runtime on the user's validation images (--data) ----

def validation_set(data_yaml, limit=None, split='val'):
    """[(image path, labels (n, 5): class, x1, y1, x2, y2 in pixels)] of a YOLO data YAML's `split`."""
    import cv2
    import numpy as np
    import yaml

    from .export.images import image_files
    spec = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(spec.get('path') or Path(data_yaml).parent)
    root = root if root.is_absolute() else (Path(data_yaml).parent / root).resolve()
    val = spec[split] if isinstance(spec[split], list) else [spec[split]]
    items = []
    for image in image_files([root / v for v in val])[:limit]:
        label = Path(str(image).replace(f'{Path("/images/")}', f'{Path("/labels/")}')).with_suffix('.txt')
        h, w = cv2.imread(str(image)).shape[:2]
        rows = np.array([line.split()[:5] for line in label.read_text().splitlines() if line.strip()] if label.is_file()
                        else np.zeros((0, 5)), np.float64).reshape(-1, 5)
        boxes = np.column_stack([rows[:, 0], (rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                                 (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h])
        items.append((image, boxes))
    if not items:
        raise SystemExit(f'yolov5-mnv4 benchmark: no validation images in {data_yaml}')
    return items


def box_iou(a, b):
    import numpy as np
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


IOU_THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def mean_average_precision(detections, truths):
    """(mAP at IoU 0.5, mAP at 0.5:0.95) over the classes present in `truths`: COCO's 101-point
    interpolated AP, each detection (x1 y1 x2 y2 conf class) matched greedily by confidence to the
    unmatched truth (class x1 y1 x2 y2) of its class it overlaps most."""
    import numpy as np
    records, counts = [], {}
    for det, truth in zip(detections, truths):
        for c in truth[:, 0]:
            counts[int(c)] = counts.get(int(c), 0) + 1
        det = det[np.argsort(-det[:, 4])] if len(det) else det
        matched = np.zeros((len(IOU_THRESHOLDS), len(truth)), bool)
        for d in det:
            same = truth[:, 0] == d[5]
            hits = []
            ious = box_iou(d[None, :4], truth[:, 1:])[0] if len(truth) else np.zeros(0)
            for t, threshold in enumerate(IOU_THRESHOLDS):
                candidates = np.where(same & ~matched[t] & (ious >= threshold))[0]
                if len(candidates):
                    matched[t, candidates[np.argmax(ious[candidates])]] = True
                hits.append(bool(len(candidates)))
            records.append((int(d[5]), float(d[4]), hits))
    aps = []
    for c, n in counts.items():
        mine = sorted((r for r in records if r[0] == c), key=lambda r: -r[1])
        tp = np.array([r[2] for r in mine], float).reshape(-1, len(IOU_THRESHOLDS))
        per_threshold = []
        for t in range(len(IOU_THRESHOLDS)):
            cum = np.cumsum(tp[:, t])
            recall, precision = cum / n, cum / np.arange(1, len(cum) + 1)
            envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
            points = [envelope[recall >= r].max() if (recall >= r).any() else 0.0 for r in np.linspace(0, 1, 101)]
            per_threshold.append(float(np.mean(points)))
        aps.append(per_threshold)
    aps = np.array(aps) if aps else np.zeros((1, len(IOU_THRESHOLDS)))
    return float(aps[:, 0].mean()), float(aps.mean())


def evaluate(predict, items, size, conf=0.001, iou=0.6):
    """(mAP50, mAP50-95) of `predict` (predictor()) on `items` (validation_set), images letterboxed
    to `size` (square: val.py's rectangular batches differ a little), NMS as val.py runs it
    (confidence 0.001, IoU 0.6, every class above the confidence)."""
    import cv2
    import numpy as np

    from .export.images import letterbox_geometry, letterboxed
    from .export.parity import nms
    detections = []
    for image, _ in items:
        img = cv2.imread(str(image))
        r, top, left = letterbox_geometry(img.shape[:2], (size, size))
        det = nms(predict(letterboxed(img, size)), conf, iou, multi_label=True).numpy().astype(np.float64)
        det[:, [0, 2]] = (det[:, [0, 2]] - left) / r
        det[:, [1, 3]] = (det[:, [1, 3]] - top) / r
        detections.append(det)
    return mean_average_precision(detections, [truth for _, truth in items])
