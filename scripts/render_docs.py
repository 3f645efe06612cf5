#!/usr/bin/env python3
"""Write the numbers of the README and docs/ from the result files in docs/results, so that the docs
say what the committed results say and nothing else.

A generated block in a Markdown file sits between two comments that name its result file and its
renderer; everything between them is rewritten:

    <!-- generated: benchmark.json headline -->
    ...
    <!-- end generated -->

    python scripts/render_docs.py           # rewrite every block
    python scripts/render_docs.py --check   # exit 1 and name the blocks that differ (tests/test_docs.py)
"""
import argparse
import json
import re
import sys
from pathlib import Path

from yolov5_mnv4.bench import CHANNELS_LAST, NOISE
from yolov5_mnv4.bench import label as runtime_label

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'docs' / 'results'
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
BLOCK = re.compile(r'(<!-- generated: (\S+) (\S+) -->\n)(.*?)(<!-- end generated -->)', re.S)
NAMES = {'yolov5n': 'yolov5n (stock)', 'yolov5s': 'yolov5s (stock)', 'blog MNv4-S': "the blog recipe's MNv4-S detector",
         'MNv4-Conv-S': 'MNv4-Conv-S (`yolov5-mnv4-conv-s.yaml`)', 'MNv4-Conv-M': 'MNv4-Conv-M (`yolov5-mnv4-conv-m.yaml`)'}


def command_of(result):
    """The command a result file names, without where that run wrote its files (--out)."""
    return re.sub(r' --out \S+', '', result['command'])


def method_line(result):
    return (f'`{command_of(result)}`, {result["date"]}, {result["machine"]}; fused models, batch 1; each latency '
            f'is the median over {result["runs"]} runs of the run\'s median of {result["reps"]} interleaved rounds '
            f'(after {result["warmup"]} warm-ups)')


def ratio_text(result, size):
    """'Conv-S / blog MNv4-S 0.45 (0.44-0.47) in ONNX Runtime' at `size` (scripts/benchmark.py's ratios)."""
    parts = []
    for pair, r in result['ratios'].get(f'ort_{size}', {}).items():
        ours, theirs = pair.split('/')
        state(pair, 'onnxruntime', size, r['median'], 'benchmark.json')
        parts.append(f'{ours.replace("MNv4-", "")} / {theirs}: {r["median"]:.2f} ({r["min"]:.2f}-{r["max"]:.2f}) in ONNX Runtime')
    return '; '.join(parts)


def headline(result):
    """The README's table: yolov5n, Conv-S and the blog recipe's model, their size and cost, and the
    same-run ratio to the recipe's model."""
    rows = {r['model']: r for r in result['rows']}
    lines = ['| model | params (fused) | GFLOPs at 640 |', '|---|---|---|']
    for name in ('yolov5n', 'MNv4-Conv-S', 'blog MNv4-S'):
        r = rows[name]
        lines.append(f'| {NAMES[name]} | {r["params"]:,} | {r["gflops_640"]:.2f} |')
    lines += ['', f'Against the recipe\'s model, at 640, measured side by side: {ratio_text(result, 640)} '
                  f'({method_line(result)}).']
    return '\n'.join(lines) + '\n'


