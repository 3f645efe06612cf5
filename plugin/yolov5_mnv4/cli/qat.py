"""`yolov5-mnv4 qat`: quantization-aware training of a YOLOv5 detection checkpoint (MNv4 or stock),
then int8 exports that keep the ranges it learned:

    yolov5-mnv4 qat --weights best.pt --data data.yaml --img 320 [--epochs 3] --include executorch onnx tflite
    yolov5-mnv4 qat ... --compare        # also fp32, post-training int8 and an fp32 fine-tune, side by side

For a YOLOv5 checkpoint run it inside the YOLOv5 checkout (or pass --yolov5); a checkpoint of the
Ultralytics package (`yolo train`, e.g. yolo11n-mnv4-conv-s.yaml) needs only the package. The fine-tune is PT2E (torchao's
prepare_qat_pt2e with ExecuTorch's XNNPACK quantizer: int8 activations, per-channel int8 weights);
the Detect's output convs and its box decoding stay float (the package's: the last box and class
convs and the DFL). AdamW at --lr (1e-5) on the data's train split, letterboxed to --img, without
augmentation (YOLOv5: its own loader; the package: a letterboxing loader of ours); after --freeze-at of the run the observers and
the BatchNorm statistics stop. It writes `best-qat-int8.pte` (ExecuTorch, XNNPACK), `best-qat-int8.onnx`
(Q/DQ pairs; ONNX Runtime) and `best-qat-int8.tflite` (litert-torch, where installed) beside the
weights, scores each on the data's val split (mAP50 and mAP50-95, our evaluator: square letterbox,
NMS at confidence 0.001 and IoU 0.6) and prints one table.

`--compare` adds, with the same evaluator: the checkpoint in fp32, post-training int8 through the same
quantizer (calibrated on --calibration, default the first 100 train images), and the checkpoint
fine-tuned in fp32 on the same schedule (what extra training alone gains; scored in PyTorch), the int8
routes and fp32 in every format asked for (`best-fp32.pte`, ...), with the latency of each file
(median of --reps calls, 2 threads).
`--weight-bits 7` keeps weights in [-63, 63] for ONNX Runtime on x86 CPUs without VNNI.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from .. import __version__
from ..export import qat
from .convert import find_yolov5_tree

FORMAT_PACKAGES = {'executorch': ('executorch', 'pip install yolov5-mnv4[qat]'),
                   'onnx': ('onnxscript', 'pip install yolov5-mnv4[qat]'),
                   'tflite': ('litert_torch', 'scripts/litert_torch_env.sh installs litert-torch; put its folder on PYTHONPATH')}
RUNTIME = {'torch': 'PyTorch', 'executorch': 'ExecuTorch', 'onnx': 'ONNX Runtime', 'tflite': 'LiteRT'}


def parse_args(argv, prog):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('--weights', type=Path, required=True, help='a YOLOv5 detection checkpoint (best.pt)')
    parser.add_argument('--data', type=Path, required=True, help='dataset YAML: train split fine-tunes, val split scores')
    parser.add_argument('--img', '--imgsz', type=int, default=640, help='square image size')
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--steps', type=int, default=0, help='stop after this many steps (a smoke run)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--lr', type=float, default=1e-5, help='AdamW learning rate')
    parser.add_argument('--freeze-at', type=float, default=0.6,
                        help='fraction of the run after which observers and BatchNorm statistics stop')
    parser.add_argument('--include', nargs='+', choices=qat.FORMATS, default=['executorch', 'onnx'])
    parser.add_argument('--weight-bits', type=int, choices=(8, 7), default=8)
    parser.add_argument('--compare', action='store_true', help='also fp32, post-training int8 and an fp32 fine-tune')
    parser.add_argument('--calibration', type=Path, help='--compare: images that calibrate post-training int8 '
                        '(a folder; default the train split)')
    parser.add_argument('--val-images', type=int, default=0, help='score on the first N val images (0: all)')
    parser.add_argument('--reps', type=int, default=20, help='--compare: timed calls per file')
    parser.add_argument('--json', type=Path, help='write the results here')
    parser.add_argument('--yolov5', help='the YOLOv5 tree (default: the current folder)')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    for option, path in (('--weights', args.weights), ('--data', args.data)):
        if not path.is_file():
            parser.error(f'{option} {path}: no such file')
    if args.calibration and not args.calibration.is_dir():
        parser.error(f'--calibration {args.calibration}: no such folder')
    if args.img % 32:
        parser.error(f'--img {args.img}: a multiple of 32 (the largest stride)')
    if not 0 <= args.freeze_at <= 1:
        parser.error('--freeze-at: a fraction of the run, 0 to 1')
    return args


def require_formats(formats, prog):
    """Import what each format needs before any work, or exit with one line saying how to install it."""
    import importlib
    for fmt in ('torchao',) + tuple(formats):
        package, hint = FORMAT_PACKAGES.get(fmt, ('torchao', 'pip install yolov5-mnv4[qat]'))
        try:
            importlib.import_module(package)
            if fmt == 'onnx':
                importlib.import_module('onnxruntime')
        except ImportError as err:
            raise SystemExit(f'{prog}: {fmt} needs {err.name or package}, which is not installed: {hint}')


def load_host(weights, tree_option, prog):
    """The checkpoint's host: the Ultralytics package's (read from the pickle, no tree needed) or
    YOLOv5's (the tree of --yolov5 or the current folder)."""
    from ..hosts.offline import set_offline_defaults
    from ..hosts.ultralytics_qat import is_ultralytics_checkpoint
    from ..hosts.yolov5_qat import NotADetector
    set_offline_defaults()  # the user's own settings win
    import importlib
    try:
        if is_ultralytics_checkpoint(weights):
            from ..hosts.ultralytics import register as register_ultralytics
            from ..hosts.ultralytics_qat import UltralyticsQATHost
            register_ultralytics(importlib.import_module('ultralytics.nn.tasks'))
            return UltralyticsQATHost(weights)
        sys.path.insert(0, str(find_yolov5_tree(tree_option, prog)))
        from ..hosts.yolov5 import register
        from ..hosts.yolov5_qat import YOLOv5QATHost
        register(importlib.import_module('models.yolo'))  # a tree never patched loads our checkpoints too
        return YOLOv5QATHost(weights)
    except NotADetector as err:
        raise SystemExit(f'{prog}: {err}') from None


