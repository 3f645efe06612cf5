"""Exports that YOLOv5's export.py does not make, for MNv4 and stock YOLOv5 checkpoints alike:

    yolov5-mnv4-export --weights best.pt --include tflite --int8 --data data.yaml --img 320
    yolov5-mnv4-export --weights best.pt --include tflite --img 320          # plain fp32 .tflite
    yolov5-mnv4-export --weights best.pt --include ncnn mnn executorch --img 320 [--half]

Run it inside the YOLOv5 checkout (or pass --yolov5). `--int8` writes `best-int8.tflite` beside the
weights, the name and the uint8 input/output of `export.py --int8`, so the stock `detect.py` and
`val.py` run it; unlike export.py's full-integer model, the attention's BATCH_MATMUL, SOFTMAX and
GELU stay in float (`tflite_int8.FLOAT_OPS`; for models without attention the two are the same),
and with `--float-blocks` every op of the attention blocks does.
Calibration takes the first 100 images of the data's train split, letterboxed as export.py does.
Every export then runs on one real and one random image against the fp32 Keras model, and prints
the signal-to-noise ratio of each output level, the op types left in float and XNNPACK's partitions.

`ncnn`, `mnn` and `executorch` (module `runtimes`) write `best_ncnn_model/`, `best.mnn` and
`best.pte` beside the weights (fp32; `--half`: fp16 weights in NCNN and MNN) and check each against
the fused PyTorch model on a real and a random image: the largest box error against the largest box
coordinate, and the largest score error.
"""
import argparse
import sys
from pathlib import Path

from . import __version__
from . import runtimes
from .convert import find_yolov5_tree

PROG = 'yolov5-mnv4-export'
CALIBRATION_IMAGES = 100
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


def keras_detector(model, imgsz):
    """YOLOv5's Keras copy of `model` (models/tf.py's TFModel, as export.py builds it), batch 1, NHWC."""
    from .edge import import_tensorflow
    tf = import_tensorflow()
    from models.tf import TFModel
    model.requires_grad_(False)  # models/tf.py reads weights with .numpy()
    tf_model = TFModel(cfg=model.yaml, model=model, nc=model.model[-1].nc, imgsz=imgsz)
    inputs = tf.keras.Input(shape=(*imgsz, 3), batch_size=1)
    keras_model = tf.keras.Model(inputs=inputs, outputs=tf_model.predict(inputs))
    keras_model.trainable = False
    return keras_model


def calibration_images(data, imgsz, n=CALIBRATION_IMAGES):
    """The data's train images as export.py --int8 feeds them (letterboxed, RGB, NHWC, in [0, 1])."""
    import numpy as np
    from utils.dataloaders import LoadImages
    from utils.general import check_dataset
    images = []
    for _, im, *_ in LoadImages(check_dataset(str(data))['train'], img_size=imgsz, auto=False):
        images.append(np.ascontiguousarray(im.transpose(1, 2, 0))[None].astype(np.float32) / 255)
        if len(images) == n:
            break
    print(f'{PROG}: calibrating on {len(images)} images of {data}', flush=True)
    return images


def parity_report(path, keras_model, images, strides, anchors):
    """Lines: per output level, signal-to-noise of the .tflite against the fp32 Keras model."""
    from .edge import TFLiteModel, level_snr_db
    from .tflite_int8 import op_types, xnnpack_partitions
    model = TFLiteModel(path)
    lines = []
    for name, im in images.items():
        ref, got = keras_model(im).numpy(), model(im)
        snr = level_snr_db(got, ref, strides, anchors, im.shape[1:3])
        lines.append(f'{name} image: signal-to-noise per level (P{"/P".join(str(s.bit_length() - 1) for s in strides)}) '
                     + ' / '.join(f'{db:.1f}' for db in snr) + ' dB against the fp32 Keras model')
    floats = {op: kinds['float32'] for op, kinds in op_types(model.interpreter).items()
              if 'float32' in kinds and op not in ('QUANTIZE', 'DEQUANTIZE')}
    partitions, outside = xnnpack_partitions(model.interpreter)
    lines.append(f'ops in float: {", ".join(f"{op} {n}" for op, n in sorted(floats.items())) or "none"}; '
                 f'XNNPACK: {partitions} partitions, outside them: '
                 f'{", ".join(f"{op} {n}" for op, n in sorted(outside.items())) or "nothing"}')
    return lines


