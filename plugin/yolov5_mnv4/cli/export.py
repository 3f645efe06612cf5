"""Exports that YOLOv5's export.py does not make, for MNv4 and stock YOLOv5 checkpoints alike:

    yolov5-mnv4-export --weights best.pt --include tflite --int8 --data data.yaml --img 320
    yolov5-mnv4-export --weights best.pt --include tflite --img 320          # plain fp32 .tflite
    yolov5-mnv4-export --weights best.pt --include ncnn mnn executorch --img 320 [--half]

Run it inside the YOLOv5 checkout (or pass --yolov5). `--int8` writes `best-int8.tflite` beside the
weights, the name and the uint8 input/output of `export.py --int8`, so the stock `detect.py` and
`val.py` run it; unlike export.py's full-integer model, the Detect (its output convs and box
decoding: quantized, TensorFlow 2.21 loses every box's size, see `tflite_int8`) and the attention's
BATCH_MATMUL, SOFTMAX and GELU stay in float (`tflite_int8.FLOAT_OPS`), and with `--float-blocks`
every op of the attention blocks does.
Calibration takes the first 100 images of the data's train split, letterboxed as export.py does.
Every export then runs on one real and one random image against the fp32 Keras model, and prints
the signal-to-noise ratio of each output level, the op types left in float and XNNPACK's partitions.

`ncnn`, `mnn` and `executorch` (module `runtimes`) write `best_ncnn_model/`, `best.mnn` and
`best.pte` beside the weights (fp32; `--half`: fp16 weights in NCNN and MNN) and check each against
the fused PyTorch model on a real and a random image: the largest box error against the largest box
coordinate, and the largest score error. With `--int8 --data data.yaml`, MNN and ExecuTorch write
`best-int8.mnn` and `best-int8.pte` (calibrated as above; the Detect's decoding stays float in
ExecuTorch) and print, on the data's first 32 val images against the fused fp32 model, the scores'
signal-to-noise per output level and how many fp32 detections the int8 model finds (module
`parity`). NCNN's int8 tools are C++ only (see --int8's error).
"""
import argparse
import sys
from pathlib import Path

from .. import __version__
from ..export import runtimes
from ..export.parity import detection_errors
from ..hosts.yolov5 import keras_detector
from ..resources import install_hint
from .convert import find_yolov5_tree

PROG = 'yolov5-mnv4-export'
CALIBRATION_IMAGES = 100
INT8_PARITY_IMAGES = 32  # val images of --data on which int8 exports are compared with fp32
INT8_WARN_RECALL = 0.5  # an int8 export finding fewer of the fp32 detections than this is called unfit...
INT8_WARN_BOXES = 20  # ...where the fp32 model finds at least this many boxes (a model that detects)
FORMATS = ('tflite',) + runtimes.FORMATS


def load_detector(weights):
    """The fused, float, eval-mode model of a YOLOv5 checkpoint (models.yolo must be importable)."""
    from models.experimental import attempt_load
    model = attempt_load(str(weights), device='cpu', fuse=True).float().eval().requires_grad_(False)
    detect = model.model[-1]
    if type(detect).__name__ != 'Detect':
        raise SystemExit(f'{PROG}: {weights} holds a {type(detect).__name__} head; only detection models '
                         f'(Detect) are exported to TFLite here')
    return model


def dataset_images(data, split, imgsz, n):
    """The first `n` images of the data's `split` as YOLOv5 feeds them: letterboxed, RGB, NCHW, in [0, 1]
    (export.images: the pixels of export.py's LoadImages)."""
    from utils.general import check_dataset

    from ..export.images import letterboxed_images
    return letterboxed_images(check_dataset(str(data))[split], imgsz, n)


def calibration_images(data, imgsz, n=CALIBRATION_IMAGES, layout='NHWC'):
    """The data's train images as export.py --int8 feeds them (letterboxed, RGB, in [0, 1]); NHWC for
    TFLite, NCHW for the PyTorch-side exports."""
    import numpy as np
    images = dataset_images(data, 'train', imgsz, n)
    if layout == 'NHWC':
        images = [np.ascontiguousarray(im.transpose(0, 2, 3, 1)) for im in images]
    print(f'{PROG}: calibrating on {len(images)} images of {data}', flush=True)
    return images


def parity_report(path, keras_model, images, strides, anchors):
    """Lines: per output level, signal-to-noise of the .tflite against the fp32 Keras model."""
    from ..export.tflite import TFLiteModel, level_snr_db
    from ..export.tflite_int8 import DETECT_NODES, op_types, xnnpack_partitions
    model = TFLiteModel(path)
    lines = []
    for name, im in images.items():
        ref, got = keras_model(im).numpy(), model(im)
        snr = level_snr_db(got, ref, strides, anchors, im.shape[1:3])
        lines.append(f'{name} image: signal-to-noise per level (P{"/P".join(str(s.bit_length() - 1) for s in strides)}) '
                     + ' / '.join(f'{db:.1f}' for db in snr) + ' dB against the fp32 Keras model')
    floats = {op: kinds['float32'] for op, kinds in op_types(model.interpreter, skip=DETECT_NODES).items()
              if 'float32' in kinds and op not in ('QUANTIZE', 'DEQUANTIZE')}
    partitions, outside = xnnpack_partitions(model.interpreter)
    listed = ", ".join(f"{op} {n}" for op, n in sorted(floats.items())) or "none"
    lines.append(f'ops in float besides the Detect: {listed}; '
                 f'XNNPACK: {partitions} partitions, outside them: '
                 f'{", ".join(f"{op} {n}" for op, n in sorted(outside.items())) or "nothing"}')
    return lines


