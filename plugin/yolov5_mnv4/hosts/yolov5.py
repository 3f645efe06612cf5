"""The one module that patches YOLOv5 at run time.

`register(models_yolo)` is called by the hook that `yolov5-mnv4-apply` adds to a checkout's
`models/yolo.py`; for the PyPI `yolov5` package, when `yolov5.models.yolo` is imported after
`import yolov5_mnv4`; and, on a tree that was never patched, when a checkpoint holding our stages
is unpickled (`MobileNetV4Stage.__setstate__`), so that torch.hub and the stock loaders fuse it.
It does five things and copies no YOLOv5 code:

1. wraps `parse_model` so that a backbone row such as `[-1, 1, MobileNetV4ConvSmall, []]` is
   expanded, before YOLOv5 parses it, into five `MobileNetV4Stage` layers (stem, /4, /8, /16, /32).
   The row therefore takes five layer indices, the numbering the blog's YAML uses; every stage takes
   and returns one tensor, so `_forward_once`, `--freeze`, `--visualize` and profiling work unchanged.
   Misspelled MobileNetV4 rows and a backbone row that is not first are refused there, up front, and
   the 1x1 and depthwise conv weights of a model with our stages get channels-last strides, which
   leave their memory as it is (see `weights_strided_like_activations`);
2. makes `MobileNetV4Stage` resolvable by name in `parse_model` and gives it YOLOv5's channel
   bookkeeping, within each wrapped `parse_model` call only (see `_RidesConvBranch`);
3. wraps `BaseModel.fuse` so that `model.fuse()` also folds the norms of our blocks (BatchNorm or
   SyncBatchNorm), then runs YOLOv5's own fuse on contiguous weights and under no_grad;
4. wraps `initialize_weights`, which DetectionModel calls after its stride-probing forward pass (in
   train mode, so it moves BatchNorm statistics) and which sets every BatchNorm to eps 1e-3 and
   momentum 0.03: pretrained stages are reloaded there, keeping the eps their weights were trained
   with (momentum stays YOLOv5's 0.03 for fine-tuning), logging one line per backbone, and then dropping
   the weights' source from the model's yaml, which checkpoints keep: a `best.pt` rebuilt by
   `train.py --weights best.pt` or `--resume` takes its weights from itself, not from the timm file;
5. registers the Keras copies of our stages into YOLOv5's `models/tf.py` when that is imported
   (`register_tf`), so that export.py's TensorFlow formats (SavedModel, GraphDef, TFLite, TF.js,
   EdgeTPU) build MNv4 detectors.

Other modules know YOLOv5's formats without patching anything, each for one reason:
- `hosts/yolov5_tree.py` writes the hook text into `models/yolo.py` (it must know where a v7.0 or
  master file can take it: before the `__main__` guard, with `LOGGER` and `sys` in scope) and the
  configs into `models/mnv4/`, where `--cfg <name>` finds them, and tells a checkout from other folders;
- `hosts/yolov5_keras.py` implements the layer contract of `models/tf.py` (`TF<Name>(*args, w=torch_layer)`,
  NHWC tensors), since export.py builds its Keras model from those layers;
- `cli/convert.py` writes YOLOv5's checkpoint layout (`{'model', 'ema', 'epoch', 'optimizer', ...}`),
  which `train.py --weights` and `classify/train.py --model` read;
- `export/tflite.py` reads the output layout of YOLOv5's TF Detect (cell-major, xywh over the image
  size), to compare exported models with PyTorch's;
- `cli/export.py` (the yolov5-mnv4-export command) loads checkpoints with YOLOv5's `attempt_load`,
  builds the Keras model with models/tf.py's `TFModel` and reads calibration images with YOLOv5's
  `LoadImages`, as export.py does, to write the exports export.py does not make;
- `cli/demo.py` runs the stock scripts with their command-line options.
"""
import contextlib
import functools
import sys
from pathlib import Path

import torch
import torch.nn as nn

from ..model import fuse_blocks
from .import_hook import register_if_loaded, register_on_import
from .registration import host_logger, is_registered, mark, require_names
from .rows import STAGE_MODULE, expand_stage_rows
from .stage import BackboneStage, load_pretrained_backbones
from .yolov5_tree import numpy_conflict

YOLOV5_BN_EPS = 1e-3  # what YOLOv5's initialize_weights gives every BatchNorm


def write_checkpoint(model, path, half=True, **extra):
    """A checkpoint in train.py's layout, as far as YOLOv5's loaders (`attempt_load`,
    DetectMultiBackend, torch.hub), `train.py --weights` and `classify/train.py --model` read it: the
    model (fp16 as train.py saves it, unless `half` is False) under 'model', no EMA or optimizer, epoch
    -1 (a finished run), and `extra` keys. The one checkpoint writer of the plugin, its tests and
    benchmarks."""
    import datetime
    torch.save({'model': model.half() if half else model, 'ema': None, 'epoch': -1, 'optimizer': None,
                'best_fitness': None, 'date': datetime.datetime.now().isoformat(), **extra}, path)
    return path


