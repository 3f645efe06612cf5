"""Exports to runtimes that YOLOv5's export.py does not know, and a runner for each that parity checks
and benchmarks share: NCNN (through pnnx, from TorchScript), MNN (MNN's converter, from ONNX; int8
through its post-training quantizer) and ExecuTorch (torch.export, XNNPACK delegate; int8 through
PT2E quantization).

Host-free: `model` is any eval-mode torch module taking one NCHW float image batch and returning one
tensor. Runners take and return numpy arrays (NCHW float32 in, the model's output out). Each
runtime's Python package is imported when it is used; a missing one raises `MissingRuntime`, whose
message names the extra to install.

MNN's own `mnnconvert` / `mnnquant` commands are not run: on their first use they pip-install
aliyun-log-python-sdk (which pins protobuf < 6 and so breaks onnx and TensorFlow in the same
environment) and send a usage log with the machine id to an Aliyun service. The converter they wrap,
`_tools.mnnconvert`, is called directly instead (in a child process: see export_mnn).
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..resources import install_hint

FORMATS = ('ncnn', 'mnn', 'executorch')
EXTRA = {'ncnn': 'ncnn', 'mnn': 'mnn', 'executorch': 'executorch'}  # setup.cfg extra per format
PACKAGES = {'ncnn': ('pnnx', 'ncnn'), 'mnn': ('MNN', '_tools'), 'executorch': ('executorch',)}
NCNN_FILES = ('model.ncnn.param', 'model.ncnn.bin')  # pnnx's names, which Ultralytics' NCNN folders keep


class MissingRuntime(RuntimeError):
    pass


def require(fmt):
    """Import the packages `fmt` needs (MNN's converter is only looked up: see export_mnn), or raise
    MissingRuntime naming the extra that brings them."""
    import importlib
    import importlib.util
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


def trace(model, im):
    """TorchScript of `model` traced on `im` (the explicit attention: layers.exporting() is True)."""
    import torch
    with torch.no_grad():
        return torch.jit.trace(model, im, strict=False, check_trace=False)


def export_ncnn(model, im, folder, half=False):
    """`folder`/model.ncnn.param and .bin, written by pnnx from a TorchScript trace; `half` stores the
    weights in fp16 (pnnx's default), else fp32. pnnx's intermediate files are removed."""
    require('ncnn')
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    script = folder / 'model.torchscript'
    trace(model, im).save(str(script))
    shape = ','.join(str(s) for s in im.shape)
    pnnx = shutil.which('pnnx') or str(Path(sys.executable).with_name('pnnx'))
    proc = subprocess.run([pnnx, str(script.resolve()), f'inputshape=[{shape}]', f'fp16={int(half)}'],
                          cwd=folder, capture_output=True, text=True)
    missing = [name for name in NCNN_FILES if not (folder / name).is_file()]
    if proc.returncode != 0 or missing:
        raise RuntimeError(f'pnnx failed (exit {proc.returncode}, missing {missing}):\n{(proc.stdout + proc.stderr)[-3000:]}')
    for path in folder.iterdir():
        if path.name not in NCNN_FILES:
            path.unlink()
    return folder


def onnx_file(model, im, path, opset=17, outputs=1):
    """An ONNX file of `model` (TorchScript-based exporter: one self-contained file), input 'images',
    outputs 'output0' ... as YOLOv5's export.py names them (two for a segmentation model). The one
    ONNX export of the package and the benchmarks."""
    import inspect

    import torch
    legacy = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}  # torch < 2.5 has no dynamo=
    with torch.no_grad():
        torch.onnx.export(model, im, str(path), opset_version=opset, input_names=['images'],
                          output_names=[f'output{i}' for i in range(outputs)], **legacy)
    return path


MNN_TOOL = 'import sys, _tools; _tools.{0}(["{0}", *sys.argv[1:]])'
# mnnquant's activation ranges: 'EMA' (moving average of each batch's min/max). Its default, 'KL',
# clips the ReLU outputs of a trained Conv-S so hard that the scores are noise (measured -0.0 dB
# against fp32, EMA 24.7 dB on the same 32 images).
MNN_FEATURE_METHOD = 'EMA'


def _mnn_tool(tool, *args):
    """Run MNN's `tool` ('mnnconvert' or 'mnnquant', from `_tools`, without the telemetry of their
    command-line wrappers) in a process of its own: `_tools` carries TensorFlow's protobuf
    descriptors for its TF front end, and imported after TensorFlow it aborts the process ("Symbol
    name tensorflow.ResourceHandleProto conflicts")."""
    proc = subprocess.run([sys.executable, '-c', MNN_TOOL.format(tool), *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def export_mnn(model, im, path, half=False, calibration=None):
    """An .mnn file converted from ONNX by MNN's converter; `half` stores the weights in fp16.
    With `calibration` (NCHW float images in [0, 1], from 8-bit images), MNN's post-training
    quantizer makes it int8 (convolutions in int8, per-channel weights, activation ranges by EMA)."""
    require('mnn')
    path = Path(path)
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = tmp / 'fp32.mnn' if calibration is not None else path
        rc, log = _mnn_tool('mnnconvert', '-f', 'ONNX', '--modelFile', onnx_file(model, im, tmp / 'model.onnx'),
                            '--MNNModel', fp32, '--bizCode', 'MNN', *(['--fp16'] if half else []))
        if rc == 0 and fp32.is_file() and calibration is not None:
            rc, log = _mnn_tool('mnnquant', fp32, path, mnn_quant_config(calibration, tmp / 'calibration'))
            path.with_name(f'{path.name}.json').unlink(missing_ok=True)  # mnnquant's own record of its ranges
    if rc != 0 or not path.is_file():
        raise RuntimeError(f'MNN {"quantization" if calibration is not None else "conversion"} failed (exit {rc}):\n{log[-3000:]}')
    return path


def mnn_quant_config(calibration, folder):
    """mnnquant's JSON config, with the calibration images written to `folder` as PNGs at the model's
    size (MNN reads and resizes them itself: at their own size its resize is the identity)."""
    import json
    images = list(calibration)
    if not images:
        raise ValueError('yolov5-mnv4: int8 needs calibration images; none were given')
    write_pngs(images, folder)
    height, width = np.shape(images[0])[2:]
    config = {'format': 'RGB', 'mean': [0, 0, 0], 'normal': [1 / 255] * 3, 'width': int(width), 'height': int(height),
              'path': f'{folder}/', 'used_image_num': len(images), 'feature_quantize_method': MNN_FEATURE_METHOD,
              'weight_quantize_method': 'MAX_ABS'}
    path = folder.with_suffix('.json')
    path.write_text(json.dumps(config))
    return path


def write_pngs(images, folder):
    """Write NCHW float images in [0, 1] (batch 1, RGB, from 8-bit images) to `folder` as 0000.png, ...
    (8-bit BGR files, exact); returns their paths. For the converters that read calibration files."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        rgb = np.rint(np.asarray(im)[0].transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)
        paths.append(folder / f'{i:04d}.png')
        cv2.imwrite(str(paths[-1]), rgb[:, :, ::-1])
    return paths


def export_executorch(model, im, path, calibration=None, float_modules=()):
    """A .pte program: torch.export of `model`, lowered to ExecuTorch with the XNNPACK partitioner.
    With `calibration` (NCHW float images) it is quantized first (PT2E with XNNPACK's quantizer:
    int8 activations, per-channel int8 weights), except the ops of the modules named in
    `float_modules` (their own ops, not their submodules'). Returns the path and {op: count} of the
    ops left outside the XNNPACK delegate."""
    require('executorch')
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    with torch.no_grad():
        program = torch.export.export(model, (im,))
        if calibration is not None:
            program = torch.export.export(quantize_pt2e(program, calibration, float_modules), (im,))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    outside = {}
    for node in edge.exported_program().graph.nodes:
        name = getattr(node.target, '__name__', str(node.target))
        if node.op == 'call_function' and 'delegate' not in name and name != 'getitem':
            outside[name] = outside.get(name, 0) + 1
    Path(path).write_bytes(edge.to_executorch().buffer)
    return Path(path), outside


def quantize_pt2e(program, calibration, float_modules=()):
    """The int8 (quantize/dequantize) graph module of an exported program, calibrated on `calibration`."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class Quantizer(XNNPACKQuantizer):
        def annotate(self, graph_module):
            # XNNPACK's quantizer annotates every cat and propagates ranges through views whatever
            # its module filters say; dropping the annotations afterwards is what keeps a module float
            graph_module = super().annotate(graph_module)
            for node in graph_module.graph.nodes:
                stack = list(node.meta.get('nn_module_stack', {}).values())
                if stack and stack[-1][0] in float_modules:
                    node.meta.pop('quantization_annotation', None)
            return graph_module

    images = list(calibration)
    if not images:
        raise ValueError('yolov5-mnv4: int8 needs calibration images; none were given')
    quantizer = Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for im in images:
            prepared(torch.as_tensor(im))
    return convert_pt2e(prepared)


class NCNNModel:
    """An NCNN model folder (model.ncnn.param/.bin) as a function; `threads` CPU threads."""

    def __init__(self, folder, threads=2):
        require('ncnn')
        import ncnn
        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        folder = Path(folder)
        if self.net.load_param(str(folder / NCNN_FILES[0])) or self.net.load_model(str(folder / NCNN_FILES[1])):
            raise RuntimeError(f'NCNN could not load {folder}')
        self.input = None

    def set_input(self, x):
        # ncnn.Mat wraps the array's memory: clone() owns a copy, so no array has to outlive the call
        self.input = self.ncnn.Mat(np.ascontiguousarray(x, np.float32), batch_index=0).clone()

    def invoke(self):
        extractor = self.net.create_extractor()
        extractor.input('in0', self.input)
        status, out = extractor.extract('out0')
        if status != 0:
            raise RuntimeError(f'NCNN extract failed ({status})')
        return out

    def __call__(self, x):
        self.set_input(x)
        return np.array(self.invoke())[None]


class MNNModel:
    """An .mnn file as a function; `threads` CPU threads."""

    def __init__(self, path, threads=2):
        require('mnn')
        import MNN
        self.expr = MNN.expr
        self.module = MNN.nn.load_module_from_file(str(path), ['images'], ['output0'], thread_num=threads)
        self.input = None

    def set_input(self, x):
        x = np.ascontiguousarray(x, np.float32)
        self.input = self.expr.const(x, list(x.shape), self.expr.NCHW)

    def invoke(self):
        # the computation runs lazily: reading the output is what waits for it
        return self.module.forward(self.input).read()

    def __call__(self, x):
        self.set_input(x)
        return np.array(self.invoke())


class ExecuTorchModel:
    """A .pte program as a function (ExecuTorch's Python runtime, XNNPACK kernels built in)."""

    def __init__(self, path):
        require('executorch')
        from executorch.runtime import Runtime
        self.method = Runtime.get().load_program(str(path)).load_method('forward')
        self.input = None

    def set_input(self, x):
        import torch
        self.input = [torch.from_numpy(np.ascontiguousarray(x, np.float32))]

    def invoke(self):
        return self.method.execute(self.input)

    def __call__(self, x):
        self.set_input(x)
        return self.invoke()[0].numpy()


def load(fmt, path, threads=2):
    """The runner of an exported model: 'ncnn' (its folder), 'mnn' or 'executorch' (its file)."""
    if fmt == 'executorch':
        return ExecuTorchModel(path)
    return {'ncnn': NCNNModel, 'mnn': MNNModel}[fmt](path, threads)
