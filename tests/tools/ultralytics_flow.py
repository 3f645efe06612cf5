"""One MobileNetV4 model through the Ultralytics package, end to end, for tests/test_ultralytics.py:
train one epoch through `yolov5-mnv4 yolo train`, or two through the package's trainer from Python,
interrupted after the first and resumed from last.pt; reload the
checkpoint with safe loading on (and show that it is refused without the plugin), validate and
predict with it, export it with `model.export()` (`litert-int8`: quantize=8, calibrated on the
images) and compare each export with the fused PyTorch model on two real images, through the
package's own AutoBackend. The exports are made from a copy whose outputs depend on the image
(BatchNorm statistics of the embedded train images, attention peaked, class scores where the sigmoid
is steep); the result says how far those outputs move between the two images, and how far the same
exports are from the PyTorch model with a deliberate bug (the negative controls of the bounds).
Prints one `RESULT {json}` line.

    python tests/tools/ultralytics_flow.py --route cli --config yolo11n-mnv4-conv-s.yaml --out /tmp/flow
    python tests/tools/ultralytics_flow.py --weights hybrid.pt --formats onnx litert --imgsz 128 --out /tmp/flow
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))  # helpers, when run as a script
from helpers import drop_residuals_, input_dependent_, real_images, same_padding_  # noqa: E402
from yolov5_mnv4.export.images import letterboxed  # noqa: E402

SAFE_ENV = {'ULTRALYTICS_SAFE_LOAD': '1'}


def offline_env(**extra):
    from yolov5_mnv4.hosts.offline import offline_env as base
    env = base()
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)  # safe loading means weights_only loads
    env.update(extra)
    return env


def prepare_data(work):
    """The embedded images as the package's data YAML, and the first two val images."""
    from yolov5_mnv4.resources import dataset_yaml, embedded_dataset
    data = dataset_yaml(embedded_dataset(), work)
    return data, sorted((work / 'dataset' / 'images' / 'val2017').glob('*.jpg'))[:2]


def run(cmd, env, log):
    result = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=900)
    log.write_text(result.stdout + result.stderr)
    return result.returncode, result.stdout + result.stderr


def train(args, data, work):
    common = dict(data=str(data), epochs=1, imgsz=args.imgsz, batch=4, workers=0, plots=False,
                  project=str(work / 'runs'), name='train', exist_ok=True, seed=0, deterministic=False)
    if args.route == 'cli':
        code, out = run([sys.executable, '-m', 'yolov5_mnv4', 'yolo', 'train', f'model={args.config}',
                         *[f'{k}={v}' for k, v in common.items()]], offline_env(), work / 'train.log')
        assert code == 0, out[-3000:]
    else:  # two epochs, interrupted after the first one's checkpoint, then resumed from last.pt
        # isort: off
        import yolov5_mnv4  # noqa: F401 (before the package builds a model)
        from ultralytics import YOLO
        # isort: on

        def interrupt(trainer):
            if trainer.epoch == 0:
                raise Interrupted

        model = YOLO(args.config)
        model.add_callback('on_model_save', interrupt)
        try:
            model.train(**{**common, 'epochs': 2})
        except Interrupted:
            pass
        YOLO(work / 'runs' / 'train' / 'weights' / 'last.pt').train(resume=True)
    return work / 'runs' / 'train' / 'weights' / 'best.pt'


class Interrupted(Exception):
    """Stops a training run right after a checkpoint is written, as a killed run would."""


def epochs_logged(work):
    """Rows of the training's results.csv (one per epoch, resumed epochs included)."""
    return len((work / 'runs' / 'train' / 'results.csv').read_text().strip().splitlines()) - 1


SAFE_RELOAD = '''
import sys, yolov5_mnv4
from ultralytics import YOLO
model = YOLO(sys.argv[1])
metrics = model.val(data=sys.argv[2], imgsz=int(sys.argv[3]), batch=4, workers=0, plots=False, verbose=False)
results = model.predict(sys.argv[4], imgsz=int(sys.argv[3]), verbose=False)
print('SAFE', type(model.model.model[0]).__name__, round(float(metrics.box.map50), 4), len(results[0].boxes))
'''
UNSAFE_WITHOUT_PLUGIN = '''
import sys
from ultralytics.nn.tasks import torch_safe_load
try:
    torch_safe_load(sys.argv[1], safe_only=True)
    print('REFUSED no')
except TypeError as err:
    print('REFUSED yes', str(err).splitlines()[0][:160])
'''


