"""Exports and their runners: `tflite` (YOLOv5's TensorFlow formats, run outside YOLOv5) and
`tflite_int8` (int8 with the Detect and the attention in float), `runtimes` (NCNN, MNN, ExecuTorch), `parity` (how
far an export is from PyTorch), `pt2e` (the PT2E int8 quantizer and QAT's graph switches) and `qat`
(quantization-aware training and its exports). The `yolov5-mnv4 export` command is `yolov5_mnv4.cli.export`.

Before 0.3.0 `yolov5_mnv4.export` was that command's module: its names still resolve, with a warning."""
import importlib

from .._moved import forwarder

SUBMODULES = ('executorch', 'formats', 'images', 'mnn', 'ncnn', 'onnx', 'parity', 'pt2e', 'qat', 'runtimes', 'tflite',
              'tflite_int8')
_command = forwarder(__name__, f'{__package__.rpartition(".")[0]}.cli.export')


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f'.{name}', __name__)
    return _command(name)
