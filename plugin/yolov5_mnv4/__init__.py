"""MobileNetV4 backbones for Ultralytics YOLOv5 (and the Ultralytics package).

Importing the package is cheap (no torch): it arms the hooks that register the backbones into the
PyPI `yolov5` package and into the Ultralytics package (`ultralytics.nn.tasks`) when those are
imported, or right away where they already are. The model classes load on first use.

Layout: the network (specs, layers, blocks, attention, model, pretrained, timm_weights, resources) at
the top; hosts/ ties it to YOLOv5 and the Ultralytics package; export/ makes and runs the exports
that YOLOv5 does not; cli/ holds the commands. Module paths from before 0.3.0 still import
(_moved.py): checkpoints pickle them.
"""
from . import _moved
from .hosts.import_hook import register_on_import

__version__ = '0.3.0'
__all__ = ['MobileNetV4', 'VARIANTS', 'build_stages', 'fuse_blocks', 'get_variant', '__version__']

_LAZY = {'MobileNetV4': 'model', 'build_stages': 'model', 'fuse_blocks': 'model', 'VARIANTS': 'specs',
         'get_variant': 'specs'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _register_pip_yolov5(module):
    from .hosts.yolov5 import register
    register(module)


def _register_ultralytics(module):
    from .hosts.ultralytics import register
    register(module)


_moved.install()
register_on_import('yolov5.models.yolo', _register_pip_yolov5)
register_on_import('ultralytics.nn.tasks', _register_ultralytics)
