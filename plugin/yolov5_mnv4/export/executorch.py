"""ExecuTorch: the export (torch.export, lowered with the XNNPACK partitioner; int8 through PT2E
quantization) and its runner."""
from pathlib import Path

import numpy as np

from .formats import Runner, require


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
    """The int8 (quantize/dequantize) graph module of an exported program, calibrated on `calibration`
    (pt2e.calibrated: PT2E with XNNPACK's quantizer)."""
    from .pt2e import calibrated
    return calibrated(program, calibration, float_modules)


class ExecuTorchModel(Runner):
    """A .pte program as a function (ExecuTorch's Python runtime, XNNPACK kernels built in)."""

    def __init__(self, path, threads=2):  # XNNPACK's thread pool is the runtime's own
        require('executorch')
        from executorch.runtime import Runtime
        self.method = Runtime.get().load_program(str(path)).load_method('forward')
        self.input = None

    def set_input(self, x):
        import torch
        self.input = [torch.from_numpy(np.ascontiguousarray(x, np.float32))]

    def invoke(self):
        return self.method.execute(self.input)

    def output(self, raw):
        return raw[0].numpy()


RUNNER = ExecuTorchModel
