#!/usr/bin/env python3
"""Run the training options YOLOv5 users rely on, through the stock scripts, on one config:
--resume after an interrupted epoch (optimizer state and EMA checked), --multi-scale, --rect,
--cache ram, --optimizer AdamW, --cos-lr, --label-smoothing, --image-weights, --freeze 5,
val.py --task speed and --augment (TTA), detect.py on a video and on a folder of mixed sizes.
One short epoch each at a small size; prints one line per option (ok / FAILED, seconds).

    python tests/tools/train_options.py --yolov5 .cache/yolov5-v7.0 --cfg yolov5-mnv4-hybrid-m.yaml
    python tests/tools/train_options.py --yolov5 .cache/yolov5-v7.0 --cfg yolov5n.yaml     # the stock control
"""
import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

from yolov5_mnv4.cli.demo import Runner, check, prepare_data, work_folder
from yolov5_mnv4.hosts.offline import offline_env
from yolov5_mnv4.resources import embedded_dataset

# train.py with a callback that stops the run once epoch 0's last.pt is saved, as a Ctrl-C would.
INTERRUPTED = '''
import sys
sys.argv = ['train.py', *sys.argv[1:]]
import train
from utils.callbacks import Callbacks
callbacks = Callbacks()
def stop(last, epoch, *args):
    if epoch == 0:
        print(f'train-options: interrupted after epoch {epoch}, {last} saved', flush=True)
        sys.exit(3)
callbacks.register_action('on_model_save', callback=stop)
train.main(train.parse_opt(), callbacks=callbacks)
'''

# train.py --resume with smart_resume checked: the optimizer state and the EMA come back exactly.
RESUMED = '''
import sys, torch
sys.argv = ['train.py', *sys.argv[1:]]
import train
original = train.smart_resume
def checked(ckpt, optimizer, ema=None, *args, **kwargs):
    result = original(ckpt, optimizer, ema, *args, **kwargs)
    saved, now = ckpt['optimizer']['state'], optimizer.state_dict()['state']
    assert saved and saved.keys() == now.keys(), 'optimizer state not restored'
    for k in saved:
        for name, value in saved[k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(now[k][name])), f'optimizer {k}.{name} differs'
    assert ema is not None and ema.updates == ckpt['updates'] > 0, 'EMA updates not restored'
    expected = ckpt['ema'].float().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in ema.ema.state_dict().items()), 'EMA weights not restored'
    print(f'train-options: resume restored {len(now)} optimizer states and the EMA ({ema.updates} updates); '
          f'start epoch {result[1]} of {result[2]}', flush=True)
    return result
train.smart_resume = checked
train.main(train.parse_opt())
'''


def video_and_mixed_sizes(images, work):
    """A short .mp4 and a folder of the same images at mixed sizes and aspect ratios."""
    import cv2
    frames = [cv2.resize(cv2.imread(str(p)), (160, 120)) for p in images[:4]]
    video = work / 'clip.mp4'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'mp4v'), 5, (160, 120))
    for frame in frames * 2:
        writer.write(frame)
    writer.release()
    folder = work / 'mixed-sizes'
    folder.mkdir()
    for p, size in zip(images, [(57, 211), (320, 96), (100, 100), (401, 233)]):
        cv2.imwrite(str(folder / f'{size[0]}x{size[1]}.jpg'), cv2.resize(cv2.imread(str(p)), size))
    return video, folder, len(frames) * 2


def epochs_done(run):
    with open(run / 'results.csv') as f:
        return len(list(csv.DictReader(f)))


ORDER = ['resume', 'multi-scale+cache-ram+AdamW+cos-lr+label-smoothing', 'rect+freeze-5', 'image-weights',
         'val-task-speed', 'val-augment', 'detect-video', 'detect-mixed-sizes']


