"""ONNX: the one ONNX export of the package (MNN converts from it) and of the benchmarks."""


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