class _RidesConvBranch(type):
    """parse_model learns a layer's output width only for its known modules (Conv, C3, ...), found
    with `m in {Conv, ...}`. While one of our wrapped parse_model calls runs (`_riding_conv`), classes
    of this metaclass hash and compare equal to that tree's `Conv`, so parse_model calls them as
    `(c1, c2, *args)` and records c2 (riding the Conv branch: docs/design.md).
    Outside those calls they are ordinary classes: nothing else (dict lookups, `in` lists elsewhere in
    YOLOv5, thop, a second YOLOv5 tree in the same process) ever sees them equal to a `Conv`.
    """
    conv = None

    def __eq__(cls, other):
        return (other is not None and other is _RidesConvBranch.conv) or type.__eq__(cls, other)

    def __hash__(cls):
        return hash(_RidesConvBranch.conv) if _RidesConvBranch.conv is not None else type.__hash__(cls)


@contextlib.contextmanager
def _riding_conv(conv):
    """Within this block our stage classes equal `conv` (the calling tree's Conv); nests, restores."""
    previous, _RidesConvBranch.conv = _RidesConvBranch.conv, conv
    try:
        yield
    finally:
        _RidesConvBranch.conv = previous


class MobileNetV4Stage(BackboneStage, metaclass=_RidesConvBranch):
    """One MobileNetV4 stage as a YOLOv5 layer: (c1, c2) from parse_model, then the spec's blocks."""

    def __setstate__(self, state):
        """Unpickling a stage (torch.load of a checkpoint) registers the plugin into the YOLOv5 that is
        loading it, patched or not (a torch.hub clone, a tree yolov5-mnv4-apply never touched), so that
        the `model.fuse()` its loaders call next folds our blocks too."""
        super().__setstate__(state)
        register_loaded_hosts()



def weights_strided_like_activations(layers):
    """Our stages hand channels-last activations to every later layer (`to_channels_last`), so conv
    weight gradients come out with channels-last strides. For a 1x1 or a depthwise kernel those
    strides describe the same memory order as the default ones (they differ only on dimensions of
    size 1), so autograd keeps them, and DDP, which compares strides literally, then warns "Grad
    strides do not match bucket view strides" and copies the gradient. Such weights get the
    channels-last strides here: their memory, and so everything YOLOv5 does with them (its
    fuse_conv_and_bn `.view()`s them), is unchanged. Every other weight keeps the default layout,
    so a checkpoint holds only weights that any YOLOv5 tree can fuse, patched or not; their
    channels-last gradients do not match their layout and autograd lays them out like the weight
    before DDP sees them. Returns `layers`."""
    with torch.no_grad():
        for p in layers.parameters():
            if p.ndim == 4:
                strided = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
                if strided.is_contiguous():  # the same memory order as the default layout
                    p.data = strided
    return layers


def _conv_branch_arg(c_out, width_multiple, divisor):
    """The args[0] that parse_model turns into exactly `c_out` (it scales by width_multiple and rounds
    up to a multiple of `divisor`). Aim inside the rounding interval, off the integers, so neither
    float error nor parse_model's unscaled `c2 == no` case can change the result."""
    return (c_out - divisor / 2 + 0.25) / width_multiple


def expand_backbone_rows(d, keep_weights=True):
    """A copy of the model dict with every MobileNetV4 backbone row replaced by its five stage rows.

    `keep_weights=False` drops a row's pretrained source (for models/tf.py, whose layers copy their
    weights from the PyTorch model, so the source is neither needed nor read)."""
    divisor = d.get('channel_multiple') or 8

    def stage_row(variant, index, c_out, weights):
        quoted = [repr(weights)] if weights and keep_weights else []  # parse_model eval()s string args
        return STAGE_MODULE, [_conv_branch_arg(c_out, d['width_multiple'], divisor), repr(variant.name), index,
                              *quoted]

    return expand_stage_rows(d, stage_row)


HOST_MODULES = ('models.yolo', 'yolov5.models.yolo')  # a checkout (or the PyPI-built tree), the PyPI package
HOST_NAMES = ('parse_model', 'BaseModel', 'DetectionModel', 'Conv', 'initialize_weights')


def register_loaded_hosts():
    """Register into every YOLOv5 `models.yolo` already imported (and done importing) in this process.
    A module of that name that is not YOLOv5's (it lacks YOLOv5's names) is left alone."""
    for name in HOST_MODULES:
        register_if_loaded(name, HOST_NAMES, register)


