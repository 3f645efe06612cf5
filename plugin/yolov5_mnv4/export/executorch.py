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