def export_tflite(model, weights, imgsz, int8, data, float_blocks=False):
    import numpy as np

    from ..export.tflite import builtin_tflite, import_tensorflow
    from ..export.tflite_int8 import ATTENTION_NODES, DETECT_NODES, int8_tflite
    tf = import_tensorflow()
    keras_model = keras_detector(model, imgsz)  # YOLOv5's models/tf.py, from the checkout on sys.path
    if int8:
        calibration = calibration_images(data, imgsz)
        print(f'{PROG}: quantizing (convs int8; the Detect, and the ' + ('attention blocks' if float_blocks else
              'attention matmuls and softmax') + ' where the model has them, in float)', flush=True)
        content = int8_tflite(tf.lite.TFLiteConverter.from_keras_model(keras_model), calibration,
                              float_nodes=DETECT_NODES + (ATTENTION_NODES if float_blocks else ()))
        out = weights.with_name(f'{weights.stem}-int8.tflite')
        real = calibration[0]
    else:
        content = builtin_tflite(tf.lite.TFLiteConverter.from_keras_model(keras_model))
        out, real = weights.with_name(f'{weights.stem}-fp32.tflite'), None
    out.write_bytes(content)
    print(f'{PROG}: wrote {out} ({len(content) / 1e6:.1f} MB)')
    images = {'random': np.random.default_rng(0).random((1, *imgsz, 3), dtype=np.float32)}
    if real is not None:
        images = {'real': real, **images}
    detect = model.model[-1]
    for line in parity_report(out, keras_model, images, [int(s) for s in detect.stride], detect.na):
        print(f'{PROG}: {line}')
    return out


def export_runtime(model, weights, imgsz, fmt, half=False, data=None, calibration=None):
    """Write `fmt` (ncnn, mnn, executorch) beside the weights and print its parity lines; with `data`,
    int8 (mnn, executorch) calibrated on `calibration` (NCHW) and checked on its val images."""
    import torch
    net = detection_output(model).eval()
    im = torch.zeros(1, 3, *imgsz)
    with torch.no_grad():
        net(im)  # Detect caches its grids: they are exported as constants, as export.py's dry run does
    stem = weights.with_suffix('')
    kind = ' (int8)' if data else ' (fp16 weights)' if half else ''
    print(f'{PROG}: {fmt}{kind} export of {weights.name} at {imgsz[0]}x{imgsz[1]}', flush=True)
    int8 = '-int8' if data else ''
    if fmt == 'ncnn':
        out, notes = runtimes.export_ncnn(net, im, stem.with_name(f'{stem.name}_ncnn_model'), half), []
    elif fmt == 'mnn':
        out, notes = runtimes.export_mnn(net, im, stem.with_name(f'{stem.name}{int8}.mnn'), half, calibration), []
    else:
        # the Detect's own ops (sigmoid, grid and anchor arithmetic, the concatenation of boxes in
        # pixels with scores in [0, 1]) stay float: one int8 scale for both leaves the scores noise
        out, outside = runtimes.export_executorch(net, im, stem.with_name(f'{stem.name}{int8}.pte'), calibration,
                                                  float_modules=(f'model.model.{len(model.model) - 1}',))
        notes = [f'ops outside the XNNPACK delegate: {", ".join(f"{op} {n}" for op, n in sorted(outside.items())) or "none"}']
    print(f'{PROG}: wrote {out}')
    runner = runtimes.load(fmt, out)
    lines = int8_parity(net, runner, model.model[-1], data, imgsz) if data else runtime_parity(net, runner, imgsz)
    for line in lines + notes:
        print(f'{PROG}: {fmt}: {line}')
    return out


