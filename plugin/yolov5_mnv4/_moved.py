"""The old module paths of the package, from before 0.3.0 put its modules into hosts/, export/ and cli/.

`yolov5_mnv4.integration` and the other old names still import: a finder on `sys.meta_path`
(installed by `import yolov5_mnv4`) makes each a module whose attributes come from the module that
holds them now, as timm keeps `timm.models.layers`. Checkpoints pickle class paths, so the host
stages' old paths (`yolov5_mnv4.integration.MobileNetV4Stage`, `yolov5_mnv4.ultralytics_host.
MobileNetV4Stage`) must resolve forever, and the hook block that earlier releases wrote into users'
`models/yolo.py` imports `yolov5_mnv4.integration`: those two are silent, the others warn.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

RELEASE = '0.3.0'
# old module (under yolov5_mnv4) -> the module that holds its contents now
MOVED = {
    'integration': 'hosts.yolov5', 'ultralytics_host': 'hosts.ultralytics', 'tf_layers': 'hosts.yolov5_keras',
    'rows': 'hosts.rows', 'stage': 'hosts.stage', 'import_hook': 'hosts.import_hook', 'offline': 'hosts.offline',
    'apply': 'hosts.yolov5_tree', 'parity': 'export.parity', 'runtimes': 'export.runtimes', 'edge': 'export.tflite',
    'tflite_int8': 'export.tflite_int8', 'check': 'cli.check', 'convert': 'cli.convert', 'demo': 'cli.demo',
    'yolo': 'cli.yolo',
}
PICKLED = ('integration', 'ultralytics_host')  # every checkpoint of 0.1.x and 0.2.x names them: no warning
PACKAGE = __package__


def forwarder(old, new):
    """A module `__getattr__` that gives the attributes of module `new` (warning unless `old` is pickled)."""
    def __getattr__(name):
        if name.startswith('__'):
            raise AttributeError(name)
        value = getattr(importlib.import_module(new), name)
        if old.rpartition('.')[2] not in PICKLED:
            warnings.warn(f'{old} moved to {new} in yolov5-mnv4 {RELEASE}; import {name} from there',
                          DeprecationWarning, stacklevel=2)
        return value
    return __getattr__


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `yolov5_mnv4.<old name>` and makes it a forwarding module."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition('.')
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        new = f'{PACKAGE}.{MOVED[module.__name__.rpartition(".")[2]]}'
        module.__doc__ = f'Moved to {new} in yolov5-mnv4 {RELEASE}; this old path still works.'
        module.__getattr__ = forwarder(module.__name__, new)


def install():
    if not any(isinstance(finder, OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(OldPaths())
