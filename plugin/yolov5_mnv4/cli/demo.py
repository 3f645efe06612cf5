"""`yolov5-mnv4 demo`: the stock YOLOv5 scripts on an MNv4 config, offline, on the CPU, on the
embedded dataset (or --data): train -> val -> detect -> export (TorchScript, ONNX).

    yolov5-mnv4 demo --yolov5 /path/to/yolov5 [--cfg yolov5-mnv4-conv-s.yaml] [--epochs 3] [--out runs/demo]

The tree must have the plugin applied (`yolov5-mnv4 apply /path/to/yolov5`). Each step runs the
tree's own script in a subprocess with YOLOv5's network access switched off (yolov5_mnv4.hosts.offline);
its log goes to <out>/<step>.log and a failing step prints the end of it.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import __version__, resources
from ..hosts.offline import offline_env
from ..hosts.yolov5_tree import ApplyError, find_tree


def prepare_data(source, work):
    """A copy of a YOLO-format dataset (images/ and labels/ with train2017 and val2017) with its YAML
    (COCO's class names) in `work`; returns the YAML's path and the first val image."""
    data_yaml = resources.dataset_yaml(source, work)
    return data_yaml, sorted((work / 'dataset' / 'images' / 'val2017').glob('*.jpg'))[0]


def work_folder(out, label):
    """`out`, or a new folder for this run in $TMPDIR, resolved."""
    return (out or Path(os.environ.get('TMPDIR', '/tmp')) / f'yolov5-mnv4-{label}-{os.getpid()}').resolve()


class StepFailed(SystemExit):
    """A step of a run failed; the message says which and where its log is."""


def check(condition, message):
    if not condition:
        raise StepFailed(f'yolov5-mnv4: {message}')


class Runner:
    """Runs `python <args>` in the YOLOv5 tree, one logged step at a time, timing each."""

    def __init__(self, yolov5, work, env):
        self.yolov5, self.work, self.env, self.times = yolov5, work, env, {}

    def __call__(self, step, *args):
        shown = ' '.join(map(str, args if args[0] != '-c' else ('-c <inline check>', *args[2:])))
        print(f'\n=== {step}: python {shown}', flush=True)
        log = self.work / f'{step}.log'
        start = time.perf_counter()
        with open(log, 'w') as out:
            proc = subprocess.run([sys.executable, *map(str, args)], cwd=self.yolov5, env=self.env,
                                  stdout=out, stderr=subprocess.STDOUT)
        self.times[step] = time.perf_counter() - start
        text = log.read_text()
        if proc.returncode != 0:
            print(text[-4000:])
            raise StepFailed(f'yolov5-mnv4: {step} failed (exit {proc.returncode}); log: {log}')
        print(f'=== {step}: ok in {self.times[step]:.1f} s (log: {log})', flush=True)
        return text


def train_val_detect_export(run_step, work, data_yaml, image, cfg, img, epochs, batch):
    """The four stock scripts on `cfg`; returns (best.pt, train.py's log)."""
    common = ['--img', img, '--device', 'cpu']
    log = run_step('train', 'train.py', '--cfg', cfg, '--weights', '', '--data', data_yaml, '--epochs', epochs,
                   '--batch-size', batch, '--workers', 0, '--noplots', '--exist-ok', '--project', work,
                   '--name', 'train', *common)
    best = work / 'train' / 'weights' / 'best.pt'
    check(best.is_file(), f'training wrote no {best}')
    run_step('val', 'val.py', '--weights', best, '--data', data_yaml, '--project', work, '--name', 'val',
             '--exist-ok', *common)
    run_step('detect', 'detect.py', '--weights', best, '--source', image, '--project', work, '--name', 'detect',
             '--exist-ok', *common)
    check((work / 'detect' / image.name).is_file(), 'detect.py wrote no annotated image')
    run_step('export', 'export.py', '--weights', best, '--include', 'torchscript', 'onnx', *common)
    check(best.with_suffix('.torchscript').is_file() and best.with_suffix('.onnx').is_file(),
          'export.py did not write both the .torchscript and the .onnx file')  # v7.0 exits 0 on failure
    return best, log


def require_applied(yolov5, prog='yolov5-mnv4 demo'):
    """The applied YOLOv5 tree at `yolov5`; SystemExit saying what is wrong otherwise."""
    try:
        tree = find_tree(yolov5)
    except ApplyError as err:
        raise SystemExit(f'{prog}: {err}') from None
    if tree.applied is None:
        raise SystemExit(f'{prog}: the plugin is not applied in {yolov5}: run `yolov5-mnv4 apply {yolov5}` first')
    return tree


def add_run_arguments(parser, epochs):
    """The options of a run of the stock scripts (the demo's, and the test suite's smoke runs)."""
    parser.add_argument('--yolov5', type=Path, required=True, help='YOLOv5 checkout with the plugin applied')
    parser.add_argument('--cfg', default='yolov5-mnv4-conv-s.yaml', help='config name or path')
    parser.add_argument('--data', type=Path, help='YOLO-format dataset folder (default: the embedded one)')
    parser.add_argument('--img', type=int, default=160)
    parser.add_argument('--epochs', type=int, default=epochs)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--out', type=Path, help='work folder (default: a new folder in $TMPDIR)')
    return parser


def main(argv=None, prog='yolov5-mnv4 demo'):
    parser = add_run_arguments(argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0]), epochs=3)
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    yolov5 = args.yolov5.resolve()
    require_applied(yolov5)
    work = work_folder(args.out, 'demo')
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data_yaml, image = prepare_data((args.data or resources.embedded_dataset()).resolve(), work)
    run_step = Runner(yolov5, work, offline_env(work / 'state'))
    best, _ = train_val_detect_export(run_step, work, data_yaml, image, args.cfg, args.img, args.epochs, args.batch)
    print(f'\nyolov5-mnv4 demo: {args.cfg} trained {args.epochs} epoch(s), validated, ran and exported.')
    print(f'  weights      {best}')
    print(f'  detections   {work / "detect" / image.name}')
    print(f'  exports      {best.with_suffix(".torchscript")}, {best.with_suffix(".onnx")}')
    print('  seconds      ' + ', '.join(f'{k} {v:.1f}' for k, v in run_step.times.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