def detection_output(model):
    """`model` returning its detections alone, (1, anchors, 5 + classes), as export.py's Detect.export."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)[0]

    return Wrapped()


def parity_images(imgsz):
    """{'real': an embedded COCO image letterboxed to imgsz, 'random': uniform noise}, NCHW in [0, 1]."""
    import numpy as np

    from ..export.images import letterboxed_images
    from ..resources import embedded_dataset
    return {'real': letterboxed_images(embedded_dataset() / 'images' / 'val2017', imgsz, 1)[0],
            'random': np.random.default_rng(0).random((1, 3, *imgsz), dtype=np.float32)}


def int8_parity(net, runner, detect, data, imgsz, n=INT8_PARITY_IMAGES):
    """One line: the int8 export against the fused fp32 PyTorch model on the data's first val images."""
    import torch

    from ..export.parity import int8_report
    images = dataset_images(data, 'val', imgsz, n)
    with torch.no_grad():
        refs = [net(torch.from_numpy(im)).numpy()[0] for im in images]
    outputs = [runner(im) for im in images]
    _, recall, _, ref_boxes, line = int8_report(outputs, refs, detect.stride, detect.na, imgsz)
    lines = [f'{len(images)} val images: {line} against the fused fp32 PyTorch model']
    if ref_boxes >= INT8_WARN_BOXES and recall < INT8_WARN_RECALL:
        lines.append(f'WARNING: the int8 model finds {recall:.0%} of the fp32 model\'s detections on these images: '
                     'it is not fit to deploy as it is (MNN int8 loses them on some models: docs/export.md, '
                     '"int8 accuracy on a model that detects"; ExecuTorch int8 or `yolov5-mnv4 qat` keep them)')
    return lines


def runtime_parity(net, runner, imgsz):
    """One line per image: the exported model against the fused PyTorch model."""
    import torch
    lines = []
    for name, im in parity_images(imgsz).items():
        with torch.no_grad():
            ref = net(torch.from_numpy(im)).numpy()
        boxes, scores = detection_errors(runner(im), ref)
        lines.append(f'{name} image: max box error {boxes:.1e} of the largest coordinate, max score error '
                     f'{scores:.1e} against the fused PyTorch model')
    return lines


def parse_args(argv, prog):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('--weights', type=Path, required=True, help='a YOLOv5 detection checkpoint (best.pt)')
    parser.add_argument('--include', nargs='+', choices=FORMATS, default=['tflite'], help='formats to write')
    parser.add_argument('--img', '--imgsz', type=int, nargs='+', default=[640], help='image size (h, w or one)')
    parser.add_argument('--int8', action='store_true', help='int8 (tflite: with float attention; mnn, executorch), calibrated on --data')
    parser.add_argument('--data', type=Path, help='dataset yaml whose train images calibrate --int8')
    parser.add_argument('--float-blocks', action='store_true',
                        help='--int8: keep whole attention blocks (their convs too) in float, for precision')
    parser.add_argument('--half', action='store_true', help='ncnn, mnn: fp16 weights (computation as the runtime picks)')
    parser.add_argument('--yolov5', help='the YOLOv5 tree (default: the current folder)')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        parser.error(f'--weights {args.weights}: no such file')
    if args.int8 and 'ncnn' in args.include:
        parser.error('--int8 is not offered for ncnn: NCNN quantizes with its C++ tools ncnn2table and ncnn2int8, '
                     'which come with an NCNN build from source, not with the pnnx or ncnn packages on PyPI '
                     '(export fp32 here, then run those tools on best_ncnn_model/)')
    if args.int8 and args.half:
        parser.error('--int8 and --half exclude each other')
    if args.half and args.include == ['tflite']:
        parser.error('--half is for ncnn and mnn (TFLite fp16 comes from the stock export.py --include tflite --half)')
    if args.int8 and not args.data:
        parser.error('--int8 calibrates on images: pass --data data.yaml (its train split is used)')
    if args.data and not args.data.is_file():
        parser.error(f'--data {args.data}: no such file')
    if len(args.img) > 2:
        parser.error('--img takes one size or two (height width)')
    args.img = tuple(args.img * 2 if len(args.img) == 1 else args.img)
    if any(s % 32 for s in args.img):
        parser.error(f'--img {args.img}: sizes must be multiples of 32 (the largest stride)')
    return args


def require_formats(formats, prog):
    """Import what each format needs before any work, or exit with one line naming the extra."""
    for fmt in formats:
        if fmt == 'tflite':
            try:
                from ..export.tflite import import_tensorflow
                import_tensorflow()
            except ImportError as err:
                raise SystemExit(f'{prog}: TFLite export needs TensorFlow ({err}): {install_hint("tflite")}')
        else:
            try:
                runtimes.require(fmt)
            except runtimes.MissingRuntime as err:
                raise SystemExit(f'{prog}: {err}')


def main(argv=None, prog=PROG):
    args = parse_args(argv, prog)
    tree = find_yolov5_tree(args.yolov5, prog)
    require_formats(args.include, prog)
    from ..hosts.offline import set_offline_defaults
    set_offline_defaults()  # the user's own settings win
    sys.path.insert(0, str(tree))
    weights = args.weights.resolve()
    data = args.data.resolve() if args.data else None
    model = load_detector(weights)
    runtime_int8 = args.int8 and any(fmt in runtimes.FORMATS for fmt in args.include)
    calibration = calibration_images(data, args.img, layout='NCHW') if runtime_int8 else None
    for fmt in args.include:
        if fmt == 'tflite':
            export_tflite(model, weights, args.img, args.int8, data, args.float_blocks)
        else:
            export_runtime(model, weights, args.img, fmt, args.half, data if args.int8 else None, calibration)
    return 0


if __name__ == '__main__':
    sys.exit(main())
