"""Quantization-aware training (PT2E) and its exports, host-free: a host (hosts/yolov5_qat.py) gives
the model, data, loss and box decoding; this module fine-tunes with fake quantization, converts
with the observers' own ranges and writes ExecuTorch (.pte), ONNX with Q/DQ (.onnx) and LiteRT
(.tflite, through litert-torch where it is installed).

The same schedule without fake quantization (`quantize=False`) is the fp32 fine-tune that a QAT
result is compared with, so that what extra training gains is not called a gain of QAT.
"""
import copy
import itertools
import math
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import pt2e

FORMATS = ('executorch', 'onnx', 'tflite')


@dataclass
class Schedule:
    epochs: int = 3
    lr: float = 1e-5  # AdamW; QAT recipes fine-tune at 1e-6 to 1e-5 (INT8.md)
    freeze_at: float = 0.6  # fraction of the run after which observers and BatchNorm statistics stop
    batch: int = 16
    weight_decay: float = 0.0
    steps: int = 0  # > 0: stop after this many optimizer steps (a smoke run)
    batches: int = 0  # > 0: an epoch is the first this many batches (a smoke run)


class Decoded(nn.Module):
    """A graph returning raw per-level outputs followed by the host's float decoding: what the exports
    run, (batch, anchors, 5 + classes)."""

    def __init__(self, graph, decoder):
        super().__init__()
        self.body, self.decoder = graph, decoder  # not `graph`: GraphModules own that name

    def forward(self, x):
        return self.decoder(self.body(x))


class Detections(nn.Module):
    """An eager detector in eval mode returning its detections: the first output of its eval forward,
    through `layout` where the host lays them out differently from YOLOv5's (batch, anchors, 5 + classes)."""

    def __init__(self, model, layout=None):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, x):
        y = self.model(x)[0]
        return self.layout(y) if self.layout else y


def letterboxed_batches(data, imgsz, batch, split='train'):
    """Batches of (images (n, 3, H, W) float in [0, 1], targets (m, 6): image index, class, x, y, w, h
    normalised to the letterboxed image) of a YOLO data YAML's split, letterboxed as export.images
    does, in file order, without augmentation: a loader for hosts whose own needs a trainer."""
    import cv2
    import numpy as np

    from ..bench import validation_set
    from .images import letterbox_geometry, letterboxed
    height, width = imgsz
    items = validation_set(data, split=split)
    batches = []
    for start in range(0, len(items), batch):
        images, targets = [], []
        for i, (path, truth) in enumerate(items[start:start + batch]):
            img = cv2.imread(str(path))
            r, top, left = letterbox_geometry(img.shape[:2], imgsz)
            images.append(letterboxed(img, imgsz))
            x1, y1, x2, y2 = (truth[:, 1] * r + left), (truth[:, 2] * r + top), (truth[:, 3] * r + left), (truth[:, 4] * r + top)
            targets.append(np.column_stack([np.full(len(truth), i), truth[:, 0], (x1 + x2) / 2 / width,
                                            (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]))
        batches.append((torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(targets)).float()))
    return batches, len(batches)


def _freeze(net, quantized):
    """Observers and BatchNorm statistics stop (a prepared graph), or BatchNorm statistics (eager)."""
    if quantized:
        pt2e.freeze(net)
    else:
        for m in pt2e.batchnorms(net):
            m.eval()


