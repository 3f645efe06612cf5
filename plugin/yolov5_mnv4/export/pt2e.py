"""PT2E int8 (torchao's quantize_pt2e with ExecuTorch's XNNPACK quantizer): the one quantizer of the
package (post-training calibration for ExecuTorch, quantization-aware training for ExecuTorch and
ONNX), and the graph-level switches that quantization-aware training needs.

Host-free: a model is any torch module; which of its submodules stay float is named by the
`nn_module_stack` names torch.export records ('model.24.m.0' for YOLOv5's first Detect conv).

What this module handles, each a trap of PT2E QAT on a YOLO detector:
- `prepare_qat_pt2e` rebuilds every conv + BatchNorm with eps 1e-5 and momentum 0.1, while YOLOv5 and
  the Ultralytics package use 1e-3 and 0.03 (pytorch/ao#2980): `match_batchnorm_eps` moves the
  difference into the running variance before export (the eager model computes the same), and
  `set_batchnorm_momentum` puts the momentum back into the prepared graph;
- `model.train()` / `model.eval()` do nothing on an exported graph: `train_mode` uses torchao's
  move_exported_model_to_train / _eval (which rewrite the batch_norm nodes with momentum 0.1 again:
  train_mode writes the model's own back);
- `freeze` stops the observers and BatchNorm statistics late in a run (the graph's batch_norm nodes
  get training=False, so they normalise with the running statistics, as torchao's tutorial does).
"""
BATCHNORM_EPS = 1e-5  # what prepare_qat_pt2e's fused conv-BatchNorm pattern computes with
INT8_WEIGHTS = (-127, 127)
INT7_WEIGHTS = (-63, 63)  # ONNX Runtime on x86 without VNNI: int8 x int8 sums overflow 16 bits (INT8.md)


def quantizer(float_modules=(), qat=False, weight_bits=8):
    """ExecuTorch's XNNPACK quantizer (int8 activations, per-channel symmetric int8 weights; with
    `qat`, fake quantization with moving-average observers), leaving float the ops whose innermost
    module is named in `float_modules` (their own ops, not their submodules'). `weight_bits` 7 keeps
    weights in [-63, 63]."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    if weight_bits not in (7, 8):
        raise ValueError(f'weight_bits {weight_bits}: 8 or 7')
    floats = frozenset(float_modules)

    class Quantizer(XNNPACKQuantizer):
        def annotate(self, graph_module):
            # XNNPACK's quantizer annotates every cat and propagates ranges through views whatever
            # its module filters say; dropping the annotations afterwards is what keeps a module float
            graph_module = super().annotate(graph_module)
            for node in graph_module.graph.nodes:
                stack = list(node.meta.get('nn_module_stack', {}).values())
                if stack and stack[-1][0] in floats:
                    node.meta.pop('quantization_annotation', None)
            _drop_orphaned_shares(graph_module)
            return graph_module

    low, high = INT7_WEIGHTS if weight_bits == 7 else INT8_WEIGHTS
    return Quantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=True, is_qat=qat, weight_qmin=low, weight_qmax=high))


def _drop_orphaned_shares(graph_module):
    """Drop the annotations that share the range of a node left float (a view after a float conv
    shares its input's range): prepare would look that range up and fail."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    def annotated(edge_or_node):
        nodes = edge_or_node if isinstance(edge_or_node, tuple) else (edge_or_node,)
        return all('quantization_annotation' in n.meta for n in nodes)

    changed = True
    while changed:
        changed = False
        for node in graph_module.graph.nodes:
            note = node.meta.get('quantization_annotation')
            if note is None:
                continue
            specs = list(note.input_qspec_map.values()) + [note.output_qspec]
            if any(isinstance(q, SharedQuantizationSpec) and not annotated(q.edge_or_node) for q in specs):
                node.meta.pop('quantization_annotation')
                changed = True


def calibrate(program, calibration, float_modules=(), weight_bits=8):
    """Post-training int8, before conversion: the prepared graph of an exported program with its
    activation ranges observed on `calibration` (NCHW float images)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    images = list(calibration)
    if not images:
        raise ValueError('yolov5-mnv4: int8 needs calibration images; none were given')
    prepared = prepare_pt2e(program.module(), quantizer(float_modules, weight_bits=weight_bits))
    with torch.no_grad():
        for im in images:
            prepared(torch.as_tensor(im))
    return prepared


def calibrated(program, calibration, float_modules=(), weight_bits=8):
    """Post-training int8: the converted (quantize/dequantize) graph module of an exported program,
    its activation ranges observed on `calibration`."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    return convert_pt2e(calibrate(program, calibration, float_modules, weight_bits))


def batchnorms(model):
    import torch
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def match_batchnorm_eps(model, eps=BATCHNORM_EPS):
    """Give every BatchNorm of `model` the eps that PT2E's QAT pattern computes with, adding the
    difference to its running variance: the eager model's output is unchanged (to float rounding),
    and the prepared graph equals it. Returns {module: its momentum} for set_batchnorm_momentum."""
    import torch
    momenta = {}
    with torch.no_grad():
        for m in batchnorms(model):
            if m.running_var is not None:
                m.running_var.add_(m.eps - eps).clamp_(min=0)
            m.eps = eps
            momenta[m] = m.momentum
    return momenta


TRAINING, MOMENTUM = 5, 6  # the arguments of aten.batch_norm, _native_batch_norm_legit and cudnn_batch_norm


def _batchnorm_nodes(graph_module):
    import torch
    ops = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit.default,
           torch.ops.aten.cudnn_batch_norm.default}
    return [n for n in graph_module.graph.nodes if n.op == 'call_function' and n.target in ops]