def benchmark_table(result):
    """docs/benchmarks.md: every model at every size, with the IQR, memory and training columns; the
    stock models in PyTorch in both layouts where the run timed both (NCHW / channels-last)."""
    sizes = result['sizes']
    header = ['model', 'params (fused)', 'GFLOPs']
    for size in sizes:
        header += [f'eager {size} ms (IQR)', f'ORT {size} ms (IQR)']
    header += [f'memory {max(sizes)} MB', 'train img/s']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]

    def cell(r, key):
        return f'{r[f"{key}_ms"]:.1f} ({r[f"{key}_iqr"]:.1f})'
    for r in result['rows']:
        cells = [r['model'], f'{r["params"]:,}', f'{r["gflops_640"]:.2f}']
        for size in sizes:
            eager = cell(r, f'torch_{size}')
            if f'{CHANNELS_LAST}_{size}_ms' in r:
                eager += f' / {cell(r, f"{CHANNELS_LAST}_{size}")} channels-last'
            cells += [eager, cell(r, f'ort_{size}')]
        cells += [f'{r[f"mem_{max(sizes)}_mb"]:.1f}', str(r.get('train_img_s', ''))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', f'{method_line(result)}.', '']
    lines += [f'Same-run latency ratio at {size}, median over the runs (range): {ratio_text(result, size)}.'
              for size in sorted(sizes, reverse=True) if result['ratios'].get(f'ort_{size}')]
    return '\n'.join(lines) + '\n'


PHRASES = {'at parity': 'at parity with', 'faster': 'faster than', 'slower': 'slower than', 'mixed': 'mixed against'}


def speed_summary(result):
    """The README's speed table: each of our models against its stock twin at its best (in PyTorch its
    faster layout), every runtime and size of the command's full run, with what each ratio says; a lead
    sentence and one line per model counting the verdicts (all words from bench.verdict)."""
    from yolov5_mnv4.bench import verdict
    from yolov5_mnv4.cli.benchmark import summary
    fair = result['fair_ratios']
    lead, lines = [], []
    for pair in dict.fromkeys(p for pairs in fair.values() for p in pairs):
        cells = {}
        for key, pairs in fair.items():
            if pair in pairs:
                runtime, size = key.rsplit('_', 1)
                stated = CHANNELS_LAST if pairs[pair].get('stock_layout') == 'channels-last' else runtime
                state(pair, stated, int(size), pairs[pair]['median'], 'benchmark_command.json fair_ratios')
                cells.setdefault(verdict(pairs[pair]), []).append(f'{runtime_label(runtime)} {size}')
        ours, theirs = (name.replace('MNv4-', '') for name in pair.split('/'))
        total = sum(len(where) for where in cells.values())
        ranked = sorted(cells.items(), key=lambda c: -len(c[1]))
        word, where = ranked[0]
        lead.append(f'{ours} is {PHRASES[word]} {theirs} in every runtime and size' if len(where) == total else
                    f'{ours} is mostly {PHRASES[word]} {theirs} ({len(where)} of {total})')
        lines.append(f'- {ours} / {theirs}: ' + '; '.join(
            f'{word} in all {total}' if len(where) == total else f'{word} in {len(where)} ({", ".join(where)})'
            for word, where in ranked) + '.')
    command = command_of(result)
    return '\n'.join([f'On this x86 CPU, {"; ".join(lead)}.', '', *summary(fair, result['sizes']), '', *lines, '',
                      f'(`{command}`, {result["date"]}, {result["machine"]}; fused models, batch 1; each ratio is the '
                      f'median over {result["runs"]} runs of {result["reps"]} interleaved rounds, range in brackets; '
                      f'"at parity": every run within {NOISE:.0%} of 1.)']) + '\n'


# Every ratio of ours to another model that a generated block states, by (pair, runtime key, size):
# {key: {value as printed: [where]}}. Filled by rendering (state()); two values for one key are two
# tables that disagree (conflicts()).
STATED = {}


def state(pair, runtime, size, value, where):
    """Note that a generated block states `pair`'s ratio in `runtime` (a bench.variant key) at `size`."""
    STATED.setdefault((pair, runtime, int(size)), {}).setdefault(f'{value:.2f}', []).append(where)


def conflicts(results=RESULTS):
    """[(pair, runtime, size, {value: [where]})] of every ratio that two generated blocks state
    differently, rendering every document from the result files in `results`."""
    STATED.clear()
    for path in DOCS:
        rendered(path.read_text(), results)
    return stated_differently()


def stated_differently():
    """conflicts() among the ratios the last rendering of every document stated (STATED)."""
    return [(*key, values) for key, values in STATED.items() if len(values) > 1]


def int8_attention_slowdown(text):
    """'3.4-5.6x': the range, over the blocks timed at 640, of the full-integer block's time over the
    same block with its attention in float (scripts/benchmark_int8_attention.py's table)."""
    ratios = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 8 and cells[2] == '640':
            full, float_attention, _ = (float(v) for v in cells[5].split(' / '))
            ratios.append(full / float_attention)
    return f'{min(ratios):.1f}-{max(ratios):.1f}x\n'


ROUTES = {'cli': 'yolo11n-mnv4-conv-s, 1 epoch via `yolov5-mnv4 yolo train`',
          'trainer': 'yolo26n-mnv4-conv-s, 2 epochs via `YOLO().train()`, interrupted and resumed',
          'hybrid': 'yolo11s-mnv4-hybrid-m, perturbed, attention peaked'}


def ultralytics_parity(records):
    """docs/ultralytics.md: each flow's exports against PyTorch, how far its outputs move between two
    images, the negative controls, and LiteRT int8's score SNR (tests/tools/ultralytics_flow.py)."""
    formats = sorted({fmt for r in records.values() for fmt in r['result']['parity']},
                     key=lambda f: (f not in ('onnx', 'ncnn', 'litert'), f))
    lines = ['| model | ' + ' | '.join(formats) + ' | between two images | controls (smallest) |',
             '|---|' + '---|' * (len(formats) + 2)]
    int8 = []
    for name, record in records.items():
        r = record['result']
        cells = [' / '.join(f'{v:.1e}' for v in r['parity'][f]) if f in r['parity'] else '' for f in formats]
        fp32_controls = [max(m) for f, bugs in r['controls'].items() if f in r['parity'] for m in bugs.values()]
        route = name.rsplit('_', 1)[-1].removesuffix('.json')
        lines.append(f'| {ROUTES.get(route, route)} | ' + ' | '.join(cells) +
                     f' | {r["input_change"][0]:.2g} / {r["input_change"][1]:.2g} | {min(fp32_controls):.2g} |')
        for fmt, levels in r['int8_snr_db'].items():
            bugs = ', '.join(f'{bug} {" / ".join(f"{v:.1f}" for v in m)}' for bug, m in r['controls'][fmt].items())
            int8.append(f'{fmt} on {ROUTES.get(route, route).split(",")[0]}: score SNR per level (P3 / P4 / P5) '
                        f'{" / ".join(f"{v:.1f}" for v in levels)} dB; against the PyTorch model with a bug: {bugs} dB')
    lines += ['', *[f'- {line}.' for line in int8], '']
    dates = sorted({f'`{r["command"]}` ({r["date"]}, {r["machine"]})' for r in records.values()})
    lines += ['From ' + '; '.join(dates) + '.']
    return '\n'.join(lines) + '\n'


def first_table(text):
    """The first Markdown table of a result file, as the command wrote it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('|'))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith('|')), len(lines))
    return '\n'.join(lines[start:end]) + '\n'


def tables(text):
    """Every Markdown table of a result file, as the command wrote them, a blank line between."""
    found, current = [], []
    for line in text.splitlines() + ['']:
        if line.startswith('|'):
            current.append(line)
        elif current:
            found.append('\n'.join(current))
            current = []
    return '\n\n'.join(found) + '\n'


def conv_s_twins(text):
    """'0.90-0.96x their latency in ONNX Runtime, OpenVINO and NCNN (1.03-1.04x in LiteRT int8': the
    range of the Conv-S twins' ratios to yolo11n and yolo26n (scripts/benchmark_ultralytics.py's table)."""
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in text.splitlines()
            if line.startswith('|') and 'mnv4-conv-s /' in line]
    float_runtimes = [float(v) for r in rows for v in r[2:6]]
    litert = [float(r[6]) for r in rows]
    return (f'{min(float_runtimes):.2f}-{max(float_runtimes):.2f}x their latency in ONNX Runtime, OpenVINO and\n'
            f'NCNN ({min(litert):.2f}-{max(litert):.2f}x in LiteRT int8\n')


# The README's config table: which configs share a row, and what their backbone and head are.
CONFIG_ROWS = [
    ('`yolov5_mobilenetv4.yaml`', ['yolov5_mobilenetv4.yaml'], 'Conv-S', "the blog's (width 0.5)"),
    ('`yolov5-mnv4-conv-s.yaml`', ['yolov5-mnv4-conv-s.yaml'], 'Conv-S', "yolov5n's (width 0.25)"),
    ('`yolov5-mnv4-conv-m.yaml`', ['yolov5-mnv4-conv-m.yaml'], 'Conv-M', "yolov5s's (width 0.5)"),
    ('`yolov5-mnv4-hybrid-m.yaml`', ['yolov5-mnv4-hybrid-m.yaml'], 'Hybrid-M', "yolov5s's"),
    ('`yolov5-mnv4-conv-l.yaml`', ['yolov5-mnv4-conv-l.yaml'], 'Conv-L', "yolov5s's"),
    ('`yolov5-mnv4-hybrid-l.yaml`', ['yolov5-mnv4-hybrid-l.yaml'], 'Hybrid-L', "yolov5s's"),
    ('`yolov5-mnv4-conv-s-relu.yaml`, `-conv-m-relu`', ['yolov5-mnv4-conv-s-relu.yaml', 'yolov5-mnv4-conv-m-relu.yaml'],
     'Conv-S, Conv-M', 'all ReLU: faster in OpenVINO int8 (not in TFLite or MNN int8; docs/benchmarks.md)'),
    ('`yolov5-mnv4-<variant>-seg.yaml` (S / M / Hybrid-M / L / Hybrid-L)',
     [f'yolov5-mnv4-{v}-seg.yaml' for v in ('conv-s', 'conv-m', 'hybrid-m', 'conv-l', 'hybrid-l')], 'all five',
     "YOLOv5's `Segment` head, for `segment/train.py`"),
    ('`yolov5-mnv4-conv-s-p2.yaml`, `-conv-m-p2`', ['yolov5-mnv4-conv-s-p2.yaml', 'yolov5-mnv4-conv-m-p2.yaml'],
     'Conv-S, Conv-M', '+ a /4 level for small objects'),
]


def config_table(result):
    """README: params and GFLOPs of every shipped config (scripts/config_summary.py)."""
    rows = {r['config']: r for r in result['rows']}
    missing = {c for _, configs, _, _ in CONFIG_ROWS for c in configs} ^ set(rows)
    assert not missing, f'configs.json and render_docs.CONFIG_ROWS disagree on {sorted(missing)}'
    lines = ['| config | backbone | head | params | GFLOPs |', '|---|---|---|---|---|']
    for label, configs, backbone, head in CONFIG_ROWS:
        params = ' / '.join(f'{rows[c]["params"]:,}' for c in configs)
        gflops = ' / '.join(f'{rows[c]["gflops_640"]:.1f}' for c in configs)
        lines.append(f'| {label} | {backbone} | {head} | {params} | {gflops} |')
    lines += ['', f'({result["classes"]} classes; params and GFLOPs at 640 as the `summary:` line of '
                  f'`train.py --cfg <config>` prints them: `{result["command"]}`, {result["date"]}.)']
    return '\n'.join(lines) + '\n'


ULTRALYTICS_HEADS = {'yolov5': 'YOLOv5u', 'yolo11': 'YOLO11', 'yolo26': 'YOLO26'}
BACKBONES = {'conv-s': 'Conv-S', 'conv-m': 'Conv-M', 'hybrid-m': 'Hybrid-M', 'conv-l': 'Conv-L', 'hybrid-l': 'Hybrid-L'}


def ultralytics_config_table(result):
    """docs/ultralytics.md: every shipped Ultralytics-package config beside its stock twin, by head
    family, scale and backbone."""
    def parts(config):  # 'yolo11s-mnv4-hybrid-m.yaml' -> ('yolo11', 's', 'hybrid-m')
        family = next(f for f in ULTRALYTICS_HEADS if config.startswith(f))
        return family, config[len(family)], config.split('-mnv4-')[1].removesuffix('.yaml')
    rows = sorted(((parts(r['config']), r) for r in result['rows']),
                  key=lambda p: (list(ULTRALYTICS_HEADS).index(p[0][0]), p[0][1], list(BACKBONES).index(p[0][2])))
    lines = ['| config | backbone | head (scale) | params | GFLOPs (640) | stock twin: params, GFLOPs |',
             '|---|---|---|---|---|---|']
    for (family, scale, backbone), r in rows:
        twin = result['twins'][r['twin']]
        lines.append(f'| `{r["config"]}` | {BACKBONES[backbone]} | {ULTRALYTICS_HEADS[family]} ({scale}) | {r["params"]:,} | '
                     f'{r["gflops_640"]:.2f} | {r["twin"]}: {twin["params"]:,}, {twin["gflops_640"]:.2f} |')
    lines += ['', f'({result["classes"]} classes, unfused models as built; GFLOPs by torch\'s FLOP counter at 640, '
                  f'attention included, as the benchmark counts them: `{result["command"]}`, {result["date"]}, '
                  f'{result["machine"]}.)']
    return '\n'.join(lines) + '\n'


def tensorrt_line(result):
    """docs/export.md: the GPU run's CUDA-graph fp16 ratios at 640 (scripts/benchmark_tensorrt.py)."""
    rows = {r['model']: r for r in result['rows'] if r['size'] == 640}
    pairs = [('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'), ('MNv4-Hybrid-M', 'MNv4-Conv-M')]
    ratios = ', '.join(f'{a.replace("MNv4-", "")} / {b.replace("MNv4-", "")} {rows[a]["graph_fp16"] / rows[b]["graph_fp16"]:.2f}'
                       for a, b in pairs)
    eager = [r['torch_fp32'] for r in rows.values()]
    graph = ' / '.join(f'{r["graph_fp16"]:.2f}' for r in rows.values())
    return (f'CUDA-graph fp16 at 640, {ratios} ({graph} ms for '
            f'{", ".join(rows)}); eager PyTorch at batch 1 is bound by kernel launches ({min(eager):.0f}-{max(eager):.0f} ms '
            f'for all), so its ratios count layers, not work\n')