def register(yolo):
    """Register the MobileNetV4 layers into a `models.yolo` module (repo or PyPI layout); idempotent."""
    if is_registered(yolo):
        return
    require_names(yolo, HOST_NAMES, 'unsupported YOLOv5 version', 'v7.0 and later')
    original_parse, original_fuse, original_init = yolo.parse_model, yolo.BaseModel.fuse, yolo.initialize_weights
    log = host_logger(yolo)

    @functools.wraps(original_parse)
    def parse_model(d, ch):
        expanded = expand_backbone_rows(d)
        with _riding_conv(yolo.Conv):
            layers, save = original_parse(expanded, ch)
        if any(isinstance(m, MobileNetV4Stage) for m in layers):
            weights_strided_like_activations(layers)
        return layers, save

    @functools.wraps(original_fuse)
    def fuse(self, *args, **kwargs):
        fuse_blocks(self)
        if any(isinstance(m, MobileNetV4Stage) for m in self.modules()):
            self.to(memory_format=torch.contiguous_format)  # YOLOv5's fuse_conv_and_bn .view()s the weights
        # fuse_conv_and_bn makes its convs requires_grad_(False) and then copy_()s values computed from
        # the BN's parameters into them; outside no_grad that turns them back into (non-leaf) tensors
        # that require gradients and keep the BN in their graph.
        with torch.no_grad():
            return original_fuse(self, *args, **kwargs)

    @functools.wraps(original_init)
    def initialize_weights(model):
        original_init(model)
        load_pretrained_backbones(model, log)

    conflict = numpy_conflict(Path(yolo.__file__).resolve().parents[1])
    if conflict:
        log.warning(f'yolov5-mnv4: warning: {conflict}')
    yolo.parse_model = mark(parse_model, original_parse)
    yolo.initialize_weights = initialize_weights
    yolo.BaseModel.fuse = fuse
    yolo.MobileNetV4Stage = MobileNetV4Stage
    register_on_import(yolo.__name__.rpartition('.')[0] + '.tf', register_tf)


def keras_detector(model, imgsz, tf_module='models.tf'):
    """YOLOv5's Keras copy of a fused `model` (`tf_module`'s TFModel, as export.py builds it: models.tf in a
    checkout, yolov5.models.tf in the PyPI package), batch 1, NHWC input of `imgsz` (h, w); its Detect
    returns boxes divided by the image size, as YOLOv5's TF exports do. Imports TensorFlow."""
    import importlib

    from ..export.tflite import import_tensorflow
    tf = import_tensorflow()
    tf_model = importlib.import_module(tf_module).TFModel
    model.requires_grad_(False)  # models/tf.py reads weights with .numpy()
    built = tf_model(cfg=model.yaml, model=model, nc=model.model[-1].nc, imgsz=imgsz)
    inputs = tf.keras.Input(shape=(*imgsz, 3), batch_size=1)
    keras_model = tf.keras.Model(inputs=inputs, outputs=built.predict(inputs))
    keras_model.trainable = False
    return keras_model


PER_TENSOR_FLAG = '--per-tensor'  # master's export.py: int8 TFLite with one scale per weight tensor
PER_TENSOR_NOTE = (
    'yolov5-mnv4: --per-tensor gives each conv weight one int8 scale, though folded BatchNorms and layer '
    'scales spread MobileNetV4 channels over different ranges, so its scores sit further from fp32 than with '
    'per-channel scales (the default); see docs/export.md')


def register_tf(tf_module):
    """Register the Keras copies of our stages into YOLOv5's `models.tf` (repo or PyPI layout).

    export.py builds its TensorFlow models (SavedModel, GraphDef, TFLite, TF.js, EdgeTPU) with
    models/tf.py's own parse_model, which reads the raw YAML: it is wrapped to see our expanded
    rows, finds `MobileNetV4Stage` and `TFMobileNetV4Stage` by name, and its `activations` learns
    ReLU and GELU (YOLOv5 maps only SiLU, Hardswish and LeakyReLU, so a config's
    `activation: nn.ReLU()` head could not export). Runs when models/tf.py is imported, which has
    imported TensorFlow already: the plugin imports TensorFlow for nothing else. Idempotent.
    """
    if is_registered(tf_module):
        return
    require_names(tf_module, ('parse_model', 'activations', 'TFModel', 'Conv'), 'unsupported YOLOv5 version')
    from . import yolov5_keras as tf_layers

    original_parse, original_activations = tf_module.parse_model, tf_module.activations

    @functools.wraps(original_parse)
    def parse_model(d, ch, model, imgsz):
        expanded = expand_backbone_rows(d, keep_weights=False)
        if PER_TENSOR_FLAG in sys.argv and any(row[2] == 'MobileNetV4Stage' for row in expanded['backbone']):
            host_logger(tf_module).info(PER_TENSOR_NOTE)
        with _riding_conv(tf_module.Conv):
            return original_parse(expanded, ch, model, imgsz)

    @functools.wraps(original_activations)
    def activations(act=nn.SiLU):
        if isinstance(act, tf_layers.ACTIVATIONS):
            return tf_layers.activation(act)
        return original_activations(act)

    tf_module.parse_model = mark(parse_model, original_parse)
    tf_module.activations = activations
    tf_module.MobileNetV4Stage = MobileNetV4Stage
    tf_module.TFMobileNetV4Stage = tf_layers.TFMobileNetV4Stage