def set_batchnorm_momentum(graph_module, momentum):
    """Put `momentum` (the model's own, e.g. YOLOv5's 0.03) back into every batch_norm node of a
    prepared graph (prepare_qat_pt2e writes 0.1). Returns how many nodes it changed."""
    nodes = _batchnorm_nodes(graph_module)
    for node in nodes:
        args = list(node.args)
        args[MOMENTUM] = momentum
        node.args = tuple(args)
    graph_module.recompile()
    return len(nodes)


def batchnorm_momenta(graph_module):
    """The momentum of every batch_norm node of a graph, in graph order."""
    return [n.args[MOMENTUM] for n in _batchnorm_nodes(graph_module)]


def export_for_training(model, example, dynamic_batch=True):
    """The graph module of `model` in training mode (BatchNorm in batch statistics; an `if
    self.training` branch, such as a YOLO Detect's, frozen to its training side), batch size dynamic."""
    import torch
    model.train()
    shapes = ({0: torch.export.Dim('batch', min=1, max=1024)},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=shapes).module()


def prepare_qat(model, example, float_modules=(), weight_bits=8):
    """The fake-quantized training graph of `model` (eager, train mode): BatchNorm eps matched first,
    its momentum restored after. `model` itself is left with the matched eps (same outputs)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    momenta = set(match_batchnorm_eps(model).values())
    graph = export_for_training(model, example)
    prepared = prepare_qat_pt2e(graph, quantizer(float_modules, qat=True, weight_bits=weight_bits))
    if len(momenta) == 1 and None not in momenta:
        prepared.batchnorm_momentum = momenta.pop()  # train_mode writes it back after each switch
        set_batchnorm_momentum(prepared, prepared.batchnorm_momentum)
    return prepared


def train_mode(graph_module, training=True):
    """model.train() / model.eval() for an exported graph (BatchNorm and dropout switch)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    (move_exported_model_to_train if training else move_exported_model_to_eval)(graph_module)
    if getattr(graph_module, 'batchnorm_momentum', None) is not None:  # the switch rewrites the nodes with 0.1
        set_batchnorm_momentum(graph_module, graph_module.batchnorm_momentum)
    return graph_module


def fake_quant(graph_module, on=True):
    """Switch fake quantization of a prepared graph on or off (off: it computes in float)."""
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant
    graph_module.apply(enable_fake_quant if on else disable_fake_quant)
    return graph_module


def freeze(graph_module):
    """Freeze the observers (quantization ranges stop moving) and the BatchNorm statistics (the
    batch_norm nodes normalise with their running statistics from now on, in training too)."""
    from torchao.quantization.pt2e import disable_observer
    graph_module.apply(disable_observer)
    for node in _batchnorm_nodes(graph_module):
        args = list(node.args)
        args[TRAINING] = False
        node.args = tuple(args)
    graph_module.recompile()
    return graph_module


def convert(prepared, fold=True):
    """The int8 graph (quantize/dequantize ops; BatchNorm folded into the convs) of a prepared one
    (left as it is), in eval mode, with the observers' own ranges (nothing recalibrated). `fold`
    False keeps the weights float with their quantize op (what litert-torch converts)."""
    import copy

    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    train_mode(prepared, False)
    converted = convert_pt2e(copy.deepcopy(prepared), fold_quantize=fold)
    allow_exported_model_train_eval(converted)  # a module that holds it may call .eval()
    return converted


def quantized_ops(graph_module):
    """{op name: count} of the ops of a graph, for checking what is int8 (quantize/dequantize pairs)."""
    counts = {}
    for node in graph_module.graph.nodes:
        if node.op == 'call_function':
            name = getattr(node.target, '__name__', str(node.target))
            counts[name] = counts.get(name, 0) + 1
    return counts
