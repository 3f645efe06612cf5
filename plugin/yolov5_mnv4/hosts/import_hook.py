"""Run a function on a module right after it is imported. Imports nothing heavy (no torch), so that
`import yolov5_mnv4` can arm its hook for the PyPI `yolov5` package at no cost."""
import importlib.abc
import importlib.machinery
import sys


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Calls `register(module)` right after the module named `target` is imported."""

    def __init__(self, target, register):
        self.target, self.register = target, register

    def find_spec(self, fullname, path, target=None):
        if fullname != self.target:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            exec_module, register = spec.loader.exec_module, self.register

            def exec_and_register(module):
                exec_module(module)
                register(module)

            spec.loader.exec_module = exec_and_register
        return spec


def still_importing(module):
    """Whether `module` is in sys.modules but its code has not finished running."""
    return getattr(getattr(module, '__spec__', None), '_initializing', False)


def register_on_import(name, register):
    """Register into module `name` now if it is imported, else as soon as it is.

    A module still being imported (models/tf.py imports models/yolo.py from its top, before it
    defines its parse_model) cannot be hooked here: it is left alone, and export.py, which imports
    models/yolo.py first, is unaffected.
    """
    module = sys.modules.get(name)
    if module is not None:
        if still_importing(module):
            return
        register(module)
    elif not any(isinstance(f, _RegisterOnImport) and f.target == name for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport(name, register))


def hook_for(name):
    """The finder that register_on_import put on sys.meta_path for module `name`, or None."""
    return next((f for f in sys.meta_path if isinstance(f, _RegisterOnImport) and f.target == name), None)


def register_if_loaded(name, required, register):
    """Call `register(module)` if module `name` is imported, done importing and has every attribute in
    `required`: a module of that name that is not the host's is left alone."""
    module = sys.modules.get(name)
    if module is not None and not still_importing(module) and all(hasattr(module, n) for n in required):
        register(module)
