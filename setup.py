"""Everything about the package is in setup.cfg. This file only adds the start-up hook's .pth file
(plugin/yolov5_mnv4_startup.pth; see plugin/yolov5_mnv4_startup.py) to the root of a wheel, which pip
installs into site-packages: build_py copies it into a regular wheel, and an editable wheel gets the
same file beside setuptools' own `__editable__.*.pth` (which sorts first, so the plugin's folder is
on sys.path when the hook's line runs)."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = 'yolov5_mnv4_startup.pth'
PTH_SOURCE = os.path.join('plugin', PTH)


class BuildPyWithStartupHook(build_py):
    def run(self):
        super().run()
        if not getattr(self, 'editable_mode', False):
            self.copy_file(PTH_SOURCE, os.path.join(self.build_lib, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        extra = [] if getattr(self, 'editable_mode', False) else [os.path.join(self.build_lib, PTH)]
        return [*super().get_outputs(include_bytecode), *extra]


class EditableWheelWithStartupHook(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        return _AlsoWritePth(super()._select_strategy(*args, **kwargs))


class _AlsoWritePth:
    """setuptools' editable strategy, plus the start-up .pth in the editable wheel's root."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        with open(PTH_SOURCE, 'rb') as f:
            wheel.writestr(PTH, f.read())

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)


setup(cmdclass={'build_py': BuildPyWithStartupHook, 'editable_wheel': EditableWheelWithStartupHook})
