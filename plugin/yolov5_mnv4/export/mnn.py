"""MNN: the export (MNN's converter, from ONNX; int8 through its post-training quantizer) and its runner.

MNN's own `mnnconvert` / `mnnquant` commands are not run: on their first use they pip-install
aliyun-log-python-sdk (which pins protobuf < 6 and so breaks onnx and TensorFlow in the same
environment) and send a usage log with the machine id to an Aliyun service. The converter they wrap,
`_tools.mnnconvert`, is called directly instead (in a child process: see export_mnn).
"""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .formats import Runner, require
from .images import write_pngs
from .onnx import onnx_file

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


class MNNModel(Runner):
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

    def output(self, raw):
        return np.array(raw)


RUNNER = MNNModel