def export_tflite(model, weights, imgsz, int8, data, float_blocks=False):
    import numpy as np

    from .edge import import_tensorflow
    from .tflite_int8 import ATTENTION_NODES, int8_tflite
    tf = import_tensorflow()
    keras_model = keras_detector(model, imgsz)
    if int8:
        calibration = calibration_images(data, imgsz)
        print(f'{PROG}: quantizing (convs int8; ' + ('attention blocks' if float_blocks else 'attention matmuls and softmax')
              + ' in float where the model has them)', flush=True)
        content = int8_tflite(tf.lite.TFLiteConverter.from_keras_model(keras_model), calibration,
                              float_nodes=ATTENTION_NODES if float_blocks else ())
        out = weights.with_name(f'{weights.stem}-int8.tflite')
        real = calibration[0]
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        content, out, real = converter.convert(), weights.with_name(f'{weights.stem}-fp32.tflite'), None
    out.write_bytes(content)
    print(f'{PROG}: wrote {out} ({len(content) / 1e6:.1f} MB)')
    images = {'random': np.random.default_rng(0).random((1, *imgsz, 3), dtype=np.float32)}
    if real is not None:
        images = {'real': real, **images}
    detect = model.model[-1]
    for line in parity_report(out, keras_model, images, [int(s) for s in detect.stride], detect.na):
        print(f'{PROG}: {line}')
    return out


def export_runtime(model, weights, imgsz, fmt, half=False):
    """Write `fmt` (ncnn, mnn, executorch) beside the weights and print its parity lines."""
    import torch
    net = detection_output(model).eval()
    im = torch.zeros(1, 3, *imgsz)
    stem = weights.with_suffix('')
    print(f'{PROG}: {fmt}{" (fp16 weights)" if half else ""} export of {weights.name} at {imgsz[0]}x{imgsz[1]}', flush=True)
    if fmt == 'ncnn':
        out, notes = runtimes.export_ncnn(net, im, stem.with_name(f'{stem.name}_ncnn_model'), half), []
    elif fmt == 'mnn':
        out, notes = runtimes.export_mnn(net, im, stem.with_suffix('.mnn'), half), []
    else:
        out, outside = runtimes.export_executorch(net, im, stem.with_suffix('.pte'))
        notes = [f'ops outside the XNNPACK delegate: {", ".join(f"{op} {n}" for op, n in sorted(outside.items())) or "none"}']
    print(f'{PROG}: wrote {out}')
    for line in runtime_parity(net, runtimes.load(fmt, out), imgsz) + notes:
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


def detection_errors(got, ref):
    """(largest box error / largest box coordinate, largest score error) of YOLOv5 outputs."""
    import numpy as np
    got, ref = np.asarray(got, np.float64).reshape(ref.shape), np.asarray(ref, np.float64)
    boxes = float(np.abs(got[..., :4] - ref[..., :4]).max() / np.abs(ref[..., :4]).max())
    return boxes, float(np.abs(got[..., 4:] - ref[..., 4:]).max())


def parity_images(imgsz):
    """{'real': an embedded COCO image letterboxed to imgsz, 'random': uniform noise}, NCHW in [0, 1]."""
    import numpy as np
    from utils.dataloaders import LoadImages

    from .resources import embedded_dataset
    first = sorted((embedded_dataset() / 'images' / 'val2017').glob('*.jpg'))[0]
    _, im, *_ = next(iter(LoadImages(str(first), img_size=imgsz, auto=False)))
    return {'real': im[None].astype(np.float32) / 255,
            'random': np.random.default_rng(0).random((1, 3, *imgsz), dtype=np.float32)}


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
    parser.add_argument('--int8', action='store_true', help='int8 with float attention, calibrated on --data')
    parser.add_argument('--data', type=Path, help='dataset yaml whose train images calibrate --int8')
    parser.add_argument('--float-blocks', action='store_true',
                        help='--int8: keep whole attention blocks (their convs too) in float, for precision')
    parser.add_argument('--half', action='store_true', help='ncnn, mnn: fp16 weights (computation as the runtime picks)')
    parser.add_argument('--yolov5', help='the YOLOv5 tree (default: the current folder)')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        parser.error(f'--weights {args.weights}: no such file')
    others = [fmt for fmt in args.include if fmt != 'tflite']
    if args.int8 and others:
        parser.error(f'--int8 is built for tflite only so far, not for {" ".join(others)}')
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
                from .edge import import_tensorflow
                import_tensorflow()
            except ImportError as err:
                raise SystemExit(f'{prog}: TFLite export needs TensorFlow ({err}): pip install "yolov5-mnv4[tflite]"')
        else:
            try:
                runtimes.require(fmt)
            except runtimes.MissingRuntime as err:
                raise SystemExit(f'{prog}: {err}')


def main(argv=None, prog=PROG):
    args = parse_args(argv, prog)
    tree = find_yolov5_tree(args.yolov5, prog)
    require_formats(args.include, prog)
    from .offline import set_offline_defaults
    set_offline_defaults()  # the user's own settings win
    sys.path.insert(0, str(tree))
    weights = args.weights.resolve()
    data = args.data.resolve() if args.data else None
    model = load_detector(weights)
    for fmt in args.include:
        if fmt == 'tflite':
            export_tflite(model, weights, args.img, args.int8, data, args.float_blocks)
        else:
            export_runtime(model, weights, args.img, fmt, args.half)
    return 0


if __name__ == '__main__':
    sys.exit(main())
