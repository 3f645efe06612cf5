#!/usr/bin/env python3
"""Benchmark the MNv4 detectors against stock yolov5n / yolov5s and the blog recipe's model, in one run:
params, GFLOPs at 640, CPU latency at batch 1 (2 threads) for fused PyTorch eager and ONNX Runtime,
median and spread over interleaved runs, peak memory; writes a table (Markdown), CSV, JSON and a
latency-vs-GFLOPs PNG. --train adds training throughput (images/s, one epoch at 320 on coco128).
--backbones compares our backbones with timm's; --layers gives per-layer latency of detectors;
--tasks times the segmentation and P2 configs beside yolov5n-seg, yolov5n and their P3-P5 twins.
--weight-layouts compares the conv weight layouts of a model in training (unfused eval, train steps).

    python scripts/benchmark.py --yolov5 .cache/yolov5-v7.0 [--quick] [--train] [--out runs/benchmark]
    python scripts/benchmark.py --backbones
    python scripts/benchmark.py --yolov5 .cache/yolov5-v7.0 --tasks
    python scripts/benchmark.py --yolov5 .cache/yolov5-v7.0 --weight-layouts
"""
import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from yolov5_mnv4.bench import (
    CHANNELS_LAST,
    THREADS,
    channels_last_copy,
    gflops,
    interleaved,
    markdown_table,
    ort_session,
    timed_runs,
    twin_ratios,
)
from yolov5_mnv4.resources import VARIANT_CONFIGS

REPO = Path(__file__).resolve().parents[1]
OURS = {'MNv4-' + VARIANT_CONFIGS[v][len('yolov5-mnv4-'):-len('.yaml')].title(): VARIANT_CONFIGS[v]
        for v in ('conv_small', 'conv_medium', 'hybrid_medium', 'conv_large', 'hybrid_large')}  # by cost
STOCK = {'yolov5n': 'yolov5n.yaml', 'yolov5s': 'yolov5s.yaml', 'yolov5n-seg': 'segment/yolov5n-seg.yaml'}
TASK_CONFIGS = {'MNv4-Conv-S-seg': 'yolov5-mnv4-conv-s-seg.yaml', 'MNv4-Conv-S-P2': 'yolov5-mnv4-conv-s-p2.yaml',
                'MNv4-Conv-M-P2': 'yolov5-mnv4-conv-m-p2.yaml'}
TASK_MODELS = ['yolov5n', 'yolov5n-seg', 'MNv4-Conv-S', 'MNv4-Conv-S-seg', 'MNv4-Conv-S-P2', 'MNv4-Conv-M',
               'MNv4-Conv-M-P2']
BLOG = 'blog MNv4-S'
MODELS = ['yolov5n', 'yolov5s', BLOG, *OURS]


def import_yolo(yolov5):
    from yolov5_mnv4.hosts.offline import offline_env
    os.environ.update(offline_env())
    sys.path.insert(0, str(yolov5))
    import logging

    import models.yolo
    models.yolo.LOGGER.setLevel(logging.WARNING)  # no model tables for every build
    return models.yolo


def build(yolo, yolov5, name):
    """The fused eval model `name`, as YOLOv5's export/detect would run it."""
    if name == BLOG:
        from blog_recipe import blog_fuse, build_blog_detector
        model = build_blog_detector(yolo).eval()
        blog_fuse(model, yolo)
    else:
        kind = yolo.SegmentationModel if name.endswith('-seg') else yolo.DetectionModel
        model = kind(str(config_path(yolov5, name))).eval().fuse()
    model.model[-1].export = True  # Detect (Segment) returns what exported models do: detections (, protos)
    return model


def config_path(yolov5, name):
    return yolov5 / 'models' / STOCK[name] if name in STOCK else REPO / 'models' / {**OURS, **TASK_CONFIGS}[name]