def scorer(data, imgsz, limit):
    from ..bench import evaluate, validation_set
    items = validation_set(data, limit or None)

    def score(predict):
        return evaluate(predict, items, imgsz)
    return score, len(items)


def torch_predict(model):
    import torch

    def predict(im):
        with torch.no_grad():
            return model(torch.from_numpy(im)).numpy()
    return predict


def latency_ms(predict, imgsz, reps):
    import numpy as np
    im = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(3):
        predict(im)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        predict(im)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def calibration_images(folder, data, imgsz):
    """The first 100 images of `folder`, else of the data's train split, letterboxed (NCHW)."""
    from ..bench import CALIBRATION_IMAGES, validation_set
    from ..bench import calibration_images as folder_images
    return folder_images(imgsz, folder if folder is not None else
                         [path for path, _ in validation_set(data, CALIBRATION_IMAGES, 'train')])


def main(argv=None, prog='yolov5-mnv4 qat'):
    args = parse_args(argv, prog)
    require_formats(args.include, prog)
    log = lambda line: print(f'{prog}: {line}', flush=True)  # noqa: E731
    host = load_host(args.weights.resolve(), args.yolov5, prog)
    weights, imgsz, size = args.weights.resolve(), (args.img, args.img), args.img
    score, n_val = scorer(args.data, size, args.val_images)
    schedule = qat.Schedule(epochs=args.epochs, lr=args.lr, freeze_at=args.freeze_at, batch=args.batch, steps=args.steps)
    rows = []

    def measure(route, model, stem, files=None):
        """Score `model` in PyTorch and, where `stem` is given, in every asked format written from
        `files` (default: `model` itself)."""
        row = {'route': route, 'runtime': RUNTIME['torch'], 'file': None}
        row['mAP50'], row['mAP50-95'] = score(torch_predict(model))
        results = [row]
        if stem is None:
            return results
        tag = '' if route == 'fp32' else '-int8'
        for fmt, path in qat.write(files or model, imgsz, stem, args.include, log, tag).items():
            run = qat.runner(fmt, path)
            r = {'route': route, 'runtime': RUNTIME[fmt], 'file': path.name}
            r['mAP50'], r['mAP50-95'] = score(run)
            if args.compare:
                r['latency_ms'] = latency_ms(run, size, args.reps)
            results.append(r)
        return results

    start = time.time()
    log(f'{weights.name}: {host.name} {type(host.model).__name__}, {len(host.model.model)} layers; '
        f'scoring on {n_val} val images of {args.data} at {size}')
    if args.compare:
        rows += measure('fp32', host.reference(), weights.with_name(f'{weights.stem}-fp32'), qat.float_model(host, imgsz))
        log(f'post-training int8: calibrating on {args.calibration or "the train split"}')
        ptq = qat.post_training(host, calibration_images(args.calibration, args.data, size), imgsz, args.weight_bits)
        rows += measure('PTQ int8', ptq, weights.with_name(f'{weights.stem}-ptq'))
        log('fp32 fine-tune on the same schedule')
        tuned, _ = qat.finetune(host, args.data, imgsz, schedule, quantize=False, log=log)
        rows += measure('fp32 fine-tune', host.reference(tuned), None)
    log(f'quantization-aware training: {schedule}')
    prepared, losses = qat.finetune(host, args.data, imgsz, schedule, weight_bits=args.weight_bits, log=log)
    int8 = qat.int8_model(prepared, host, imgsz)
    rows += measure('QAT int8', int8, weights.with_name(f'{weights.stem}-qat'))
    print(table(rows))
    log(f'done in {time.time() - start:.0f} s')
    if args.json:
        args.json.write_text(json.dumps({'weights': str(weights), 'data': str(args.data), 'imgsz': size,
                                         'val_images': n_val, 'schedule': vars(schedule), 'losses': losses,
                                         'weight_bits': args.weight_bits, 'rows': rows}, indent=1))
    return 0


def table(rows):
    keys = ['route', 'runtime', 'mAP50', 'mAP50-95'] + (['latency_ms'] if any('latency_ms' in r for r in rows) else [])
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    for r in rows:
        lines.append('| ' + ' | '.join(f'{r[k]:.4f}' if isinstance(r.get(k), float) and k.startswith('mAP')
                                       else f'{r[k]:.1f}' if isinstance(r.get(k), float) else str(r.get(k, ''))
                                       for k in keys) + ' |')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