RKNN_LINE = re.compile(r'^- (\S+) (int8|fp16) \(([\d.]+ MB)\): (.*); ops on the CPU: (.*)$')


def rknn_table(text):
    """docs/export.md: the RKNN simulator's agreement with fp32 per case (scripts/rknn_check.py report)."""
    cases = {}
    for line in text.splitlines():
        m = RKNN_LINE.match(line)
        if m:
            case = cases.setdefault(m[1], {})
            case[m[2]] = m[4].replace('score signal-to-noise per level (P3/P4/P5) ', '').replace(
                'detections (conf 0.1, same class, IoU >= 0.5): ', '') + f'; {m[3]}'
            case['cpu'] = m[5]
    lines = ['| case | int8 (`w8a8`) against fp32 | fp16 against fp32 | ops the toolkit leaves to the CPU |',
             '|---|---|---|---|']
    for name, case in cases.items():
        label = name + ('' if name.endswith('trained') else ', untrained')
        lines.append(f'| {label} | {case.get("int8", "-")} | {case.get("fp16", "-")} | {case["cpu"]} |')
    return '\n'.join(lines) + '\n'


def timm_weights_table(weights):
    """docs/design.md: timm's ImageNet weights per variant, from yolov5_mnv4.timm_weights.TIMM_WEIGHTS."""
    lines = ['| variant | timm model (`--timm`, or the variant name) | resolution | ImageNet top-1 | backbone params |',
             '|---|---|---|---|---|']
    lines += [f'| {w.variant} | `{w.name}` | {w.resolution} | {w.top1:.1f} | {w.backbone_params:,} |'
              for w in weights.values()]
    return '\n'.join(lines) + '\n'


def startup_cost(result):
    """docs/ultralytics.md: what the start-up hook adds to `python -c pass` (scripts/benchmark_startup.py)."""
    on, off = result['median_ms']['on'], result['median_ms']['off']
    return (f'importing the hook takes {result["hook_import_us"]:.0f} us, {result["hook_share"]:.1%} of the '
            f'{on:.1f} ms that `python -c pass` takes; armed against switched off, {result["ratio"]:.2f}x '
            f'({on:.1f} against {off:.1f} ms; medians of {result["runs"]} interleaved runs, `{result["command"]}`, '
            f'{result["date"]}, {result["machine"]})\n')


