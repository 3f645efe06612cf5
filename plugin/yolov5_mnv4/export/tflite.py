"""Run YOLOv5's TensorFlow exports (SavedModel, TFLite fp32/fp16/int8) outside YOLOv5, with outputs
laid out as the PyTorch model's: for parity checks and the edge benchmark.

TensorFlow (or ai-edge-litert, for TFLite alone) is imported when a model is loaded, never at import.
"""
from pathlib import Path

import numpy as np

from .formats import Runner


def import_tensorflow():
    """Import TensorFlow, after triton where torch has it: importing triton (which torchvision.ops
    pulls in through torch's CUDA builds) after TensorFlow 2.21 segfaults, before it is fine."""
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    import tensorflow
    return tensorflow


def tflite_interpreter_class():
    """LiteRT's interpreter (ai-edge-litert, which runs XNNPACK), else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = import_tensorflow().lite.Interpreter
    return Interpreter


class TFLiteModel(Runner):
    """A .tflite detector as a function: float NHWC input in [0, 1] -> float output.

    Quantized (uint8/int8) inputs and outputs are (de)quantized with the model's own parameters, as
    YOLOv5's DetectMultiBackend does.
    """

    def __init__(self, path=None, threads=2, content=None):
        """From a .tflite file, or from its bytes as `content`."""
        source = {'model_content': content} if content is not None else {'model_path': str(path)}
        self.interpreter = tflite_interpreter_class()(**source, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()

    @property
    def quantized(self):
        return self.input['dtype'] in (np.uint8, np.int8)

    def set_input(self, x):
        """Feed a float NHWC batch in [0, 1], quantized here if the model takes integers."""
        x = np.asarray(x, np.float32)
        if self.quantized:
            scale, zero = self.input['quantization']
            info = np.iinfo(self.input['dtype'])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.input['dtype'])
        self.interpreter.set_tensor(self.input['index'], x)

    def invoke(self):
        """The runtime's call alone (what the edge benchmark times): input set, outputs left in place."""
        self.interpreter.invoke()

    def get_outputs(self):
        results = []
        for out in self.outputs:
            y = self.interpreter.get_tensor(out['index'])
            if out['dtype'] in (np.uint8, np.int8):
                scale, zero = out['quantization']
                y = (y.astype(np.float32) - zero) * scale
            results.append(y)
        return results[0] if len(results) == 1 else results

    def output(self, raw):
        return self.get_outputs()


class SavedModel:
    """A YOLOv5 `_saved_model` folder as a function: float NHWC input in [0, 1] -> float output."""

    def __init__(self, path):
        self.tf = import_tensorflow()
        self.model = self.tf.saved_model.load(str(path))

    def __call__(self, x):
        y = self.model(self.tf.constant(np.asarray(x, np.float32)))
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.numpy()


class GraphDef:
    """A frozen GraphDef `.pb` (export.py --include pb) as a function: float NHWC input in [0, 1] -> float
    output. Its input is the placeholder `x:0`; its output the one node that no other node reads."""

    def __init__(self, path):
        tf = self.tf = import_tensorflow()
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(Path(path).read_bytes())
        read = {name.split(':')[0].lstrip('^') for node in graph_def.node for name in node.input}
        outputs = [f'{node.name}:0' for node in graph_def.node if node.name not in read and node.op != 'NoOp']
        imported = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=''), [])
        graph = imported.graph
        self.function = imported.prune(graph.as_graph_element('x:0'), [graph.as_graph_element(o) for o in outputs])

    def __call__(self, x):
        return self.function(self.tf.constant(np.asarray(x, np.float32)))[0].numpy()


def builtin_tflite(converter, half=False):
    """The .tflite bytes `converter` (a `tf.lite.TFLiteConverter` of a float model) gives on TFLite's
    builtin operators (no Flex kernels): fp32 weights, or fp16 weights with `half` (export.py's default)."""
    tf = import_tensorflow()
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if half:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def fp32_tflite_from_saved_model(saved_model, out):
    """Convert an exported SavedModel to a plain fp32 .tflite (export.py's default keeps fp16 weights)."""
    tf = import_tensorflow()
    Path(out).write_bytes(builtin_tflite(tf.lite.TFLiteConverter.from_saved_model(str(saved_model))))
    return Path(out)


def to_torch_layout(y, strides, anchors_per_cell, imgsz):
    """YOLOv5's TF Detect output (B, N, 5 + nc) in PyTorch's Detect layout.

    The TF Detect orders each level's rows by (cell, anchor) where PyTorch orders them by (anchor,
    cell), and divides xywh by the image width/height; this undoes both.
    """
    h, w = imgsz
    levels = []
    for s, level in zip(strides, output_levels(y, strides, anchors_per_cell, imgsz)):
        cells = (h // int(s)) * (w // int(s))
        level = level.reshape(y.shape[0], cells, anchors_per_cell, -1)
        levels.append(level.transpose(0, 2, 1, 3).reshape(y.shape[0], cells * anchors_per_cell, -1))
    out = np.concatenate(levels, axis=1).astype(np.float32)
    out[..., :4] *= np.array([w, h, w, h], np.float32)
    return out


def output_levels(y, strides, anchors_per_cell, imgsz):
    """YOLOv5's (B, N, 5 + nc) output split into its levels (one per stride), in either layout."""
    h, w = imgsz
    sizes = [(h // int(s)) * (w // int(s)) * anchors_per_cell for s in strides]
    if sum(sizes) != y.shape[1]:
        raise ValueError(f'{y.shape[1]} output rows, expected {sum(sizes)} for strides {list(strides)} at {imgsz}')
    return np.split(y, np.cumsum(sizes)[:-1], axis=1)


def snr_db(got, ref):
    """Signal-to-noise ratio of `got` against `ref` in dB: 10 log10(sum ref^2 / sum (got - ref)^2)."""
    noise = float(np.sum((np.asarray(got, np.float64) - ref) ** 2))
    return float('inf') if noise == 0 else 10 * np.log10(float(np.sum(np.asarray(ref, np.float64) ** 2)) / noise)


def level_snr_db(got, ref, strides, anchors_per_cell, imgsz):
    """Signal-to-noise (dB) of each output level of `got` against `ref` (same layout)."""
    return [snr_db(g, r) for g, r in zip(output_levels(got, strides, anchors_per_cell, imgsz),
                                         output_levels(ref, strides, anchors_per_cell, imgsz))]