def finetune(host, data, imgsz, schedule, quantize=True, weight_bits=8, log=print):
    """Fine-tune a copy of `host.model` on the data's train split: with fake quantization (the
    prepared PT2E graph) or, with `quantize` False, the float model on the same schedule. Returns the
    trained graph (prepared) or eager model, and a list of per-epoch mean losses."""
    model = copy.deepcopy(host.model)
    loss_fn = host.loss_of(model)
    example = torch.zeros(2, 3, *imgsz)
    if quantize:
        log('preparing the fake-quantized graph (torch.export, prepare_qat_pt2e)')
        net = pt2e.prepare_qat(model, example, host.float_modules, weight_bits)
        train = lambda on: pt2e.train_mode(net, on)  # noqa: E731
    else:
        net = model
        train = net.train
    batches, per_epoch = host.loader(data, imgsz, schedule.batch)
    batches = list(itertools.islice(batches, schedule.batches or None))  # fine-tune sets are small: loaded once
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    total = schedule.steps or schedule.epochs * len(batches)
    freeze_step = math.ceil(schedule.freeze_at * total)
    losses, step, frozen = [], 0, False
    for epoch in range(math.ceil(total / len(batches))):
        train(True)  # on a graph this also sets every BatchNorm back to batch statistics
        if frozen:
            _freeze(net, quantize)
        running = []
        for images, targets in batches:
            if step >= total:
                break
            if step == freeze_step and not frozen:
                frozen = True
                _freeze(net, quantize)
            loss = loss_fn(net(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running.append(loss.item())
            step += 1
            _progress(log, epoch, step, total, running, frozen)
        losses.append(sum(running) / max(len(running), 1))
    if not quantize:
        net.eval()
    return net, losses


def _progress(log, epoch, step, total, running, frozen):
    if sys.stderr.isatty():
        print(f'\r  epoch {epoch + 1} step {step}/{total} loss {running[-1]:.4f}' + (' (frozen)' if frozen else ''),
              end='' if step < total else '\n', file=sys.stderr, flush=True)
    elif step == total or step % 10 == 0:
        log(f'  step {step}/{total}: loss {sum(running) / len(running):.4f}' + (' (observers and BatchNorm frozen)' if frozen else ''))


def post_training(host, images, imgsz, weight_bits=8):
    """The PTQ int8 graph of host.model (the same quantizer, calibrated on `images`), float decoding
    after it: what a QAT result is compared with."""
    model = copy.deepcopy(host.model)
    pt2e.match_batchnorm_eps(model)
    model.eval()
    program = torch.export.export(RawOutputs(model), (torch.zeros(1, 3, *imgsz),))
    return _decoded(pt2e.calibrate(program, images, _prefixed(host.float_modules), weight_bits), host, imgsz)


def _decoded(prepared, host, imgsz):
    """The converted int8 graph of `prepared` with the host's float decoding; `.unfolded()` builds the
    same with float weights before their quantize ops, which LiteRT's converter takes."""
    model = Decoded(pt2e.convert(prepared), host.decoder(imgsz)).eval()
    model.unfolded = lambda: Decoded(pt2e.convert(prepared, fold=False), host.decoder(imgsz)).eval()
    return model


def _prefixed(names):
    return tuple(f'model.{n}' for n in names)


class RawOutputs(nn.Module):
    """A detector returning its raw per-level outputs (a YOLO Detect's training branch), whatever its mode."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        detect = self.model.model[-1]
        mode, detect.training = detect.training, True
        try:
            return self.model(x)
        finally:
            detect.training = mode


def int8_model(prepared, host, imgsz):
    """The converted int8 graph (the QAT observers' ranges) with the host's float decoding after it."""
    return _decoded(prepared, host, imgsz)


def float_model(host, imgsz):
    """The host's fp32 model as the int8 routes are built (raw outputs, then the float decoding), for
    fp32 files beside the int8 ones."""
    return Decoded(RawOutputs(copy.deepcopy(host.model)).eval(), host.decoder(imgsz)).eval()


def write(model, imgsz, stem, formats, log=print, tag='-int8'):
    """Write each of `formats` for `model` (a Decoded module: int8, or fp32 with `tag` '') as
    `{stem}{tag}.pte/.onnx/.tflite`; returns {format: path}."""
    from pathlib import Path
    im = torch.zeros(1, 3, *imgsz)
    written = {}
    for fmt in formats:
        path = Path(f'{stem}{tag}{SUFFIX[fmt]}')
        log(f'writing {path.name}')
        if fmt == 'executorch':
            from .executorch import export_executorch
            export_executorch(model, im, path)
        elif fmt == 'onnx':
            onnx_qdq(model, im, path)
        else:
            litert(model.unfolded() if hasattr(model, 'unfolded') else model, im, path)
        written[fmt] = path
    return written


SUFFIX = {'executorch': '.pte', 'onnx': '.onnx', 'tflite': '.tflite'}


def onnx_qdq(model, im, path):
    """ONNX (for int8: QuantizeLinear/DequantizeLinear pairs; the dynamo exporter, since the
    TorchScript one does not take PT2E graphs), input 'images', output 'output0' as export.py names them."""
    with torch.no_grad():
        torch.onnx.export(model, (im,), str(path), dynamo=True, input_names=['images'], output_names=['output0'],
                          verbose=False)
    return path


def litert(model, im, path):
    """LiteRT through litert-torch. A quantized model's quantize/dequantize pairs (weights unfolded)
    become int8 tensors with the ranges they carry; litert-torch's own quantizer is named only
    because its converter asks for a static-int8 config, and quantizes nothing again."""
    try:
        import litert_torch
    except ImportError as err:
        raise RuntimeError(f'LiteRT export needs litert-torch ({err}): scripts/litert_torch_env.sh installs it; '
                           'put its folder on PYTHONPATH') from None
    quantized = any('quantize_per' in str(n.target) for m in model.modules() if isinstance(m, torch.fx.GraphModule)
                    for n in m.graph.nodes)
    options = {}
    if quantized:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        options['quant_config'] = QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)))
    litert_torch.convert(model, (im,), **options).export(str(path))
    return path


def runner(fmt, path, threads=2):
    """A function image (NCHW float32 numpy) -> detections (numpy) of a written file."""
    if fmt == 'executorch':
        from .executorch import ExecuTorchModel
        return ExecuTorchModel(path, threads)
    if fmt == 'onnx':
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    from .tflite import TFLiteModel
    return TFLiteModel(path)
