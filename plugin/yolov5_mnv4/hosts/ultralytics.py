"""The one module that patches the Ultralytics package (`ultralytics.nn.tasks`) at run time: the
second host, beside hosts/yolov5.py for YOLOv5. `register(tasks)` runs when `ultralytics.nn.tasks` is
imported after `import yolov5_mnv4` (or right away if it already was), when a checkpoint holding our
stages is unpickled, and under `yolov5-mnv4 yolo ...` (the package's `yolo` command with the plugin
loaded). It copies no Ultralytics code and adds no name to `tasks`:

1. wraps `parse_model`: a MobileNetV4 backbone row becomes five placeholder rows of the package's
   `Index` module, whose branch of parse_model records `args[0]` as the layer's width unscaled (a
   ridden `Conv` would be clamped to max_channels before the width multiple); the built placeholders
   are then swapped for `MobileNetV4Stage`s, keeping the `.i/.f/.type/.np` that the package's forward
   pass, saving and printing read. A misspelled or misplaced row is refused up front (rows.py);
2. wraps `check_yaml`, as `yaml_model_load` calls it, so the configs shipped with the plugin are
   found by name (`YOLO('yolo11n-mnv4-conv-s.yaml')`) wherever the user runs;
3. wraps `BaseModel.fuse` and `is_fused`, which know only the package's own Conv/BN pairs, so that
   `model.fuse()` folds every norm of our blocks and `is_fused()` is true only when it has;
4. wraps `initialize_weights` (it resets every BatchNorm's eps and momentum) to reload pretrained
   stages after it, as in the YOLOv5 host;
5. allows our classes under safe loading (`ULTRALYTICS_SAFE_LOAD=1`, `torch_safe_load(safe_only=True)`,
   any `torch.load(weights_only=True)`) with `torch.serialization.add_safe_globals`.

Registration checks itself: it builds a small model through the wrapped parse_model and compares the
widths the package recorded with the backbone's; a parse_model that works otherwise fails here with a
message naming the versions this module supports, not later inside a training run.
"""
import functools
from pathlib import Path

import torch
import torch.nn as nn

from ..model import fuse_blocks, is_fused, stage_input_channels
from .import_hook import register_if_loaded
from .registration import host_logger, is_registered, mark, require_names
from .rows import expand_stage_rows
from .stage import BackboneStage, load_pretrained_backbones

TESTED = '8.4.190'
SUPPORTED = (f'ultralytics 8.3.60 and later with the Index module in nn.tasks (tested: 8.3.100, {TESTED}; '
             f'the YOLO26 configs need 8.4)')
HOST_MODULE = 'ultralytics.nn.tasks'
HOST_NAMES = ('parse_model', 'BaseModel', 'DetectionModel', 'Index', 'initialize_weights', 'check_yaml')
PLACEHOLDER = 'Index'  # parse_model's branch for it: c2 = args[0] unscaled, module built from args[1:]


class MobileNetV4Stage(BackboneStage):
    """One MobileNetV4 stage as a layer of an Ultralytics-package model."""

    def __setstate__(self, state):
        """Unpickling a stage (a checkpoint loaded by the package) registers the plugin into the
        package first, so that the `fuse()` its loaders call next folds our blocks too."""
        super().__setstate__(state)
        register_loaded()


def config_folder():
    """The folder of the Ultralytics-package configs shipped with the plugin."""
    from ..resources import ultralytics_configs
    return ultralytics_configs()


def shipped_config(name):
    """The shipped config file for a bare config name (`yolo11n-mnv4-conv-s.yaml`), else None."""
    name = str(name)
    if Path(name).name != name or not name.endswith(('.yaml', '.yml')):
        return None
    path = config_folder() / name
    return path if path.is_file() else None


def expand_backbone_rows(d):
    """(copy of the model dict with its MobileNetV4 row replaced by five placeholder rows,
    {layer index: (variant, weights)} of the placeholders: the stage index, as the row is first)."""
    stages = {}

    def placeholder(variant, index, c_out, weights):
        stages[index] = (variant, weights)
        return PLACEHOLDER, [c_out, 0]

    return expand_stage_rows(d, placeholder), stages


def _swap_in_stages(layers, stages, ch):
    """Replace the placeholder layers by the stages they stand for; returns the stages."""
    built = []
    for index, (variant, weights) in stages.items():
        placeholder = layers[index]
        stage = MobileNetV4Stage(stage_input_channels(variant, index, ch), variant.stage_out_channels()[index],
                                 variant.name, index, weights)
        stage.i, stage.f = placeholder.i, placeholder.f
        stage.type = f'{MobileNetV4Stage.__module__}.{MobileNetV4Stage.__name__}'
        stage.np = sum(p.numel() for p in stage.parameters())
        layers[index] = stage
        built.append(stage)
    return built


# The path under which releases before 0.3.0 pickled the stage (yolov5_mnv4._moved)
PICKLED_BEFORE_0_3 = 'yolov5_mnv4.ultralytics_host.MobileNetV4Stage'


