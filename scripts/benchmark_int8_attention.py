#!/usr/bin/env python3
"""Int8 TFLite of single Mobile MQA blocks: full integer (what `export.py --int8` writes) against
float attention (`yolov5-mnv4-export --int8`: BATCH_MATMUL and SOFTMAX fp32, convs int8) and the
float block (`--float-blocks`: every op of the attention block fp32, the rest of the model int8).

For the first attention block of the /16 and of the /32 stage of Hybrid-M and Hybrid-L, at detector
inputs of 320 and 640, the block's attention branch (what the residual adds, as a model of its own):
latency of LiteRT's invoke() alone (XNNPACK, 2 threads, interleaved rounds, median), XNNPACK
partitions, and the signal-to-noise ratio of the branch against the fp32 PyTorch block's y - x, on
block inputs computed from real images (calibration: train images;
measured: 8 val images), with the near-uniform attention of perturbed weights and with peaked
attention (tests/helpers.py: BatchNorm statistics calibrated on the images, query/key scaled to a
trained-like logit spread). Needs the `tflite` extra.

    python scripts/benchmark_int8_attention.py [--sizes 320 640] [--variants hybrid_medium hybrid_large]
"""
import argparse
import copy
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
sys.path.insert(0, str(REPO / 'tests'))  # the weight perturbation and attention peaking of the tests
from yolov5_mnv4.bench import THREADS, interleaved, spread  # noqa: E402

COCO128 = REPO.parent / 'shared' / 'datasets' / 'coco128'
SHIPPED = REPO / 'tests' / 'data' / 'coco64'


def images(folder, split, size, n):
    """The first `n` images of the split, letterboxed as yolov5-mnv4-export calibrates: (n, 3, size, size)."""
    import numpy as np
    import torch

    from yolov5_mnv4.export.images import letterboxed_images
    return torch.from_numpy(np.concatenate(letterboxed_images(folder / 'images' / split, size, n)))


def block_inputs(model, stage, x):
    """Inputs of the first attention block of `model.stages[stage]` for the image batch x."""
    import torch

    from yolov5_mnv4.attention import MobileMultiQueryAttention
    block = next(m for m in model.stages[stage] if isinstance(m, MobileMultiQueryAttention))
    seen = []
    handle = block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        for i in range(len(x)):
            model(x[i:i + 1])
    handle.remove()
    return block, torch.cat(seen)


def keras_branch_model(block, shape):
    """A Keras model of the block's attention branch alone (what the residual adds): quantized on
    its own, so that its precision is not lost in the int8 steps of the residual sum it joins."""
    from yolov5_mnv4.export.tflite import import_tensorflow
    tf = import_tensorflow()
    from yolov5_mnv4.hosts.yolov5_keras import keras_block

    class Branch(tf.keras.layers.Layer):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def call(self, x):
            return self.layer.branch(x)

    inputs = tf.keras.Input(shape=shape, batch_size=1)
    return tf.keras.Model(inputs, Branch(keras_block(block))(inputs))


def measure(variant, stage, size, weights, train, val, reps):
    """{mode: (model, SNR dB)} for one block: 'full' and 'float attention' int8 TFLite models."""
    import numpy as np
    import torch

    from helpers import calibrate_batchnorm_, peak_attention_, perturb_
    from yolov5_mnv4 import MobileNetV4
    from yolov5_mnv4.export.tflite import TFLiteModel, import_tensorflow, snr_db
    from yolov5_mnv4.export.tflite_int8 import FLOAT_OPS, int8_tflite, xnnpack_partitions
    tf = import_tensorflow()
    torch.manual_seed(0)
    model = perturb_(MobileNetV4(variant)).eval()
    calibrate_batchnorm_(model, train[:8])
    block, x_train = block_inputs(model, stage, train)
    if weights == 'peaked':
        peak_attention_(block, x_train[:1])
    _, x_val = block_inputs(model, stage, val)
    fused = copy.deepcopy(block).eval()
    fused.fuse()
    nhwc = lambda t: np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())  # noqa: E731
    keras_model = keras_branch_model(fused, tuple(x_val.shape[2:]) + (x_val.shape[1],))
    calibration = [nhwc(x_train[i:i + 1]) for i in range(len(x_train))]
    with torch.no_grad():
        ref = nhwc(fused(x_val) - x_val)
    results = {}
    modes = (('full', (), ()), ('float attention', FLOAT_OPS, ()),
             ('float block', FLOAT_OPS, ('branch',)))  # every node of the block (the Keras layer 'branch')
    for mode, float_ops, nodes in modes:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        tflite = TFLiteModel(content=int8_tflite(converter, calibration, float_ops, io_type='float32', float_nodes=nodes), threads=THREADS)
        got = np.concatenate([tflite(nhwc(x_val[i:i + 1])) for i in range(len(x_val))])
        tflite.set_input(nhwc(x_val[:1]))
        results[mode] = (tflite, snr_db(got, ref), xnnpack_partitions(tflite.interpreter)[0])
    times = interleaved({mode: r[0].invoke for mode, r in results.items()}, reps, 5)
    return {mode: (spread(times[mode])[0], snr, parts) for mode, (_, snr, parts) in results.items()}, x_val.shape


def main(argv=None):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[320, 640])
    parser.add_argument('--variants', nargs='+', default=['hybrid_medium', 'hybrid_large'])
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--data', type=Path, default=COCO128 if COCO128.is_dir() else SHIPPED)
    args = parser.parse_args(argv)
    lines = ['| variant | block | input | map | attention | ms: full int8 / float attention / float block | '
             'XNNPACK partitions | branch SNR dB |', '|' + '---|' * 8]
    for size in args.sizes:
        train, val = images(args.data, 'train2017', size, 32), images(args.data, 'val2017', size, 8)
        for variant in args.variants:
            for stage in (3, 4):
                for weights in ('perturbed', 'peaked'):
                    print(f'benchmark_int8_attention: {variant} /{2 ** (stage + 1)} at {size}, {weights}', flush=True)
                    r, shape = measure(variant, stage, size, weights, train, val, args.reps)
                    full, flt, blk = r['full'], r['float attention'], r['float block']
                    lines.append(f'| {variant} | /{2 ** (stage + 1)} | {size} | {shape[2]}x{shape[3]}x{shape[1]} | '
                                 f'{weights} | {full[0]:.2f} / {flt[0]:.2f} / {blk[0]:.2f} | '
                                 f'{full[2]} / {flt[2]} / {blk[2]} | {full[1]:.1f} / {flt[1]:.1f} / {blk[1]:.1f} |')
    print(f'\nint8 TFLite per attention block (LiteRT + XNNPACK, {THREADS} threads, invoke() alone, median of '
          f'{args.reps}; SNR against y - x of fp32 PyTorch on 8 val images of {args.data.name}):\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
