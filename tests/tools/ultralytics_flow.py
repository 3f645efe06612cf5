"""One MobileNetV4 model through the Ultralytics package, end to end, for tests/test_ultralytics.py:
train one epoch through `yolov5-mnv4 yolo train`, or two through the package's trainer from Python,
interrupted after the first and resumed from last.pt; reload the
checkpoint with safe loading on (and show that it is refused without the plugin), validate and
predict with it, export it with `model.export()` (`litert-int8`: quantize=8, calibrated on the
images) and compare each export with the fused PyTorch model on a real image, through the package's own AutoBackend. Prints one `RESULT {json}` line.

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
SAFE_ENV = {'ULTRALYTICS_SAFE_LOAD': '1'}


def offline_env(**extra):
    from yolov5_mnv4.offline import offline_env as base
    env = base()
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)  # safe loading means weights_only loads
    env.update(extra)
    return env


def prepare_data(work):
    """The embedded images as the package's data YAML, and the first val image."""
    from yolov5_mnv4.resources import embedded_dataset
    from yolov5_mnv4.ultralytics_host import data_yaml
    data = data_yaml(embedded_dataset(), work)
    return data, sorted((work / 'dataset' / 'images' / 'val2017').glob('*.jpg'))[0]


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
        import yolov5_mnv4  # noqa: F401 (before the package builds a model)
        from ultralytics import YOLO

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
    code, text = run([sys.executable, '-c', UNSAFE_WITHOUT_PLUGIN, best], env, work / 'refused.log')
    refused = [line for line in text.splitlines() if line.startswith('REFUSED ')]
    out['refused_without_plugin'] = refused[-1] if refused else f'no answer: {text[-1500:]}'
    return out


def letterboxed(image, imgsz):
    import cv2
    img = cv2.imread(str(image))
    h, w = img.shape[:2]
    r = imgsz / max(h, w)
    resized = cv2.resize(img, (round(w * r), round(h * r)))
    canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
    top, left = (imgsz - resized.shape[0]) // 2, (imgsz - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255


def boxes_and_scores(y, end2end):
    """(boxes, scores) of a detector output: (1, 4 + nc, anchors), or (1, k, 6) for an end-to-end head."""
    y = np.asarray(y, np.float64)[0]
    return (y[:, :4], y[:, 4:5]) if end2end else (y[:4].T, y[4:].T)


PEAK_LOGIT = 8.0  # one epoch leaves class scores near the bias init (~1e-4); +8 moves them to 0.1-0.9


def peaked_copy(best, path):
    """`best` with its class logits' biases raised by PEAK_LOGIT (every class branch of the Detect,
    one-to-one branch included), so that the exported scores are compared where the sigmoid is
    steep, as a trained model's are, and not where every score rounds to the same tiny value."""
    import torch
    ckpt = torch.load(best, map_location='cpu', weights_only=False)
    detect = ckpt['model'].model[-1]
    with torch.no_grad():
        for branch in (detect.cv3, getattr(detect, 'one2one_cv3', None) or []):
            for seq in branch:
                seq[-1].bias += PEAK_LOGIT
    torch.save(ckpt, path)
    return path


def export_parity(args, best, image, data):
    """{format: (largest box error / largest box coordinate, largest score error)} of each export,
    made from a copy of `best` with peaked scores (peaked_copy); and for each `<format>-int8` in
    args.formats, {format: per-level score SNR (dB, P3/P4/P5) against the fused PyTorch model}."""
    import torch

    import yolov5_mnv4  # noqa: F401
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    from yolov5_mnv4.edge import level_snr_db

    def output(backend, x):
        y = backend(x)
        y = y[0] if isinstance(y, (list, tuple)) else y
        return y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)

    best = peaked_copy(best, best.with_name('peaked.pt'))
    x = torch.from_numpy(letterboxed(image, args.imgsz))
    reference = AutoBackend(str(best), device=torch.device('cpu'), fuse=True, verbose=False)
    end2end = bool(getattr(reference.model, 'end2end', False))
    ref_boxes, ref_scores = boxes_and_scores(output(reference, x), end2end)
    parity, int8 = {}, {}
    for name in args.formats:
        fmt, _, precision = name.partition('-')
        if precision == 'int8':  # the package's calibration on the data's images
            assert not end2end, 'int8 agreement is measured on per-anchor outputs, not top-k detections'
            exported = YOLO(str(best)).export(format=fmt, imgsz=args.imgsz, quantize=8, data=str(data))
        else:
            exported = YOLO(str(best)).export(format=fmt, imgsz=args.imgsz)
        boxes, scores = boxes_and_scores(output(AutoBackend(exported, device=torch.device('cpu'), verbose=False), x),
                                         end2end)
        if precision == 'int8':
            levels = level_snr_db(scores[None], ref_scores[None], (8, 16, 32), 1, (args.imgsz, args.imgsz))
            int8[name] = [float(v) for v in levels]
        else:
            parity[name] = (float(np.abs(boxes - ref_boxes).max() / np.abs(ref_boxes).max()),
                            float(np.abs(scores - ref_scores).max()))
    return parity, int8, float(ref_scores.max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--route', choices=('cli', 'trainer'))
    parser.add_argument('--config')
    parser.add_argument('--weights', type=Path, help='export this checkpoint only (no training, no reloads)')
    parser.add_argument('--formats', nargs='*', default=['onnx', 'ncnn'])
    parser.add_argument('--imgsz', type=int, default=96)
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.update({k: v for k, v in offline_env().items() if k not in os.environ})
    os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, image = prepare_data(work)
    if args.weights:
        best, result = args.weights.resolve(), {}
    elif args.route and args.config:
        best = train(args, data, work)
        result = {'best': str(best), 'epochs': epochs_logged(work), **reload_checks(args, best, data, image, work)}
    else:
        parser.error('give --route and --config, or --weights')
    result['parity'], result['int8_snr_db'], result['max_score'] = export_parity(args, best, image, data)
    print('RESULT', json.dumps(result))


if __name__ == '__main__':
    sys.exit(main())