def side_by_side(jobs, workers=2):
    """Call each job, `workers` at a time; a job's exception is raised here."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def run(args):
    yolov5 = args.yolov5.resolve()
    work = work_folder(args.out, 'options')
    work.mkdir(parents=True, exist_ok=True)
    data_yaml, _ = prepare_data((args.data or embedded_dataset()).resolve(), work)
    images = sorted((work / 'dataset' / 'images' / 'val2017').glob('*.jpg'))
    step = Runner(yolov5, work, offline_env(work / 'state'))
    train = ['--cfg', args.cfg, '--weights', '', '--data', data_yaml, '--img', args.img, '--batch-size', 4,
             '--workers', 0, '--device', 'cpu', '--noplots', '--exist-ok', '--project', work]
    results, failures = {}, []

    def attempt(name, verify, *cmd):
        start = time.perf_counter()
        try:
            log = step(name, *cmd)
            verify(log)
            results[name] = f'ok ({time.perf_counter() - start:.0f} s)'
        except SystemExit as err:  # what Runner and check raise
            results[name] = f'FAILED: {err}'
            failures.append(name)

    def resume_check(log):
        check('resume restored' in log and 'start epoch 1 of 2' in log, 'resume did not restore')
        check(epochs_done(work / 'resume') == 2, 'resumed run did not finish both epochs')

    def resume():
        # --resume: stop after epoch 0 of 2 (the process exits 3 on purpose, so not through `step`), resume.
        with open(work / 'interrupt.log', 'w') as out:
            cmd = [sys.executable, '-c', INTERRUPTED, *map(str, [*train, '--epochs', 2, '--name', 'resume'])]
            code = subprocess.run(cmd, cwd=yolov5, env=step.env, stdout=out, stderr=subprocess.STDOUT).returncode
        if code == 3 and (work / 'resume' / 'weights' / 'last.pt').is_file():
            attempt('resume', resume_check, '-c', RESUMED, '--resume', work / 'resume' / 'weights' / 'last.pt')
        else:
            results['resume'] = f'FAILED: the interrupted run exited {code} (log: {work / "interrupt.log"})'
            failures.append('resume')

    def trained(name):
        return lambda log: check(epochs_done(work / name) == 1, f'{name}: no epoch in results.csv')

    # Two waves, each run two at a time (a short run's start-up and data loading are single-threaded):
    # the trainings, then val/detect on the rect run's best.pt.
    side_by_side([resume,
                  lambda: attempt('multi-scale+cache-ram+AdamW+cos-lr+label-smoothing', trained('mixed'), 'train.py',
                                  *train, '--epochs', 1, '--multi-scale', '--cache', 'ram', '--optimizer', 'AdamW',
                                  '--cos-lr', '--label-smoothing', 0.1, '--name', 'mixed'),
                  lambda: attempt('rect+freeze-5', trained('rect'), 'train.py', *train, '--epochs', 1, '--rect',
                                  '--freeze', 5, '--name', 'rect'),
                  lambda: attempt('image-weights', trained('imgw'), 'train.py', *train, '--epochs', 1,
                                  '--image-weights', '--name', 'imgw')])

    best = work / 'rect' / 'weights' / 'best.pt'
    common = ['--weights', best, '--img', args.img, '--device', 'cpu']
    video, folder, n_frames = video_and_mixed_sizes(images, work)

    def detected(name, expect):
        def verify(log):
            made = sorted(p.name for p in (work / name).iterdir() if p.suffix in ('.jpg', '.mp4'))
            check(made == expect, f'{name}: wrote {made}, expected {expect}')
            if name == 'video':
                check(f'video 1/1 ({n_frames}/{n_frames})' in log, 'not every frame was run')
        return verify

    side_by_side([
        lambda: attempt('val-task-speed', lambda log: check('Speed:' in log, 'no Speed line'), 'val.py', *common,
                        '--data', data_yaml, '--task', 'speed', '--project', work, '--name', 'speed', '--exist-ok'),
        lambda: attempt('val-augment', lambda log: check(' all ' in log, 'no results row'), 'val.py', *common,
                        '--data', data_yaml, '--augment', '--project', work, '--name', 'tta', '--exist-ok'),
        lambda: attempt('detect-video', detected('video', ['clip.mp4']), 'detect.py', *common, '--source', video,
                        '--project', work, '--name', 'video', '--exist-ok'),
        lambda: attempt('detect-mixed-sizes', detected('folder', sorted(p.name for p in folder.iterdir())),
                        'detect.py', *common, '--source', folder, '--project', work, '--name', 'folder', '--exist-ok')])
    results.update({name: results.pop(name) for name in ORDER if name in results})  # report in a fixed order

    print(f'\ntrain-options: {args.cfg} at --img {args.img} ({len(results) - len(failures)}/{len(results)} ok)')
    for name, result in results.items():
        print(f'  {name}: {result}')
    print(f'train-options: work folder {work}')
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, required=True, help='YOLOv5 checkout with the plugin applied')
    parser.add_argument('--cfg', default='yolov5-mnv4-hybrid-m.yaml', help='config name or path')
    parser.add_argument('--data', type=Path, default=None,
                        help='YOLO-format dataset folder (default: the embedded one)')
    parser.add_argument('--img', type=int, default=64)
    parser.add_argument('--out', type=Path, help='work folder (default: a new folder in $TMPDIR)')
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