def onnx_session(model, size, path):
    import torch

    from yolov5_mnv4.export.runtimes import onnx_file
    outputs = 2 if type(model).__name__ == 'SegmentationModel' else 1
    return ort_session(onnx_file(model, torch.zeros(1, 3, size, size), path, outputs=outputs))


def layer_times(yolov5, names, out, size=640, reps=10):
    """Per-layer latency (ms, median of `reps` rounds) of fused eval models, as YOLOv5's forward loop runs
    them, sequentially (noisier than the interleaved tables); grouped into backbone (the config's
    backbone rows, SPPF included), head and Detect. Writes out/layers.json."""
    import torch
    torch.set_num_threads(THREADS)
    yolo = import_yolo(yolov5)
    x = torch.zeros(1, 3, size, size)
    models = []
    for name in names:
        model = build(yolo, yolov5, name)
        samples = [[] for _ in model.model]
        with torch.inference_mode():
            for round_ in range(reps + 3):
                outputs, y = [], x
                for layer in model.model:
                    if layer.f != -1:
                        y = outputs[layer.f] if isinstance(layer.f, int) else [y if j == -1 else outputs[j] for j in layer.f]
                    start = time.perf_counter()
                    y = layer(y)
                    if round_ >= 3:
                        samples[layer.i].append((time.perf_counter() - start) * 1000)
                    outputs.append(y)
        medians = [round(statistics.median(s), 2) for s in samples]
        head_start = len(model.model) - len(model.yaml['head'])
        models.append({'model': name, 'layers': [{'i': layer.i, 'type': layer.type.split('.')[-1], 'ms': t}
                                                 for layer, t in zip(model.model, medians)],
                       'backbone_ms': round(sum(medians[:head_start]), 1),
                       'head_ms': round(sum(medians[head_start:-1]), 1), 'detect_ms': round(medians[-1], 1)})
        print(f'{name} at {size}: total {sum(medians):.1f} ms; ' + ', '.join(
            f'{layer.i} {layer.type.split(".")[-1]} {t:.1f}' for layer, t in zip(model.model, medians)))
    write_result(out / 'layers.json', {'size': size, 'reps': reps, 'models': models}, f'--layers {" ".join(names)}')
    return 0