def _markdown_rows(text):
    """The rows of every Markdown table in `text`, as {column: cell} dicts."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith('|'):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if header is None:
            header = cells
        elif not set(''.join(cells)) <= set('-: '):
            rows.append(dict(zip(header, cells)))
    return rows


EDGE_RATIO_PAIRS = [('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-S-ReLU', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'),
                    ('MNv4-Conv-M-ReLU', 'yolov5s'), ('MNv4-Hybrid-M', 'MNv4-Conv-M')]


# the edge result files' column names as bench.variant() keys (for state())
EDGE_KEYS = {'ort_fp32': 'onnxruntime', 'ov_f32': 'openvino', 'ov_int8': 'openvino-int8', 'tflite_fp32': 'tflite',
             'tflite_fp16': 'tflite-fp16', 'tflite_int8': 'tflite-int8', 'ncnn_fp32': 'ncnn', 'mnn_fp32': 'mnn',
             'mnn_int8': 'mnn-int8', 'et_fp32': 'executorch', 'et_int8': 'executorch-int8'}


def edge_ratios(text):
    """docs/benchmarks.md: same-run ratios of medians in TFLite int8 and OpenVINO int8 at 320 / 640
    (the ratio lines under scripts/benchmark_edge.py's table, the one source of these two)."""
    ratios = ratio_lines(text)
    lines = ['| ours / reference | TFLite int8 320 / 640 | OpenVINO int8 320 / 640 |', '|---|---|---|']
    for ours, theirs in EDGE_RATIO_PAIRS:
        cells = [_ratio_cell(ratios, ours, theirs, column, where='benchmark_edge.md') for column in ('tflite_int8', 'ov_int8')]
        lines.append(f'| {ours} / {theirs} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


RUNTIME_COLUMNS = {'320': ['ncnn_fp32', 'mnn_fp32', 'et_fp32', 'mnn_int8', 'et_int8'], '640': ['ncnn_fp32', 'mnn_fp32', 'et_fp32']}
RUNTIME_NAMES = {'ncnn_fp32': 'NCNN fp32', 'mnn_fp32': 'MNN fp32', 'et_fp32': 'ET fp32', 'mnn_int8': 'MNN int8',
                 'et_int8': 'ET int8'}


def runtimes_table(texts):
    """docs/benchmarks.md: NCNN, MNN and ExecuTorch at 320 and 640, from the two runs' tables
    (benchmark_edge_runtimes_320.md and _640.md)."""
    rows = [r for text in texts.values() for r in _markdown_rows(text) if 'ncnn_fp32' in r]
    by = {(r['model'], r['size']): r for r in rows}
    models = list(dict.fromkeys(r['model'] for r in rows))
    header = ['model', 'params (M)', 'GFLOPs 320 / 640'] + [f'{RUNTIME_NAMES[c]} {size}' for size, columns in
                                                           RUNTIME_COLUMNS.items() for c in columns]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for model in models:
        small, large = by[(model, '320')], by[(model, '640')]
        cells = [model, small['params (M)'], f'{small["GFLOPs"]} / {large["GFLOPs"]}']
        cells += [by[(model, size)][c] for size, columns in RUNTIME_COLUMNS.items() for c in columns]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


# docs/export.md's per-block table: (variant, block, input, attention) rows of benchmark_int8_attention.md
INT8_ATTENTION_ROWS = [('hybrid_medium', '/16', '640', 'perturbed'), ('hybrid_medium', '/16', '640', 'peaked'),
                       ('hybrid_medium', '/32', '640', 'perturbed'), ('hybrid_medium', '/32', '640', 'peaked'),
                       ('hybrid_large', '/16', '640', 'peaked'), ('hybrid_large', '/32', '640', 'peaked'),
                       ('hybrid_medium', '/16', '320', 'peaked'), ('hybrid_medium', '/32', '320', 'peaked')]
VARIANT_LABELS = {'hybrid_medium': 'Hybrid-M', 'hybrid_large': 'Hybrid-L'}


def int8_attention_rows(text):
    """docs/export.md: the attention blocks' int8 table, the rows INT8_ATTENTION_ROWS of the result file."""
    by = {(r['variant'], r['block'], r['input'], r['attention']): r for r in _markdown_rows(text) if 'variant' in r}
    lines = ['| block | input | attention | ms: full int8 / float attention / float block | XNNPACK partitions | '
             'branch SNR dB (vs fp32 PyTorch) |', '|---|---|---|---|---|---|']
    seen = set()
    for key in INT8_ATTENTION_ROWS:
        r = by[key]
        label = f'{VARIANT_LABELS[key[0]]} {key[1]}'
        if (key[0], key[1]) not in seen:
            label += f' ({r["map"]})'
            seen.add((key[0], key[1]))
        attention = 'near-uniform' if key[3] == 'perturbed' else key[3]
        lines.append(f'| {label} | {key[2]} | {attention} | {r["ms: full int8 / float attention / float block"]} | '
                     f'{r["XNNPACK partitions"]} | {r["branch SNR dB"]} |')
    return '\n'.join(lines) + '\n'


def int8_attention_speedup(text):
    """'2.6-8.9x': over every block of the result file, full int8 time over float attention time."""
    ratios = [float(a) / float(b) for r in _markdown_rows(text) if 'variant' in r
              for a, b, _ in [r['ms: full int8 / float attention / float block'].split(' / ')]]
    return f'{min(ratios):.1f}-{max(ratios):.1f}x\n'


SHORT = {'conv_small': 'Conv-S', 'conv_medium': 'Conv-M', 'conv_large': 'Conv-L', 'hybrid_medium': 'Hybrid-M',
         'hybrid_large': 'Hybrid-L'}


def backbones_line(result):
    """docs/benchmarks.md: our backbones' latency over timm's, same-run ratios (scripts/benchmark.py --backbones)."""
    parts = [f'{r["ratio"]["median"]:.2f} ({r["ratio"]["min"]:.2f}-{r["ratio"]["max"]:.2f}) {SHORT[r["variant"]]}'
             for r in result['rows']]
    terms = result.get('terms', 'ours fused, timm unfused and NCHW')
    return (f'{", ".join(parts)} (`{command_of(result)}`, {result["date"]}, {result["machine"]}; {result["size"]} px, '
            f'eager, {terms}, median of {result["runs"]} runs of {result["reps"]} interleaved rounds, range)\n')


STAGE_NAMES = ['stem', '/4', '/8', '/16', '/32']


def layers_line(result):
    """docs/benchmarks.md: where the time goes, from scripts/benchmark.py --layers (per layer, sequential)."""
    by = {m['model']: m for m in result['models']}
    ours, theirs = by['MNv4-Conv-S'], by['yolov5n']
    stages = ', '.join(f'{name} {layer["ms"]:.0f}' for name, layer in zip(STAGE_NAMES, ours['layers']))
    sppf = next(layer['ms'] for layer in ours['layers'] if layer['type'] == 'SPPF')
    return (f'MNv4-Conv-S\'s backbone with SPPF {ours["backbone_ms"]:.0f} ms ({stages}, SPPF {sppf:.0f}) against '
            f'{theirs["backbone_ms"]:.0f} ms for yolov5n\'s backbone, its head {ours["head_ms"]:.0f} against '
            f'{theirs["head_ms"]:.0f} ms, and Detect {ours["detect_ms"]:.0f} against {theirs["detect_ms"]:.0f} ms '
            f'(`{result["command"]}`, {result["date"]}, {result["machine"]}; {result["size"]} px, median of {result["reps"]} rounds)\n')


EDGE_RATIO_LINE = re.compile(r'^(\S+)/(\S+) @(\d+): (.*)$')


def ratio_lines(text):
    """{(ours, reference, size): {runtime column: ratio}}: the same-run ratios of medians that
    scripts/benchmark_edge.py writes under its tables (from unrounded medians)."""
    ratios = {}
    for line in text.splitlines():
        m = EDGE_RATIO_LINE.match(line)
        if m:
            ratios[(m[1], m[2], m[3])] = {k: float(v) for k, v in (item.split() for item in m[4].split(', '))}
    return ratios


def edge_ratio_lines(texts):
    """ratio_lines() of every benchmark_edge_runtimes_*.md among `texts` ({file name: text})."""
    return {key: value for name, text in texts.items() if name.startswith('benchmark_edge_runtimes_')
            for key, value in ratio_lines(text).items()}


def hybrid_int8(text):
    """docs/benchmarks.md: the hybrids in TFLite int8 with float attention (benchmark_edge.md)."""
    ratios = ratio_lines(text)
    gains = {(m[1], m[2]): float(m[3]) for m in
             re.finditer(r'^MNv4-(\S+) @(\d+): int8 with float attention / full-integer int8 = ([\d.]+)$', text, re.M)}
    pair = ('MNv4-Hybrid-M', 'MNv4-Conv-M')
    for size in ('320', '640'):
        for column in ('tflite_int8', 'ov_int8'):
            state('/'.join(pair), EDGE_KEYS[column], size, ratios[(*pair, size)][column], 'benchmark_edge.md')
    return (f'Hybrid-M / Conv-M {ratios[(*pair, "320")]["tflite_int8"]:.2f} at 320 and '
            f'{ratios[(*pair, "640")]["tflite_int8"]:.2f} at 640, where OpenVINO int8 (nncf, which quantizes the '
            f'attention matmuls) is at {ratios[(*pair, "320")]["ov_int8"]:.2f} / {ratios[(*pair, "640")]["ov_int8"]:.2f}; '
            f'against the full-integer model that export.py writes, ours takes '
            + ' and '.join(f'{gains[(v, "320")]:.2f} / {gains[(v, "640")]:.2f} ({v})' for v in ('Hybrid-M', 'Hybrid-L'))
            + ' of its time at 320 / 640\n')


# The int8 columns of benchmark_edge_runtimes_*.md: fp32 ratios come from `yolov5-mnv4 benchmark`'s run,
# TFLite and OpenVINO int8 from benchmark_edge.md (one source per ratio)
EDGE_RATIO_COLUMNS = [('MNN int8 320', 'mnn_int8', False), ('ET int8 320', 'et_int8', False)]


def _ratio_cell(ratios, ours, theirs, column, both_sizes=True, where=''):
    sizes = ('320', '640') if both_sizes else ('320',)
    cells = []
    for size in sizes:
        value = ratios.get((ours, theirs, size), {}).get(column)
        if value is not None:
            state(f'{ours}/{theirs}', EDGE_KEYS[column], size, value, where)
        cells.append('-' if value is None else f'{value:.2f}')
    return ' / '.join(cells)


def edge_runtime_ratios(texts):
    """docs/benchmarks.md: ours / reference in MNN and ExecuTorch int8, same run, 320."""
    ratios = edge_ratio_lines(texts)
    lines = ['| ours / reference | ' + ' | '.join(c[0] for c in EDGE_RATIO_COLUMNS) + ' |',
             '|' + '---|' * (len(EDGE_RATIO_COLUMNS) + 1)]
    for ours, theirs in EDGE_RATIO_PAIRS:
        cells = [_ratio_cell(ratios, ours, theirs, column, both, 'benchmark_edge_runtimes_*.md')
                 for _, column, both in EDGE_RATIO_COLUMNS]
        lines.append(f'| {ours.replace("MNv4-", "")} / {theirs.replace("MNv4-", "")} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _records(data):
    return (data if 'records' in data else data['parity.json'])['records']


def _under(data, prefix):
    """{the rest of the key: record} of the records whose key starts with `prefix` ('val.py/')."""
    return {k[len(prefix):]: r for k, r in _records(data).items() if k.startswith(prefix)}


def _errors(records, prefix):
    """'boxes 3.9e-7 - 1.8e-5, scores ...': the range over the records under `prefix` (real images only
    for the runtimes' checks, whose noise image has its own, looser bound)."""
    found = [r for k, r in records.items() if k.startswith(prefix) and not k.endswith('/random')]
    if not found:
        return 'not recorded'
    def span(key):
        low, high = _sci(min(r[key] for r in found)), _sci(max(r[key] for r in found))
        return high if low == high else f'{low} to {high}'
    first = found[0]
    bounds = (f'{_bound(first["box_bound"])} / {_bound(first["score_bound"])}' if 'box_bound' in first
              else _bound(first['bound']))
    return f'boxes {span("boxes")}, scores {span("scores")} (bound {bounds})'


def _sci(value):
    """4.4e-07 -> '4.4e-7'"""
    return f'{value:.1e}'.replace('e-0', 'e-')


def _bound(value):
    """A test's bound as written in the test: 2e-4, 0.15."""
    text = f'{value:.0e}'
    return text.replace('e-0', 'e-') if float(text) == value and value < 0.01 else f'{value:g}'


def _bounds(bounds):
    """'score SNR 14 dB on every level, recall 0.8, precision 0.8' from a record's bounds."""
    return ', '.join(f'{name} {value:.0f} dB on every level' if name == 'score SNR' else f'{name} {value}'
                     for name, value in bounds.items())


def _snr(record, detections=True):
    text = ' / '.join(f'{db:.1f}' for db in record['snr']) + ' dB'
    if detections and 'recall' in record:
        text += f', recall {record["recall"]:.2f}, precision {record["precision"]:.2f}'
    return text


# docs/export.md's formats at a glance: (format, command, needs, parity record prefixes or a text,
# int8 record or a text, edge-benchmark ratio columns)
FORMAT_ROWS = [
    ('TorchScript, ONNX', '`export.py --include torchscript onnx`', '(core)', 'ONNX Runtime: bound 1e-4 (smoke test)', '-',
     [('ORT fp32', 'ort_fp32')]),
    ('OpenVINO', '`export.py --include openvino` (master trees; v7.0\'s exporter fails for stock models too)', '`[edge]`',
     'not bounded in CI', 'nncf int8, not checked against fp32', [('f32', 'ov_f32'), ('int8', 'ov_int8')]),
    ('SavedModel, GraphDef, TFLite fp32', '`export.py --include saved_model pb tflite`', '`[tflite]`',
     ['fp32/SavedModel/', 'fp32/GraphDef/', 'fp32/TFLite fp32/'], '-', [('fp32', 'tflite_fp32')]),
    ('TFLite fp16 weights', '`export.py --include tflite`', '`[tflite]`', ['fp16/'], '-', [('fp16', 'tflite_fp16')]),
    ('TFLite int8', '`yolov5-mnv4-export --include tflite --int8 --data ...` (`export.py --int8` loses the boxes: '
     '"int8 accuracy" below)', '`[tflite]`', '-',
     ['int8/tflite/testbed-conv-s', 'int8/tflite float attention/hybrid-m-peaked'],
     [('int8', 'tflite_int8')]),
    ('NCNN', '`yolov5-mnv4-export --include ncnn`', '`[ncnn]`', ['fp32/ncnn/'], "not offered: NCNN's int8 tools are C++ only",
     [('fp32', 'ncnn_fp32')]),
    ('MNN', '`yolov5-mnv4-export --include mnn [--int8 --data ...]`', '`[mnn]`', ['fp32/mnn/'],
     ['int8/mnn/testbed-conv-s'],
     [('fp32', 'mnn_fp32'), ('int8', 'mnn_int8')]),
    ('ExecuTorch (XNNPACK)', '`yolov5-mnv4-export --include executorch [--int8 --data ...]`', '`[executorch]`',
     ['fp32/executorch/'], ['int8/executorch/testbed-conv-s'], [('fp32', 'et_fp32'), ('int8', 'et_int8')]),
]


def format_ratios(data):
    """{(ours, theirs, size): {edge column: ratio}} from the one source of each: fp32 from the command's
    full run (its fair ratios: in PyTorch the stock model's faster layout), TFLite fp16 / int8 and
    OpenVINO int8 from benchmark_edge.md, MNN and ExecuTorch int8 from benchmark_edge_runtimes_*.md."""
    ratios = {}
    keys = {key: column for column, key in EDGE_KEYS.items()}
    for key, pairs in data['benchmark_command.json']['fair_ratios'].items():
        runtime, size = key.rsplit('_', 1)
        for pair, r in pairs.items():
            if runtime in keys:
                ratios.setdefault((*pair.split('/'), size), {})[keys[runtime]] = r['median']
    sources = [(ratio_lines(data['benchmark_edge.md']), ('tflite_fp16', 'tflite_int8', 'ov_int8')),
               (edge_ratio_lines(data), ('mnn_int8', 'et_int8'))]
    for lines, columns in sources:
        for key, values in lines.items():
            ratios.setdefault(key, {}).update({c: v for c, v in values.items() if c in columns})
    return ratios


def format_table(data):
    """docs/export.md: every format, its parity and int8 agreement (tests, parity.json) and its
    latency ratios (format_ratios)."""
    records, ratios = _records(data), format_ratios(data)
    lines = ['| format | command | needs | parity against fused fp32 PyTorch (CI) | int8 against fp32 (CI) | '
             'Conv-S / yolov5n 320 / 640 | Conv-M / yolov5s 320 / 640 |', '|---|---|---|---|---|---|---|']
    for name, command, needs, parity, int8, columns in FORMAT_ROWS:
        if isinstance(parity, str):
            parity_cell = parity
        else:  # formats with the same errors (SavedModel and GraphDef: one graph) share one entry
            by_text = {}
            for prefix in parity:
                by_text.setdefault(_errors(records, prefix), []).append(prefix.split('/')[1])
            parity_cell = '; '.join(text if len(parity) == 1 else f'{", ".join(names)}: {text}'
                                    for text, names in by_text.items())
        int8_cell = int8 if isinstance(int8, str) else '; '.join(
            ('Hybrid-M (untrained, attention peaked), float attention: ' if 'hybrid' in key else 'testbed Conv-S: ')
            + _snr(records[key]) + (f' (fails {", ".join(records[key]["fails"])})' if records[key].get('fails') else '')
            for key in int8 if key in records)
        latency = [', '.join(f'{label} {_ratio_cell(ratios, ours, theirs, column, where="formats table")}'
                             for label, column in columns)
                   for ours, theirs in (('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'))]
        lines.append(f'| {name} | {command} | {needs} | {parity_cell} | {int8_cell or "not recorded"} | '
                     + ' | '.join(latency) + ' |')
    return '\n'.join(lines) + '\n'


RUNTIME_CASES = {'conv-s-trained': 'trained Conv-S-ReLU (160)', 'hybrid-m-peaked': 'Hybrid-M, peaked attention (256)',
                 'yolov5n': 'yolov5n (160)'}


def runtime_parity_table(data):
    """docs/export.md: NCNN, MNN, ExecuTorch against fused PyTorch per model, real images, and int8."""
    records = _records(data)
    lines = ['| format | ' + ' | '.join(RUNTIME_CASES.values()) + ' | int8, testbed Conv-S (320, 32 of its images) |',
             '|' + '---|' * (len(RUNTIME_CASES) + 2)]
    for fmt, label in (('ncnn', 'NCNN'), ('mnn', 'MNN'), ('executorch', 'ExecuTorch')):
        cells = [_errors(records, f'fp32/{fmt}/{case}/') for case in RUNTIME_CASES]
        int8 = records.get(f'int8/{fmt}/testbed-conv-s')
        cells.append(_snr(int8) + f' (bounds {_bounds(int8["bounds"])}' + (f'; fails {", ".join(int8["fails"])})'
                     if int8.get('fails') else ')') if int8 else 'not offered')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


OUTSIDE_CASES = {**RUNTIME_CASES, 'int8': 'testbed Conv-S, int8 (320)',
                 'attention-block': 'one Mobile MQA block, as exported',
                 'attention-block-4d-matmul': 'the same block with 4-D matmuls (the control)'}


def executorch_outside_table(data):
    """docs/export.md: the ops ExecuTorch's XNNPACK partitioner leaves outside, per model (test_runtimes)."""
    records = _under(data, 'executorch_outside/')
    lines = ['| model | ops outside the XNNPACK delegate |', '|---|---|']
    for case, label in OUTSIDE_CASES.items():
        ops = records[case]['ops'] if case in records else None
        cell = ('not recorded' if ops is None else
                ', '.join(f'`{op.split(".")[1]}` {n}' for op, n in sorted(ops.items())) or 'none')
        lines.append(f'| {label} | {cell} |')
    return '\n'.join(lines) + '\n'


STAGE_CHECKS = {'Keras': ('Keras stages (models/tf.py) against PyTorch', 'stage', 'branch'),
                'ONNX': ('ONNX Runtime against eager PyTorch', 'features', 'branch'),
                'timm': ("our backbone against timm's", 'features', 'branch')}


def stage_table(data):
    """docs/export.md: the backbone-level parity checks (largest error over the cases of each check)."""
    lines = ['| check | cases | output (bound) | attention branch (bound) |', '|---|---|---|---|']
    for check, (label, output, branch) in STAGE_CHECKS.items():
        found = _under(data, f'stage/{check}/')
        if not found:
            lines.append(f'| {label} | not recorded | | |')
            continue
        worst = {key: max(r[key] for r in found.values()) for key in (output, branch)}
        first = next(iter(found.values()))
        lines.append(f'| {label} | {", ".join(found)} | {_sci(worst[output])} ({_bound(first[output + "_bound"])}) | '
                     f'{_sci(worst[branch])} ({_bound(first[branch + "_bound"])}) |')
    return '\n'.join(lines) + '\n'


def val_table(data):
    """docs/export.md: YOLOv5's val.py on the trained Conv-S-ReLU and its TF exports (test_tf_export)."""
    records = _under(data, 'val.py/')
    if not records:
        return 'not recorded\n'
    first = next(iter(records.values()))
    lines = [f'| `val.py --weights` ({first["data"]}, {first["size"]} px) | P | R | mAP50 | mAP50-95 |',
             '|---|---|---|---|---|']
    lines += [f'| {name} | ' + ' | '.join(f'{r[k]:.4g}' for k in ('P', 'R', 'mAP50', 'mAP50-95')) + ' |'
              for name, r in records.items()]
    return '\n'.join(lines) + '\n'


def controls_table(data):
    """docs/export.md: each negative control, what it measured and the bound it fails."""
    names = {'fp32 Keras': 'SavedModel, GraphDef, TFLite fp32 (the Keras detector they convert)',
             'int8 TFLite': 'TFLite int8', 'int8 TFLite float attention': 'TFLite int8, float attention (Hybrid-M)',
             'int8': 'ExecuTorch int8 (testbed Conv-S)',
             'ncnn': 'NCNN fp32', 'mnn': 'MNN fp32', 'executorch': 'ExecuTorch fp32',
             'Keras stage': 'Keras stages against PyTorch', 'ONNX attention branch': 'ONNX attention branches',
             'timm attention branch': "attention branches against timm's", 'timm features': "features against timm's"}
    lines = ['| check | broken copy | measured | bound | fails |', '|---|---|---|---|---|']
    for key, r in _under(data, 'control/').items():
        check, bug = key.split('/')
        if 'stage' in r:
            branch = f', attention branch {_sci(r["branch"])}' if r['variant'].startswith('hybrid') else ''
            measured = f'stage {_sci(r["stage"])}{branch} ({r["variant"]})'
            bound = f'stage {_bound(r["stage_bound"])}, branch {_bound(r["branch_bound"])}'
        elif 'features_bound' in r:
            measured, bound = f'features {_sci(r["features"])} ({r["variant"]})', _bound(r['features_bound'])
        elif 'branch_bound' in r:
            measured, bound = f'attention branch {_sci(r["branch"])} ({r["variant"]})', _bound(r['branch_bound'])
        elif 'worst' in r:
            measured, bound = f'{r["worst"]:.2f} (both errors, every image)', _bound(r['bound'])
        elif 'snr' in r and 'bounds' in r:
            measured, bound = _snr(r), _bounds(r['bounds'])
        elif 'snr' in r:
            measured, bound = _snr(r), r['bound_db']
            if isinstance(bound, dict):
                bound = ', '.join(f'{fmt} {db:.0f} dB' for fmt, db in bound.items()) + ' on every level' + (
                    f'; recall {r["recall_bound"]}, precision {r["precision_bound"]}' if 'recall_bound' in r else '')
            elif isinstance(bound, list):
                bound = ' / '.join(f'{db:.0f}' for db in bound) + ' dB'
            else:
                bound = f'{bound:.0f} dB on every level'
        else:
            measured = f'boxes {r["boxes"]:.2f}, scores {r["scores"]:.2f}'
            bound = f'boxes {_bound(r["box_bound"])}, scores {_bound(r["score_bound"])}'
        fails = r.get('fails') or (['attention branch'] if 'branch_bound' in r and 'stage' not in r
                                   else ['boxes or scores, every image'] if 'worst' in r else [])
        lines.append(f'| {names[check]} | {bug} | {measured} | {bound} | {", ".join(fails) or "not recorded"} |')
    return '\n'.join(lines) + '\n'


HYBRID_INIT_ROWS = [('conv-m', 'conv_medium init plugin', 'Conv-M (no layer scale)'),
                    ('hybrid-m-init-1e-5', 'hybrid_medium init reference', "Hybrid-M, 1e-5 everywhere (timm's)"),
                    ('hybrid-m-init-1', 'hybrid_medium init keep-signal', 'Hybrid-M, 1.0 without residual (ours)')]


def hybrid_init_table(result):
    """docs/design.md: stage outputs fresh and trained, and the last epoch's losses, per init
    (scripts/benchmark_hybrid_init.py)."""
    def std(v):
        return _sci(v) if v < 0.01 else f'{v:.2g}' if v < 0.1 else f'{v:.2f}' if v < 1 else f'{v:.1f}'

    def stds(values):
        return ' / '.join(std(v) for v in values[2:])
    last = len(next(iter(result['runs'].values()))['epochs'])
    lines = ['| | stage outputs, fresh (std; /8, /16, /32) | box / obj / cls loss, epoch ' + str(last)
             + f' | stage outputs after {last} epochs (std; /8, /16, /32) |', '|---|---|---|---|']
    for run, fresh, label in HYBRID_INIT_ROWS:
        r = result['runs'][run]
        losses = ' / '.join(f'{r["epochs"][-1][f"train/{k}_loss"]:.4f}' for k in ('box', 'obj', 'cls'))
        lines.append(f'| {label} | {stds(result["fresh_stage_std"][fresh])} | {losses} | {stds(r["trained_stage_std"])} |')
    return '\n'.join(lines) + '\n'


def _task_ratios(text):
    """{(runtime, size): {'ours/theirs': ratio}} from the ratio lines of benchmark_tasks.md."""
    ratios = {}
    for line in text.splitlines():
        m = re.match(r'^(torch|ort) @(\d+): (.*)$', line)
        if m:
            ratios[(m[1], m[2])] = {pair: float(r) for pair, r in (item.split() for item in m[3].split(', '))}
    return ratios


def task_ratios(text):
    """docs/benchmarks.md: the same-run ratios of scripts/benchmark.py --tasks at 640; in PyTorch only
    where the file timed the stock model in channels-last too, or where both models are ours (same
    layout); Conv-S / yolov5n is the command's (one source per ratio)."""
    ratios = _task_ratios(text)
    torch_, ort = ratios[('torch', '640')], ratios[('ort', '640')]
    fair_torch = CHANNELS_LAST in text
    lines = ['| at 640, same run | PyTorch | ONNX Runtime |', '|---|---|---|']
    for pair in [p for p in ort if p != 'MNv4-Conv-S/yolov5n']:
        ours_only = pair.split('/')[1].startswith('MNv4-')
        cell = f'{torch_[pair]:.2f}' if fair_torch or ours_only else '- (stock timed NCHW only)'
        lines.append(f'| {pair.replace("MNv4-", "").replace("/", " / ")} | {cell} | {ort[pair]:.2f} |')
    return '\n'.join(lines) + '\n'


def p2_cost(text):
    """docs/design.md: what the P2 level costs at 640 (benchmark_tasks.md)."""
    rows = {r['model']: r for r in _markdown_rows(text) if 'gflops_640' in r}
    torch_, ort = _task_ratios(text)[('torch', '640')], _task_ratios(text)[('ort', '640')]
    s, m = 'MNv4-Conv-S-P2/MNv4-Conv-S', 'MNv4-Conv-M-P2/MNv4-Conv-M'
    extra = [float(rows[f'{v}-P2']['gflops_640']) - float(rows[v]['gflops_640']) for v in ('MNv4-Conv-S', 'MNv4-Conv-M')]
    return (f'at 640 Conv-S-P2 takes {torch_[s]:.2f} x Conv-S\'s time in PyTorch ({ort[s]:.2f} x in ONNX Runtime) '
            f'and Conv-M-P2 {torch_[m]:.2f} x Conv-M\'s ({ort[m]:.2f} x), for +{extra[0]:.1f} / +{extra[1]:.1f} GFLOPs\n')


def command_tables(result):
    """docs/benchmarks.md: the tables `yolov5-mnv4 benchmark` printed, from its benchmark.json (the
    command's own table code)."""
    from yolov5_mnv4.cli.benchmark import table
    lines, ratio_lines, _ = table(result['rows'], result['ratios'], result['runtimes'], result['sizes'])
    for key, pairs in result['ratios'].items():
        runtime, size = key.rsplit('_', 1)
        for pair, r in pairs.items():
            state(pair, runtime, size, r['median'], 'benchmark_command.json ratios')
    command = command_of(result)
    method = (f'`{command}`, {result["date"]}, {result["machine"]}; {result["runs"]} runs of {result["reps"]} '
              f'interleaved rounds after {result["warmup"]} warm-ups; ms (IQR).')
    return '\n'.join([method, '', *lines, *ratio_lines]) + '\n'


TASK_LABELS = {'eval b1@320': 'eval batch 1 at 320', 'train step b8@160': 'SGD step batch 8 at 160'}


def weight_layouts_table(result):
    """docs/benchmarks.md: each weight layout's time in training, and its ratio to the plugin's."""
    layouts = result['layouts']
    names = {'plugin': "plugin's layout", 'all channels-last': 'all weights channels-last', 'all default': 'all weights default'}
    lines = [f'`{result["command"]}`, {result["date"]}, {result["machine"]}; median of {result["reps"]} interleaved '
             f'rounds, models in training (unfused), ms and the ratio to the plugin\'s layout:', '',
             '| model, task | ' + ' | '.join(names[k] for k in layouts) + ' |', '|' + '---|' * (len(layouts) + 1)]
    for r in result['rows']:
        lines.append(f'| {r["model"]}, {TASK_LABELS[r["task"]]} | '
                     + ' | '.join(f'{r[k]:.1f} ({r[k] / r["plugin"]:.3f})' for k in layouts) + ' |')
    return '\n'.join(lines) + '\n'


QAT_ROUTES = ['fp32', 'PTQ int8', 'fp32 fine-tune', 'QAT int8']
QAT_BASELINE = {'PTQ int8': 'fp32', 'QAT int8': 'fp32 fine-tune'}  # what each int8 route is a share of
MLPERF_SHARE = 0.98  # MLPerf Mobile asks int8 models for 98% of fp32 accuracy


def qat_table(results):
    """One table per testbed model (qat_*.json, written by `yolov5-mnv4 qat --compare --json`): mAP50-95
    and mAP50 of each route in each runtime; each int8 route as a share of the fp32 model it comes from
    (PTQ: the checkpoint; QAT: the fp32 fine-tune of the same schedule, in PyTorch); the latency of each
    file in the same run; then one line per model saying where int8 keeps 98%."""
    lines = []
    for name, result in sorted(results.items()):
        rows = result['rows']
        base = {route: next((r for r in rows if r['route'] == route and r['runtime'] == 'PyTorch'), None)
                for route in ('fp32', 'fp32 fine-tune')}
        model = Path(result['weights']).stem
        lines += [f'**{model}** ({result["val_images"]} training images at {result["imgsz"]}; QAT and the fp32 '
                  f'fine-tune: {_schedule(result["schedule"])})', '',
                  '| route | runtime | mAP50-95 | mAP50 | share of its fp32 | ms |', '|---|---|---|---|---|---|']
        kept = {}
        for r in sorted(rows, key=lambda r: (QAT_ROUTES.index(r['route']), r['runtime'] != 'PyTorch', r['runtime'])):
            ref = base.get(QAT_BASELINE.get(r['route'], ''))
            share = r['mAP50-95'] / ref['mAP50-95'] if ref and ref['mAP50-95'] else None
            if share is not None and r['runtime'] != 'PyTorch':
                kept.setdefault(r['route'], []).append((r['runtime'], share))
            ms = f'{r["latency_ms"]:.1f}' if r.get('latency_ms') else ''
            lines.append(f'| {r["route"]} | {r["runtime"]} | {r["mAP50-95"]:.3f} | {r["mAP50"]:.3f} | '
                         f'{f"{share:.1%}" if share is not None else ""} | {ms} |')
        if result.get('note'):
            lines += ['', f'({result["note"]}.)']
        lines += ['', '; '.join(f'{route} keeps ' + ', '.join(f'{share:.1%} in {runtime}' for runtime, share in shares)
                                + f' of {QAT_BASELINE[route]} mAP50-95 ('
                                + ('98% met' if all(s >= MLPERF_SHARE for _, s in shares) else '98% not met') + ')'
                                for route, shares in kept.items()) + '.', '']
    return '\n'.join(lines)


def _schedule(s):
    steps = f'{s["steps"]} steps' if s.get('steps') else f'{s["epochs"]} epochs'
    return f'{steps}, batch {s["batch"]}, AdamW lr {s["lr"]:g}, observers and BatchNorm frozen after {s["freeze_at"]:.0%}'


PTQ_RUNTIMES = [('torch', 'PyTorch fp32'), ('executorch-int8', 'ExecuTorch int8'),
                ('tflite-int8', 'TFLite int8 (yolov5-mnv4-export)'), ('openvino-int8', 'OpenVINO int8 (nncf)'), ('mnn-int8', 'MNN int8')]


def ptq_table(result):
    """mAP50-95 (mAP50) of each testbed checkpoint in fp32 and in each post-training int8 route of the
    commands (int8_ptq_testbed.json: `yolov5-mnv4 benchmark --weights ... --data ... --calibration`),
    with the share of fp32 mAP50-95 each keeps."""
    size = result['sizes'][0]
    columns = [(key, name) for key, name in PTQ_RUNTIMES if key in result['runtimes']]
    lines = ['| checkpoint | ' + ' | '.join(name for _, name in columns) + ' |', '|---|' + '---|' * len(columns)]
    for row in result['rows']:
        fp32 = row.get(f'torch_{size}_map')
        cells = []
        for key, _ in columns:
            m, m50 = row.get(f'{key}_{size}_map'), row.get(f'{key}_{size}_map50')
            share = f', {m / fp32:.1%}' if key != 'torch' and m is not None and fp32 else ''
            cells.append(f'{m:.3f} ({m50:.3f}){share}' if m is not None else 'not run')
        lines.append(f'| {Path(row["model"]).stem} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append(f'int8 time over fp32 time in the same runtime and run ({result["runs"]} run of {result["reps"]} '
                 f'interleaved rounds, batch 1, {result["machine"]}):')
    lines.append('')
    for row in result['rows']:
        ratios = [f'{name.replace(" int8", "").replace(" (yolov5-mnv4-export)", "").replace(" (nncf)", "")} '
                  f'{row[f"{key}_{size}_ms"] / row[f"{key[:-5]}_{size}_ms"]:.2f}'
                  for key, name in columns if key.endswith('-int8') and f'{key}_{size}_ms' in row
                  and f'{key[:-5]}_{size}_ms' in row]
        lines.append(f'- {Path(row["model"]).stem}: ' + ', '.join(ratios))
    return '\n'.join(lines) + '\n'


RENDERERS = {'qat': qat_table, 'ptq': ptq_table, 'tensorrt': tensorrt_line, 'rknn': rknn_table, 'ultralytics-configs': ultralytics_config_table, 'val': val_table, 'stages': stage_table, 'weight-layouts': weight_layouts_table, 'hybrid-int8': hybrid_int8, 'command-tables': command_tables, 'task-ratios': task_ratios, 'p2-cost': p2_cost, 'hybrid-init': hybrid_init_table, 'edge-runtime-ratios': edge_runtime_ratios, 'formats': format_table, 'runtime-parity': runtime_parity_table, 'executorch-outside': executorch_outside_table, 'controls': controls_table, 'configs': config_table, 'backbones': backbones_line, 'layers': layers_line, 'int8-attention': int8_attention_rows, 'speedup': int8_attention_speedup, 'edge-ratios': edge_ratios, 'runtimes': runtimes_table, 'startup': startup_cost, 'timm': timm_weights_table, 'headline': headline, 'speed-summary': speed_summary, 'twins': conv_s_twins, 'parity': ultralytics_parity, 'first-table': first_table, 'tables': tables, 'table': benchmark_table, 'slowdown': int8_attention_slowdown}


def rendered(text, results=RESULTS):
    """`text` with every generated block rewritten from its result file in `results`."""
    def replace(match):
        start, source, renderer, _, end = match.groups()
        if source.startswith('yolov5_mnv4.'):  # data in the package: module.ATTRIBUTE
            import importlib
            module, _, attribute = source.rpartition('.')
            data = getattr(importlib.import_module(module), attribute)
        elif '*' in source or '+' in source:  # every matching file, by name (JSON parsed)
            data = {f.name: json.loads(f.read_text()) if f.suffix == '.json' else f.read_text()
                    for pattern in source.split('+') for f in sorted(Path(results).glob(pattern))}
        else:
            text = (Path(results) / source).read_text()
            data = json.loads(text) if source.endswith('.json') else text
        return start + RENDERERS[renderer](data) + end
    return BLOCK.sub(replace, text)


def stale_blocks():
    """[(file, block) of every generated block whose text differs from what its result file gives]; the
    ratios the blocks state are left in STATED (stated_differently)."""
    stale = []
    STATED.clear()
    for path in DOCS:
        text = path.read_text()
        new = rendered(text)
        if new != text:
            old_blocks, new_blocks = BLOCK.findall(text), BLOCK.findall(new)
            stale += [(path.relative_to(REPO), f'{a[1]} {a[2]}') for a, b in zip(old_blocks, new_blocks) if a != b]
    return stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='change nothing; exit 1 if a block is out of date')
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_blocks()
        disagree = stated_differently()  # of the same rendering
        for path, block in stale:
            print(f'{path}: the block "{block}" differs from docs/results (python scripts/render_docs.py)')
        for pair, runtime, size, values in disagree:
            print(f'{pair} in {runtime_label(runtime)} at {size} is stated as ' + ' and '.join(
                f'{value} ({", ".join(where)})' for value, where in values.items()))
        return 1 if stale or disagree else 0
    for path in DOCS:
        text = path.read_text()
        new = rendered(text)
        if new != text:
            path.write_text(new)
            print(f'render_docs: rewrote {path.relative_to(REPO)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