def reload_checks(args, best, data, image, work):
    """Safe-loading reloads: val + predict with the plugin (CLI or Python), refusal without it."""
    env = offline_env(**SAFE_ENV)
    out = {}
    if args.route == 'cli':
        code, text = run([sys.executable, '-m', 'yolov5_mnv4', 'yolo', 'val', f'model={best}', f'data={data}',
                          f'imgsz={args.imgsz}', 'batch=4', 'workers=0', 'plots=False',
                          f'project={work / "runs"}', 'name=val', 'exist_ok=True'], env, work / 'val.log')
        out['cli_val'] = code == 0 and 'all ' in text
        code, text = run([sys.executable, '-m', 'yolov5_mnv4', 'yolo', 'predict', f'model={best}', f'source={image}',
                          f'imgsz={args.imgsz}', f'project={work / "runs"}', 'name=predict', 'exist_ok=True'],
                         env, work / 'predict.log')
        out['cli_predict'] = code == 0 and any((work / 'runs' / 'predict').glob('*.jpg'))
    code, text = run([sys.executable, '-c', SAFE_RELOAD, best, data, args.imgsz, image], env, work / 'safe.log')
    safe = [line.split() for line in text.splitlines() if line.startswith('SAFE ')]
    out['safe_reload'] = safe[-1][1] if code == 0 and safe else f'failed: {text[-1500:]}'
    # without the plugin: its start-up hook (installed with it) switched off, nothing imports it
    code, text = run([sys.executable, '-c', UNSAFE_WITHOUT_PLUGIN, best], {**env, 'YOLOV5_MNV4_STARTUP': '0'},
                     work / 'refused.log')
    refused = [line for line in text.splitlines() if line.startswith('REFUSED ')]
    out['refused_without_plugin'] = refused[-1] if refused else f'no answer: {text[-1500:]}'
    # the same plain process with the plugin's start-up hook on (as installed): it registers, loads safely
    code, text = run([sys.executable, '-c', UNSAFE_WITHOUT_PLUGIN, best], env, work / 'hook-only.log')
    loaded = [line for line in text.splitlines() if line.startswith('REFUSED ')]
    out['safe_with_start_up_hook_only'] = loaded[-1] if loaded else f'no answer: {text[-1500:]}'
    return out


def boxes_and_scores(y, end2end):
    """(boxes, scores) of a detector output: (1, 4 + nc, anchors), or (1, k, 6) for an end-to-end head."""
    y = np.asarray(y, np.float64)[0]
    return (y[:, :4], y[:, 4:5]) if end2end else (y[:4].T, y[4:].T)


# Deliberate bugs for the negative controls: the fused PyTorch model with one of them is what a broken
# export would compute; each export is compared with it as with the right model.
BUGS = {'same-padding': same_padding_, 'last-residual': lambda m: drop_residuals_(m, -1)}


def prepared_copy(best, path, imgsz):
    """`best` made fit for parity checks, saved to `path`: BatchNorm statistics of the embedded train
    images (a 1-epoch model's outputs barely depend on its input: 1.7e-6 between two images, measured),
    attention peaked where it has any, and each class logit centred on those images (its bias moved
    by minus its mean, in every class branch of the Detect, one-to-one branch included), so that scores
    are compared where the sigmoid is steep, as a trained model's are, and not where every score
    rounds to the same tiny value (a 1-epoch model's) or to 1."""
    import torch
    ckpt = torch.load(best, map_location='cpu', weights_only=False)
    model = input_dependent_(ckpt['model'].float(), imgsz)
    images = real_images(imgsz, 8, 'train2017')  # what input_dependent_ calibrated on
    detect = model.model[-1]
    logits = [seq[-1] for branch in (detect.cv3, getattr(detect, 'one2one_cv3', None) or []) for seq in branch]
    means = {}
    hooks = [conv.register_forward_hook(lambda m, args, out: means.__setitem__(m, out.mean((0, 2, 3))))
             for conv in logits]
    with torch.no_grad():
        model(images)
        for conv, mean in means.items():
            conv.bias -= mean
    for hook in hooks:
        hook.remove()
    ckpt['model'] = model.half()
    torch.save(ckpt, path)
    return path


