"""The runtimes that yolov5-mnv4-export adds to YOLOv5's export.py, as one table, and what every one
of them shares: the check that its packages are installed (`require`, naming the extra to install),
and the runner protocol (`Runner`) that parity checks and benchmarks use (`load`).

One module per format holds its converter and its runner: `ncnn` (pnnx, from TorchScript), `mnn`
(MNN's converter, from ONNX; int8 through its post-training quantizer), `executorch` (torch.export,
XNNPACK delegate; int8 through PT2E quantization). Host-free: a model is any eval-mode torch module
taking one NCHW float image batch and returning one tensor. Each runtime's Python package is
imported when it is used.
"""
import importlib
import importlib.util
from dataclasses import dataclass

from ..resources import install_hint


@dataclass(frozen=True)
class Format:
    """One runtime: its name (`--include`), what the export is (a folder or a file suffix), the
    setup.cfg extra and Python packages it needs, and whether the command offers --int8 and --half."""
    name: str
    suffix: str  # '' for a folder
    extra: str
    packages: tuple
    int8: bool
    half: bool


TABLE = {f.name: f for f in (
    Format('ncnn', '_ncnn_model', 'ncnn', ('pnnx', 'ncnn'), int8=False, half=True),
    Format('mnn', '.mnn', 'mnn', ('MNN', '_tools'), int8=True, half=True),
    Format('executorch', '.pte', 'executorch', ('executorch',), int8=True, half=False),
)}
FORMATS = tuple(TABLE)
EXTRA = {name: f.extra for name, f in TABLE.items()}  # setup.cfg extra per format
PACKAGES = {name: f.packages for name, f in TABLE.items()}


class MissingRuntime(RuntimeError):
    pass


def require(fmt):
    """Import the packages `fmt` needs (MNN's converter is only looked up: see mnn.export_mnn), or
    raise MissingRuntime naming the extra that brings them."""
    for name in PACKAGES[fmt]:
        try:
            if name == '_tools':
                if importlib.util.find_spec(name) is None:
                    raise ImportError(f'No module named {name!r}')
            else:
                importlib.import_module(name)
        except ImportError as err:
            raise MissingRuntime(f'{fmt} needs the Python package {PACKAGES[fmt][0]} ({err}): '
                                 f'{install_hint(EXTRA[fmt])}') from None


class Runner:
    """An exported model as a function of numpy arrays: `runner(x)` runs one NCHW float32 batch and
    returns the model's output. `set_input(x)` then `invoke()` split that call, so that a benchmark
    times the runtime alone; `output(raw)` turns what `invoke` returned into the array. Constructed
    from the export's path and a number of CPU threads."""

    def __init__(self, path, threads=2):
        raise NotImplementedError

    def set_input(self, x):
        raise NotImplementedError

    def invoke(self):
        raise NotImplementedError

    def output(self, raw):
        return raw

    def __call__(self, x):
        self.set_input(x)
        return self.output(self.invoke())


def load(fmt, path, threads=2):
    """The runner of an exported model: 'ncnn' (its folder), 'mnn' or 'executorch' (its file)."""
    if fmt not in TABLE:
        raise ValueError(f'unknown runtime {fmt!r}; yolov5-mnv4 runs {", ".join(FORMATS)}')
    return importlib.import_module(f'.{fmt}', __package__).RUNNER(path, threads)