def backbone_vs_timm(out, size=640, runs=3, reps=20, warmup=5):
    """Backbone-only latency of each variant, ours against timm's same model computing the same /4../32
    taps, interleaved, on equal terms: both unfused (timm has no BatchNorm folding) and both in
    channels-last memory (ours converts its input itself; timm's weights and input converted); the
    same-run ratio per variant, median and range over `runs`. Writes out/backbones.json."""
    import timm
    import torch

    from yolov5_mnv4 import VARIANTS, MobileNetV4
    torch.set_num_threads(THREADS)
    x = torch.zeros(1, 3, size, size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runners = {}
    for name in VARIANTS:
        ours = MobileNetV4(name).eval()
        reference = timm.create_model(f'mobilenetv4_{name}', pretrained=False).eval().to(memory_format=torch.channels_last)
        runners[(name, 'ours')] = lambda m=ours: m(x)
        runners[(name, 'timm')] = lambda m=reference: m.forward_intermediates(
            x_cl, indices=[1, 2, 3, 4], extra_blocks=True, intermediates_only=True)
    with torch.inference_mode():
        timed = timed_runs(runners, runs, reps, warmup, lambda line: print(f'benchmark: {line}', flush=True), 'backbones')
    rows = []
    for name in VARIANTS:
        (ours, _, ours_runs), (theirs, _, timm_runs) = timed[(name, 'ours')], timed[(name, 'timm')]
        per_run = [round(a / b, 3) for a, b in zip(ours_runs, timm_runs)]
        rows.append({'variant': name, 'ours_ms': round(ours, 1), 'timm_ms': round(theirs, 1),
                     'ratio': {'median': round(statistics.median(per_run), 3), 'min': min(per_run), 'max': max(per_run)}})
        print(f'  {name:14s} ours {ours:7.1f}  timm {theirs:7.1f}  ratio {statistics.median(per_run):.2f}')
    write_result(out / 'backbones.json', {'size': size, 'runs': runs, 'reps': reps, 'warmup': warmup, 'rows': rows,
                                          'terms': 'both unfused, both channels-last'},
                 '--backbones')
    return 0


def write_result(path, result, options):
    """A result file with the command, date and machine beside the numbers (docs/results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {'command': f'python scripts/benchmark.py {options}', 'date': time.strftime('%Y-%m-%d'),
              'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, torch {__import__("torch").__version__}, '
                         f'{THREADS} threads', **result}
    path.write_text(json.dumps(result, indent=1) + '\n')
    print(f'benchmark: wrote {path}')


def memory_child(yolov5, size):
    """In a fresh process: for each model, the peak RSS growth of its first inference at `size`.

    The parent sets a fixed glibc mmap threshold, so tensor buffers freed by one model go back to the
    system instead of being reused, unseen, by the next; the peak RSS (VmHWM) is reset before each.
    """
    import gc

    import torch
    torch.set_num_threads(THREADS)
    yolo = import_yolo(yolov5)
    x = torch.zeros(1, 3, size, size)

    def status(key):
        for line in open('/proc/self/status'):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    result = {}
    for name in MODELS:
        model = build(yolo, yolov5, name)
        gc.collect()
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS to the current RSS
        base = status('VmRSS:')
        with torch.inference_mode():
            model(x)
        result[name] = status('VmHWM:') - base
        del model
    print(json.dumps(result))


def measure_memory(yolov5, size):
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': str(128 * 1024)}
    proc = subprocess.run([sys.executable, __file__, '--yolov5', str(yolov5), '--memory-child', str(size)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f'benchmark: memory run failed:\n{proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def training_throughput(yolo, yolov5, data_dir, names, size=320, batch=16, rounds=2):
    """Images/s over one epoch (forward, loss, backward, SGD step) with YOLOv5's dataloader and loss."""
    import torch
    import yaml
    from utils.dataloaders import create_dataloader
    from utils.loss import ComputeLoss
    hyp = yaml.safe_load((yolov5 / 'data' / 'hyps' / 'hyp.scratch-low.yaml').read_text())
    loader, dataset = create_dataloader(str(data_dir / 'images' / 'train2017'), size, batch, 32, hyp=hyp,
                                        augment=True, workers=0, shuffle=True)
    results = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            model = yolo.DetectionModel(str(config_path(yolov5, name))).train()
            model.hyp, model.nc = hyp, 80
            loss_fn = ComputeLoss(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            start, seen = time.perf_counter(), 0
            for images, targets, _, _ in loader:
                images = images.float() / 255
                loss, _ = loss_fn(model(images), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                seen += images.shape[0]
            results[name].append(seen / (time.perf_counter() - start))
    return {name: max(v) for name, v in results.items()}


def plot(rows, size, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for runtime, marker in (('torch', 'o'), ('ort', 's')):
        xs = [r['gflops_640'] for r in rows]
        ys = [r[f'{runtime}_{size}_ms'] for r in rows]
        ax.scatter(xs, ys, marker=marker, label={'torch': 'PyTorch eager (fused)', 'ort': 'ONNX Runtime'}[runtime])
        if runtime == 'torch':
            for r, x, y in zip(rows, xs, ys):
                ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(5, 4), fontsize=8)
    ax.set_xlabel('GFLOPs at 640')
    ax.set_ylabel(f'CPU latency at {size}, batch 1, {THREADS} threads (ms, median)')
    ax.set_title(f'YOLOv5 with MobileNetV4 backbones vs stock and the blog recipe ({platform.machine()} CPU)')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def time_models(yolo, yolov5, names, sizes, reps, warmup, out, runs=1):
    """Rows of params, GFLOPs at 640 and interleaved torch / ONNX Runtime latency at each size: `runs`
    runs of `reps` interleaved rounds each; per model and runtime the median of the runs' medians, the
    median of their IQRs, and every run's median (`*_runs`), from which same-run ratios are taken."""
    import torch
    print(f'benchmark: building {len(names)} models', flush=True)
    models = {name: build(yolo, yolov5, name) for name in names}
    rows = {name: {'model': name, 'params': sum(p.numel() for p in m.parameters()),
                   'gflops_640': round(gflops(m, 640), 2)} for name, m in models.items()}
    for size in sizes:
        x = torch.zeros(1, 3, size, size)
        print(f'benchmark: exporting ONNX at {size}', flush=True)
        sessions = {name: onnx_session(m, size, out / f'{name.replace(" ", "_")}-{size}.onnx')
                    for name, m in models.items()}
        feed = {'images': x.numpy()}
        runners = {}
        x_cl = x.contiguous(memory_format=torch.channels_last)
        for name, m in models.items():
            runners[(name, 'torch')] = lambda m=m: m(x)
            if name in STOCK:  # ours run channels-last as shipped: the stock models in both layouts (bench.CHANNELS_LAST)
                m_cl = channels_last_copy(m)
                runners[(name, CHANNELS_LAST)] = lambda m=m_cl: m(x_cl)
            runners[(name, 'ort')] = lambda s=sessions[name]: s.run(None, feed)
        with torch.inference_mode():
            timed = timed_runs(runners, runs, reps, warmup, lambda line: print(f'benchmark: {line}', flush=True),
                               f'at {size}')
        for (name, runtime), (ms, iqr, per_run) in timed.items():
            medians = [round(m, 1) for m in per_run]
            rows[name][f'{runtime}_{size}_ms'] = round(statistics.median(medians), 1)
            rows[name][f'{runtime}_{size}_iqr'] = round(iqr, 1)
            rows[name][f'{runtime}_{size}_runs'] = medians
    return rows


def weight_layouts(yolo, yolov5, reps, warmup, out):
    """The plugin's weight layout (hosts.yolov5.weights_strided_like_activations: 1x1 and depthwise
    kernels with channels-last strides, memory unchanged) against all weights channels-last (0.1.0,
    which YOLOv5's own fuse cannot .view()) and all in the default layout, on a model in training:
    eval unfused at batch 1, 320 px (val.py during training), and SGD steps at batch 8, 160 px.
    Writes out/weight_layouts.json."""
    import torch
    layouts = {
        'plugin': lambda m: m,
        'all channels-last': lambda m: m.to(memory_format=torch.channels_last),
        'all default': lambda m: m.to(memory_format=torch.contiguous_format),
    }
    rows = []
    for name in ('MNv4-Conv-S', 'MNv4-Hybrid-M'):
        torch.manual_seed(0)
        models = {}
        for layout, arrange in layouts.items():
            torch.manual_seed(0)
            models[layout] = arrange(yolo.DetectionModel(str(config_path(yolov5, name))))
        x_eval, x_train = torch.rand(1, 3, 320, 320), torch.rand(8, 3, 160, 160)
        optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-4) for k, m in models.items()}

        def evaluate(model):
            model.eval()
            with torch.no_grad():
                model(x_eval)

        def step(layout):
            model = models[layout].train()
            optimizers[layout].zero_grad()
            sum(o.float().square().mean() for o in model(x_train)).backward()
            optimizers[layout].step()

        for task, runners in (('eval b1@320', {k: (lambda m=m: evaluate(m)) for k, m in models.items()}),
                              ('train step b8@160', {k: (lambda k=k: step(k)) for k in models})):
            times = interleaved(runners, reps, warmup)
            base = statistics.median(times['plugin'])
            cells = [f'{k} {statistics.median(t):.1f} ms ({statistics.median(t) / base:.3f}x)' for k, t in times.items()]
            print(f'{name} {task}: ' + ', '.join(cells), flush=True)
            rows.append({'model': name, 'task': task, **{k: round(statistics.median(t), 2) for k, t in times.items()}})
    write_result(out / 'weight_layouts.json', {'reps': reps, 'warmup': warmup, 'layouts': list(layouts), 'rows': rows},
                 f'--yolov5 .cache/yolov5-v7.0 --weight-layouts --reps {reps}')
    return 0


def setup_run(args):
    import torch
    torch.set_num_threads(THREADS)
    yolov5 = args.yolov5.resolve()
    yolo = import_yolo(yolov5)
    sys.path.insert(0, str(REPO / 'scripts'))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = [320] if args.quick else [320, 640]
    reps, warmup = (5, 2) if args.quick else (args.reps, 5)
    return yolo, yolov5, out, sizes, reps, warmup


def run(args):
    yolo, yolov5, out, sizes, reps, warmup = setup_run(args)
    runs = 1 if args.quick else args.runs
    rows = time_models(yolo, yolov5, MODELS, sizes, reps, warmup, out, runs)
    print(f'benchmark: peak memory of one inference at {max(sizes)}', flush=True)
    memory = measure_memory(yolov5, max(sizes))
    for name in MODELS:
        rows[name][f'mem_{max(sizes)}_mb'] = round(memory[name], 1)
    if args.train:
        print('benchmark: training throughput at 320 (one epoch over coco128 train, best of 2)', flush=True)
        for name, ips in training_throughput(yolo, yolov5, args.data.resolve(), ['yolov5n', 'MNv4-Conv-S']).items():
            rows[name]['train_img_s'] = round(ips, 1)
    report(list(rows.values()), sizes, out, args, dict(runs=runs, reps=reps, warmup=warmup))
    return 0


def run_tasks(args):
    """The segmentation and P2 configs beside yolov5n-seg, yolov5n and the P3-P5 configs they extend."""
    yolo, yolov5, out, sizes, reps, warmup = setup_run(args)
    rows = time_models(yolo, yolov5, TASK_MODELS, sizes, reps, warmup, out)
    lines = markdown_table(list(rows.values()), latency_columns(sizes))
    size = max(sizes)
    ratios = []
    for runtime in ('torch', 'ort'):
        key = f'{runtime}_{size}_ms'

        def ms(name):  # a stock model in PyTorch at its faster layout
            cl = rows[name].get(f'{CHANNELS_LAST}_{size}_ms') if runtime == 'torch' else None
            return min(rows[name][key], cl or rows[name][key])
        ratio = {f'{a}/{b}': rows[a][key] / ms(b) for a, b in (
            ('MNv4-Conv-S-seg', 'yolov5n-seg'), ('MNv4-Conv-S-P2', 'MNv4-Conv-S'),
            ('MNv4-Conv-S-P2', 'yolov5n'), ('MNv4-Conv-M-P2', 'MNv4-Conv-M'))}
        ratios.append(f'{runtime} @{size}: ' + ', '.join(f'{k} {v:.2f}' for k, v in ratio.items()))
    text = '\n'.join([f'machine: {machine_line()}', *lines, '', *ratios])
    (out / 'benchmark_tasks.md').write_text(text + '\n')
    print('\n' + text)
    return 0


def latency_columns(sizes):
    columns = ['model', 'params', 'gflops_640']
    for size in sizes:
        columns += [f'{runtime}_{size}_{stat}' for runtime in ('torch', CHANNELS_LAST, 'ort') for stat in ('ms', 'iqr')]
    return columns


def machine_line():
    return (f'{platform.machine()}, {os.cpu_count()} CPUs, torch {__import__("torch").__version__}, '
            f'onnxruntime {__import__("onnxruntime").__version__}, {THREADS} threads')


# The ratios the README and docs/benchmarks.md quote from this script: ours against the recipe's model, in
# ONNX Runtime (its layout is the runtime's choice; in PyTorch the recipe's model runs NCHW). Ours against
# the stock models comes from one source, `yolov5-mnv4 benchmark`'s full run.
RATIOS = [('MNv4-Conv-S', BLOG)]


def same_run_ratios(rows, sizes):
    """{'ort_<size>': {'<ours>/<theirs>': {'median', 'min', 'max', 'runs'}}} for RATIOS (bench.twin_ratios)."""
    return twin_ratios({r['model']: r for r in rows}, ('ort',), sizes, RATIOS)


def report(rows, sizes, out, args, method):
    columns = latency_columns(sizes) + [f'mem_{max(sizes)}_mb'] + (['train_img_s'] if args.train else [])
    with open(out / 'benchmark.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)
    machine = machine_line()
    ratios = same_run_ratios(rows, sizes)
    result = {'command': 'python scripts/benchmark.py ' + ' '.join(sys.argv[1:]), 'date': time.strftime('%Y-%m-%d'),
              'machine': machine, 'sizes': sizes, **method, 'rows': rows, 'ratios': ratios}
    (out / 'benchmark.json').write_text(json.dumps(result, indent=1) + '\n')
    size = max(sizes)
    plot(rows, size, out / 'latency_vs_gflops.png')
    lines = [f'| {k} | ' + ' | '.join(f'{name} {v["median"]:.2f} ({v["min"]:.2f}-{v["max"]:.2f})'
                                      for name, v in pairs.items()) + ' |' for k, pairs in ratios.items()]
    text = '\n'.join([f'{result["date"]}, {machine}; {method["runs"]} runs of {method["reps"]} interleaved rounds',
                      *markdown_table(rows, columns), '',
                      'same-run latency ratios, median of the runs (range):', *lines])
    if args.train:
        by = {r['model']: r for r in rows}
        text += (f'\ntraining images/s at 320: MNv4-Conv-S {by["MNv4-Conv-S"]["train_img_s"]}, yolov5n '
                 f'{by["yolov5n"]["train_img_s"]}')
    (out / 'benchmark.md').write_text(text + '\n')
    print('\n' + text)
    print(f'\nbenchmark: wrote {out}/benchmark.csv, benchmark.json, benchmark.md, latency_vs_gflops.png')


def main(argv=None):
    # Interleaving two runtimes: neither thread pool may keep spinning on the cores after its run.
    # (Set before torch is imported, which this script does lazily.)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--out', type=Path, default=REPO / 'runs' / 'benchmark')
    parser.add_argument('--quick', action='store_true', help='320 only, 5 rounds: for CI (under 2 minutes)')
    parser.add_argument('--reps', type=int, default=20, help='timed rounds per model and runtime in each run')
    parser.add_argument('--runs', type=int, default=3, help='runs of --reps rounds: medians and ranges over them')
    parser.add_argument('--train', action='store_true', help='also measure training images/s at 320')
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'coco128')
    parser.add_argument('--layers', nargs='+', choices=MODELS, help='only per-layer latency of these models')
    parser.add_argument('--backbones', action='store_true', help='only backbone latency, ours against timm')
    parser.add_argument('--tasks', action='store_true', help='only the seg and P2 configs against yolov5n(-seg)')
    parser.add_argument('--weight-layouts', action='store_true', help='only the conv weight layouts in training')
    parser.add_argument('--memory-child', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.weight_layouts:
        yolo, yolov5, out, _, reps, warmup = setup_run(args)
        return weight_layouts(yolo, yolov5, reps, warmup, out)
    if args.layers:
        sys.path.insert(0, str(REPO / 'scripts'))
        return layer_times(args.yolov5.resolve(), args.layers, args.out)
    if args.backbones:
        return backbone_vs_timm(args.out, runs=args.runs, reps=args.reps)
    if args.tasks:
        return run_tasks(args)
    if args.memory_child:
        sys.path.insert(0, str(REPO / 'scripts'))
        return memory_child(args.yolov5.resolve(), args.memory_child)
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