def export_parity(args, best, images, data):
    """On two real images: {format: (largest box error / largest box coordinate, largest score error)}
    of each export, made from `prepared_copy(best)`; for each `<format>-int8` in args.formats,
    {format: per-level score SNR (dB, P3/P4/P5) against the fused PyTorch model}; the reference's
    (boxes, scores) change between the two images; and the same measures against the reference with
    each of BUGS, {format: {bug: measure}}."""
    import copy

    import torch

    # isort: off
    import yolov5_mnv4  # noqa: F401
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    # isort: on
    from yolov5_mnv4.export.tflite import level_snr_db

    def output(backend, x):
        y = backend(x)
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.detach().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)

    best = prepared_copy(best, best.with_name('prepared.pt'), args.imgsz)
    xs = [torch.from_numpy(letterboxed(image, args.imgsz)) for image in images]
    reference = AutoBackend(str(best), device=torch.device('cpu'), fuse=True, verbose=False)
    end2end = bool(getattr(reference.model, 'end2end', False))
    with torch.no_grad():
        refs = [output(reference, x) for x in xs]
        broken = {}
        for bug, make in BUGS.items():
            model, hook = make(copy.deepcopy(reference.model))
            broken[bug] = [output(model.eval(), x) for x in xs]
            if hook:
                hook.remove()

    def errors(got, ref):
        boxes, scores = zip(*(boxes_and_scores(y, end2end) for y in (got, ref)))
        return (float(np.abs(boxes[0] - boxes[1]).max() / np.abs(boxes[1]).max()),
                float(np.abs(scores[0] - scores[1]).max()))

    def snr(got, ref):
        scores = [boxes_and_scores(y, end2end)[1] for y in (got, ref)]
        return [float(v) for v in level_snr_db(scores[0][None], scores[1][None], (8, 16, 32), 1,
                                               (args.imgsz, args.imgsz))]

    parity, int8, controls = {}, {}, {}
    for name in args.formats:
        fmt, _, precision = name.partition('-')
        if precision == 'int8':  # the package's calibration on the data's images
            assert not end2end, 'int8 agreement is measured on per-anchor outputs, not top-k detections'
            exported = YOLO(str(best)).export(format=fmt, imgsz=args.imgsz, quantize=8, data=str(data))
        else:
            exported = YOLO(str(best)).export(format=fmt, imgsz=args.imgsz)
        backend = AutoBackend(exported, device=torch.device('cpu'), verbose=False)
        outs = [output(backend, x) for x in xs]

        def worst(against):  # over the images: the lowest SNR per level, or the largest errors
            results = zip(*((snr if precision == 'int8' else errors)(o, r) for o, r in zip(outs, against)))
            return [min(v) if precision == 'int8' else max(v) for v in results]

        (int8 if precision == 'int8' else parity)[name] = worst(refs)
        controls[name] = {bug: worst(refs_bug) for bug, refs_bug in broken.items()}
    return {'parity': parity, 'int8_snr_db': int8, 'controls': controls, 'input_change': errors(refs[1], refs[0]),
            'max_score': float(max(boxes_and_scores(r, end2end)[1].max() for r in refs))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--route', choices=('cli', 'trainer'))
    parser.add_argument('--config')
    parser.add_argument('--weights', type=Path, help='export this checkpoint only (no training, no reloads)')
    parser.add_argument('--formats', nargs='*', default=['onnx', 'ncnn'])
    parser.add_argument('--imgsz', type=int, default=96)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('--save-result', type=Path, help='also write the result, with the command, date and '
                        'versions, to this JSON file (docs/results/ultralytics_parity_*.json, for the docs)')
    args = parser.parse_args(argv)
    os.environ.update({k: v for k, v in offline_env().items() if k not in os.environ})
    os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, images = prepare_data(work)
    image = images[0]
    if args.weights:
        best, result = args.weights.resolve(), {}
    elif args.route and args.config:
        best = train(args, data, work)
        result = {'best': str(best), 'epochs': epochs_logged(work), **reload_checks(args, best, data, image, work)}
    else:
        parser.error('give --route and --config, or --weights')
    result.update(export_parity(args, best, images, data))
    print('RESULT', json.dumps(result))
    if args.save_result:
        save_result(result, args.save_result, argv)


def save_result(result, path, argv):
    import platform
    import time

    import torch
    import ultralytics
    command = 'python tests/tools/ultralytics_flow.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    command = command.replace(f'{REPO}/', '')  # paths inside the repository as a clone has them
    record = {'command': command, 'date': time.strftime('%Y-%m-%d'),
              'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, '
                         f'ultralytics {ultralytics.__version__}',
              'result': {k: v for k, v in result.items() if k != 'best'}}
    Path(path).write_text(json.dumps(record, indent=1) + '\n')


if __name__ == '__main__':
    sys.exit(main())
