"""Int8 TFLite models whose attention stays in float: every conv int8, the attention's matmuls and
softmax fp32. Knows no host: it takes a TFLite converter of the float model (YOLOv5's Keras model, built as
export.py builds it in `yolov5_mnv4.cli.export`, or its SavedModel) and calibration images.

Why: in ai-edge-litert's XNNPACK, BATCH_MATMUL with two non-constant inputs, SOFTMAX and GELU
have no int8 kernel. A full-integer hybrid (what `export.py --int8` writes) therefore leaves
XNNPACK at every attention block (Hybrid-M's detector: 12 delegate partitions against Conv-M's 4)
and runs those ops in TFLite's reference int8 kernels; and int8 softmax outputs come in steps of
1/256 while a query's 400 keys at 640 px weigh ~1/400 each, so near-uniform attention is mostly
rounding. Kept in float, the attention runs inside XNNPACK with the convs (one partition per
block run, QUANTIZE/DEQUANTIZE at its edges) and keeps its precision.

The Detect (YOLOv5's Keras `TFDetect`: its three output convs and the box decoding) stays in float
too, as the ExecuTorch and QAT routes keep it. Quantized with the rest, as `export.py --int8` does, the
decoding loses the boxes: TensorFlow 2.21's quantizer gives the square in `sigmoid(y) ** 2 * anchor`
the scale of the product that follows it (0.36 for values in [0, 1], measured on yolov5n), so every
width and height comes out 0 or in steps of a third of an anchor, and the testbed's mAP50-95 drops from
0.420 to 0.009 (yolov5n) and 0.441 to 0.012 (Conv-S); with the Detect in float: 0.406 and 0.438.

Uses TensorFlow's MLIR quantizer with a denylist of op types, the mechanism behind TFLite's
documented selective quantization (`tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=)`),
called directly so that the model keeps uint8 input and output as `export.py --int8` writes them.
"""
FLOAT_OPS = ('BATCH_MATMUL', 'SOFTMAX', 'GELU')  # op types without an XNNPACK int8 kernel
# TFLite node names of the Keras attention layers (tf_layers.TFMobileMultiQueryAttention's scope):
# with float_nodes=ATTENTION_NODES the whole attention blocks stay fp32 (their convs too).
ATTENTION_NODES = ('tf_mobile_multi_query_attention',)
# TFLite node names of YOLOv5's Keras Detect (models/tf.py's TFDetect scope): its convs and decoding
DETECT_NODES = ('tf_detect',)


def int8_tflite(converter, calibration, float_ops=FLOAT_OPS, io_type='uint8', float_nodes=DETECT_NODES):
    """The int8 .tflite (bytes) that `converter` (a `tf.lite.TFLiteConverter` of the float model:
    from_keras_model or from_saved_model) gives, calibrated on `calibration` (NHWC float32 batches in
    [0, 1]); ops of the types in `float_ops`, and nodes whose names contain one of `float_nodes` (by
    default the Detect's), stay fp32. `float_ops=(), float_nodes=()` gives the full-integer model that
    `export.py --int8` writes.
    `io_type`: 'uint8' (export.py's), 'int8' or 'float32'."""
    from .tflite import import_tensorflow
    tf = import_tensorflow()
    from tensorflow.lite.python import convert  # the MLIR quantizer: no public entry takes a denylist

    images = list(calibration)
    if not images:
        raise ValueError('yolov5-mnv4: int8 needs calibration images; none were given')
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([im] for im in images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # float model + recorded ranges; quantized below
    calibrated = converter.convert()
    nodes = node_names(calibrated, float_nodes) if float_nodes else None
    io = {'uint8': tf.uint8, 'int8': tf.int8, 'float32': tf.float32}[io_type]
    return convert.mlir_quantize(calibrated, input_data_type=io, output_data_type=io,
                                 disable_per_channel=converter._experimental_disable_per_channel,
                                 denylisted_ops=list(float_ops) or None, denylisted_nodes=nodes)


def node_names(content, parts):
    """Names of the output tensors of a .tflite's nodes whose names contain one of `parts`."""
    from .tflite import tflite_interpreter_class
    interpreter = tflite_interpreter_class()(model_content=content)
    names = {t['index']: t['name'] for t in interpreter.get_tensor_details()}
    return [names[op['outputs'][0]] for op in interpreter._get_ops_details()
            if len(op['outputs']) and any(part in names[op['outputs'][0]] for part in parts)]


def op_types(interpreter, skip=()):
    """{op type: {'float32' | 'int8' | ...: count}} of a TFLite model's own nodes (not delegates), by
    the type of each node's first output; nodes whose output names contain one of `skip` are left out."""
    details = {t['index']: t for t in interpreter.get_tensor_details()}
    counts = {}
    for op in interpreter._get_ops_details():
        if op['op_name'] == 'DELEGATE' or not len(op['outputs']):
            continue
        if any(part in details[op['outputs'][0]]['name'] for part in skip):
            continue
        kind = details[op['outputs'][0]]['dtype'].__name__
        counts.setdefault(op['op_name'], {}).setdefault(kind, 0)
        counts[op['op_name']][kind] += 1
    return counts


def xnnpack_partitions(interpreter):
    """(number of delegate partitions, {op type: count} of the nodes left outside them) of an
    interpreter whose tensors are allocated (with its default XNNPACK delegate applied).

    TFLite lists a model's nodes and then one DELEGATE node per partition; a node stays outside when
    its outputs feed a partition, a node outside, or the graph's outputs without coming out of a
    partition. Reads TFLite's node list (`_get_ops_details`), which has no public equivalent.
    """
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op['op_name'] == 'DELEGATE']
    delegate_outputs = {t for d in delegates for t in d['outputs']}
    delegate_inputs = {t for d in delegates for t in d['inputs']}
    graph_outputs = {out['index'] for out in interpreter.get_output_details()}
    nodes = [op for op in ops if op['op_name'] != 'DELEGATE']
    consumers = {}
    for op in nodes:
        for t in op['inputs']:
            consumers.setdefault(t, []).append(op['index'])
    inside = {}
    for op in reversed(nodes):  # nodes come in execution order: consumers are decided first
        outputs = list(op['outputs'])
        if any(t in delegate_outputs for t in outputs):
            inside[op['index']] = True
        elif any(t in graph_outputs or t in delegate_inputs for t in outputs):
            inside[op['index']] = False
        else:
            inside[op['index']] = all(inside.get(c, True) for t in outputs for c in consumers.get(t, []))
    outside = {}
    for op in nodes:
        if not inside[op['index']]:
            outside[op['op_name']] = outside.get(op['op_name'], 0) + 1
    return len(delegates), outside
