"""MobileNetV4 backbones for Ultralytics YOLOv5 (and the Ultralytics package).

Importing the package is cheap (no torch): it arms the hooks that register the backbones into the
PyPI `yolov5` package and into the Ultralytics package (`ultralytics.nn.tasks`) when those are
imported, or right away where they already are. The model classes load on first use.
"""
from .import_hook import register_on_import

__version__ = '0.2.0'
__all__ = ['MobileNetV4', 'VARIANTS', 'build_stages', 'fuse_blocks', 'get_variant', '__version__']

_LAZY = {'MobileNetV4': 'model', 'build_stages': 'model', 'fuse_blocks': 'model', 'VARIANTS': 'specs',
         'get_variant': 'specs'}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def _register_pip_yolov5(module):
    from .integration import register
    register(module)


def _register_ultralytics(module):
    from .ultralytics_host import register
    register(module)


register_on_import('yolov5.models.yolo', _register_pip_yolov5)
register_on_import('ultralytics.nn.tasks', _register_ultralytics)
