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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'docs' / 'results'
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
BLOCK = re.compile(r'(<!-- generated: (\S+) (\S+) -->\n)(.*?)(<!-- end generated -->)', re.S)
NAMES = {'yolov5n': 'yolov5n (stock)', 'yolov5s': 'yolov5s (stock)', 'blog MNv4-S': "the blog recipe's MNv4-S detector",
         'MNv4-Conv-S': 'MNv4-Conv-S (`yolov5-mnv4-conv-s.yaml`)', 'MNv4-Conv-M': 'MNv4-Conv-M (`yolov5-mnv4-conv-m.yaml`)'}


def method_line(result):
    return (f'`{result["command"]}`, {result["date"]}, {result["machine"]}; fused models, batch 1; each latency '
            f'is the median over {result["runs"]} runs of the run\'s median of {result["reps"]} interleaved rounds '
            f'(after {result["warmup"]} warm-ups)')


def ratio_text(result, size):
    """'Conv-S / yolov5n 0.95 (0.90-1.01) in PyTorch and ... in ONNX Runtime; ...' at `size`."""
    parts = []
    for pair in result['ratios'][f'torch_{size}']:
        ours, theirs = pair.split('/')
        each = [f'{r["median"]:.2f} ({r["min"]:.2f}-{r["max"]:.2f}) in {runtime}'
                for runtime, r in (('PyTorch', result['ratios'][f'torch_{size}'][pair]),
                                   ('ONNX Runtime', result['ratios'][f'ort_{size}'][pair]))]
        parts.append(f'{ours.replace("MNv4-", "")} / {theirs}: {" and ".join(each)}')
    return '; '.join(parts)


def headline(result):
    """The README's table: yolov5n, Conv-S and the blog recipe's model at 640, and the same-run ratios."""
    rows = {r['model']: r for r in result['rows']}
    lines = ['| model (640 px, batch 1, 2 CPU threads) | params (fused) | GFLOPs | PyTorch ms | ONNX Runtime ms |',
             '|---|---|---|---|---|']
    for name in ('yolov5n', 'MNv4-Conv-S', 'blog MNv4-S'):
        r = rows[name]
        lines.append(f'| {NAMES[name]} | {r["params"]:,} | {r["gflops_640"]:.2f} | {r["torch_640_ms"]:.1f} | '
                     f'{r["ort_640_ms"]:.1f} |')
    lines += ['', f'Latency ratios measured side by side in each run, median over the runs (range), at 640: '
                  f'{ratio_text(result, 640)}.', '',
              f'({method_line(result)}. More, and the edge runtimes, in [docs/benchmarks.md](docs/benchmarks.md).)']
    return '\n'.join(lines) + '\n'


def benchmark_table(result):
    """docs/benchmarks.md: every model at every size, with the IQR, memory and training columns."""
    sizes = result['sizes']
    header = ['model', 'params (fused)', 'GFLOPs']
    for size in sizes:
        header += [f'eager {size} ms (IQR)', f'ORT {size} ms (IQR)']
    header += [f'memory {max(sizes)} MB', 'train img/s']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in result['rows']:
        cells = [r['model'], f'{r["params"]:,}', f'{r["gflops_640"]:.2f}']
        for size in sizes:
            cells += [f'{r[f"{rt}_{size}_ms"]:.1f} ({r[f"{rt}_{size}_iqr"]:.1f})' for rt in ('torch', 'ort')]
        cells += [f'{r[f"mem_{max(sizes)}_mb"]:.1f}', str(r.get('train_img_s', ''))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', f'{method_line(result)}.', '']
    lines += [f'Same-run latency ratios at {size}, median over the runs (range): {ratio_text(result, size)}.'
              for size in sorted(sizes, reverse=True)]
    return '\n'.join(lines) + '\n'


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


def _median(cell):
    """'13.0 ±4.3' -> 13.0"""
    return float(cell.split()[0])


EDGE_RATIO_PAIRS = [('MNv4-Conv-S', 'yolov5n'), ('MNv4-Conv-S-ReLU', 'yolov5n'), ('MNv4-Conv-M', 'yolov5s'),
                    ('MNv4-Conv-M-ReLU', 'yolov5s'), ('MNv4-Hybrid-M', 'MNv4-Conv-M')]


def edge_ratios(text):
    """docs/benchmarks.md: same-run ratios of medians in TFLite int8 and OpenVINO int8 at 320 / 640
    (scripts/benchmark_edge.py's table)."""
    by = {(r['model'], r['size']): r for r in _markdown_rows(text) if 'tflite_int8' in r}
    lines = ['| ours / reference | TFLite int8 320 / 640 | OpenVINO int8 320 / 640 |', '|---|---|---|']
    for ours, theirs in EDGE_RATIO_PAIRS:
        cells = [' / '.join(f'{_median(by[(ours, size)][column]) / _median(by[(theirs, size)][column]):.2f}'
                            for size in ('320', '640')) for column in ('tflite_int8', 'ov_int8')]
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
    return (f'{", ".join(parts)} (`{result["command"]}`, {result["date"]}, {result["machine"]}; {result["size"]} px, fused '
            f'eager, median of {result["runs"]} runs of {result["reps"]} interleaved rounds, range)\n')


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


RENDERERS = {'configs': config_table, 'backbones': backbones_line, 'layers': layers_line, 'int8-attention': int8_attention_rows, 'speedup': int8_attention_speedup, 'edge-ratios': edge_ratios, 'runtimes': runtimes_table, 'startup': startup_cost, 'timm': timm_weights_table, 'headline': headline, 'twins': conv_s_twins, 'parity': ultralytics_parity, 'first-table': first_table, 'tables': tables, 'table': benchmark_table, 'slowdown': int8_attention_slowdown}


def rendered(text):
    """`text` with every generated block rewritten from its result file."""
    def replace(match):
        start, source, renderer, _, end = match.groups()
        if source.startswith('yolov5_mnv4.'):  # data in the package: module.ATTRIBUTE
            import importlib
            module, _, attribute = source.rpartition('.')
            data = getattr(importlib.import_module(module), attribute)
        elif '*' in source:  # every matching file, by name (JSON parsed)
            data = {f.name: json.loads(f.read_text()) if f.suffix == '.json' else f.read_text()
                    for f in sorted(RESULTS.glob(source))}
        else:
            text = (RESULTS / source).read_text()
            data = json.loads(text) if source.endswith('.json') else text
        return start + RENDERERS[renderer](data) + end
    return BLOCK.sub(replace, text)


def stale_blocks():
    """[(file, block) of every generated block whose text differs from what its result file gives]."""
    stale = []
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
        for path, block in stale:
            print(f'{path}: the block "{block}" differs from docs/results (python scripts/render_docs.py)')
        return 1 if stale else 0
    for path in DOCS:
        text = path.read_text()
        new = rendered(text)
        if new != text:
            path.write_text(new)
            print(f'render_docs: rewrote {path.relative_to(REPO)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