def safe_classes():
    """Every class of ours that a checkpoint of an Ultralytics-package model pickles, for
    `add_safe_globals`: the stage also under the path that releases before 0.3.0 pickled."""
    from .. import attention, blocks, layers
    classes = [MobileNetV4Stage, (MobileNetV4Stage, PICKLED_BEFORE_0_3)]
    for module in (attention, blocks, layers):
        classes += [obj for obj in vars(module).values()
                    if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__]
    return classes


def allow_safe_loading(log):
    """Our classes as safe globals (torch >= 2.4; the pre-0.3.0 path of the stage from torch 2.5, which
    takes (class, name) pairs). On an older torch safe loading does not exist: one line says so."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:
        log.info(f'yolov5-mnv4: torch {torch.__version__} has no safe loading (add_safe_globals, torch >= 2.4): '
                 f'checkpoints load with plain unpickling only')
        return
    classes = safe_classes()
    add([c for c in classes if not isinstance(c, tuple)])
    try:
        add([c for c in classes if isinstance(c, tuple)])
    except (TypeError, AttributeError):  # torch 2.4: no (class, name) pairs, so no old names under safe loading
        pass


def register_loaded():
    """Register into `ultralytics.nn.tasks` if it is imported (and done importing) in this process."""
    register_if_loaded(HOST_MODULE, HOST_NAMES, register)


def register(tasks):
    """Register the MobileNetV4 layers into the package's `ultralytics.nn.tasks`; idempotent."""
    if is_registered(tasks):
        return
    require_names(tasks, HOST_NAMES, f'unsupported Ultralytics version {_version()}', SUPPORTED)
    original_parse, original_check_yaml = tasks.parse_model, tasks.check_yaml
    original_fuse, original_is_fused = tasks.BaseModel.fuse, tasks.BaseModel.is_fused
    original_init = tasks.initialize_weights
    log = host_logger(tasks)

    @functools.wraps(original_parse)
    def parse_model(d, ch, *args, **kwargs):
        expanded, stages = expand_backbone_rows(d)
        layers, save = original_parse(expanded, ch, *args, **kwargs)
        built = _swap_in_stages(layers, stages, ch)
        if built and kwargs.get('verbose', args[0] if args else True):
            log.info(f'MobileNetV4 {built[0].variant}: layers {built[0].i}-{built[-1].i} are its five stages, '
                     f'{sum(s.np for s in built):,} parameters')
        return layers, save

    @functools.wraps(original_check_yaml)
    def check_yaml(file, *args, **kwargs):
        shipped = None if Path(str(file)).exists() else shipped_config(file)
        return original_check_yaml(shipped or file, *args, **kwargs)

    @functools.wraps(original_fuse)
    def fuse(self, *args, **kwargs):
        with torch.no_grad():
            fuse_blocks(self)
            return original_fuse(self, *args, **kwargs)

    @functools.wraps(original_is_fused)
    def is_fused_(self):
        return original_is_fused(self) and is_fused(self)

    @functools.wraps(original_init)
    def initialize_weights(model):
        original_init(model)
        load_pretrained_backbones(model, log)

    mark(parse_model, original_parse)
    _self_check(tasks, parse_model)
    tasks.parse_model, tasks.check_yaml, tasks.initialize_weights = parse_model, check_yaml, initialize_weights
    tasks.BaseModel.fuse, tasks.BaseModel.is_fused = fuse, is_fused_
    allow_safe_loading(log)


def _version():
    try:
        import importlib.metadata
        return importlib.metadata.version('ultralytics')
    except Exception:  # noqa: BLE001 (a source tree without metadata)
        return 'unknown'


def _self_check(tasks, parse_model):
    """Build Conv-S with one Conv after it through the wrapped parse_model; the Conv must read the
    backbone's 128 channels at layer 5, which only holds if the placeholder branch works as assumed."""
    d = {'nc': 1, 'scales': {'n': [0.5, 0.25, 1024]}, 'scale': 'n',
         'backbone': [[-1, 1, 'MobileNetV4ConvSmall', []]], 'head': [[-1, 1, 'Conv', [64, 1, 1]]]}
    try:
        layers, _ = parse_model(d, 3, verbose=False)
        stages = [m for m in layers if isinstance(m, MobileNetV4Stage)]
        ok = ([m.i for m in stages] == [0, 1, 2, 3, 4] and layers[5].conv.in_channels == 128
              and layers[5].f == -1 and layers[5].i == 5)
        reason = '' if ok else 'the built layers do not line up with the backbone widths'
    except Exception as err:  # noqa: BLE001 (any failure of the package's parse_model means: unsupported)
        ok, reason = False, f'{type(err).__name__}: {err}'
    if not ok:
        raise RuntimeError(f'unsupported Ultralytics version {_version()}: its parse_model did not build a '
                           f'MobileNetV4 backbone as expected ({reason}); yolov5-mnv4 supports {SUPPORTED}')
