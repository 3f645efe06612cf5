"""The benchmark's quick mode produces a complete table (numbers are not asserted: machines differ)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from helpers import pristine_copy
from yolov5_mnv4.bench import CHANNELS_LAST, fair_ratios, twin_ratios, verdict

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / 'tests' / 'data' / 'mnv4-conv-s-relu-coco128-160.pt'  # tests/data/README.md
MODELS = ['yolov5n', 'yolov5s', 'blog MNv4-S', 'MNv4-Conv-S', 'MNv4-Conv-M', 'MNv4-Hybrid-M', 'MNv4-Conv-L',
          'MNv4-Hybrid-L']


def test_quick_benchmark_table_is_complete(yolov5_dir, offline, tmp_path):
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, str(REPO / 'scripts' / 'benchmark.py'), '--yolov5', str(yolov5_dir),
                           '--quick', '--out', str(out)], capture_output=True, text=True, env=offline, timeout=900)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / 'benchmark.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['model'] for r in rows] == MODELS
    for row in rows:
        stock = row['model'] in ('yolov5n', 'yolov5s')  # timed in PyTorch in both layouts; ours as shipped
        assert all(value != '' for key, value in row.items() if CHANNELS_LAST not in key), row
        assert (row[f'{CHANNELS_LAST}_320_ms'] != '') == stock, row
        assert float(row['torch_320_ms']) > 0 and float(row['ort_320_ms']) > 0 and float(row['gflops_640']) > 0
    assert (out / 'latency_vs_gflops.png').stat().st_size > 10_000
    result = json.loads((out / 'benchmark.json').read_text())  # what scripts/render_docs.py reads
    assert result['command'].startswith('python scripts/benchmark.py') and result['date'] and result['runs'] == 1
    by = {r['model']: r for r in result['rows']}
    # ratios to the stock models come from the command's run only: this script states the recipe's
    assert list(result['ratios']) == ['ort_320'] and list(result['ratios']['ort_320']) == ['MNv4-Conv-S/blog MNv4-S']
    ratio = result['ratios']['ort_320']['MNv4-Conv-S/blog MNv4-S']
    same_run = by['MNv4-Conv-S']['ort_320_runs'][0] / by['blog MNv4-S']['ort_320_runs'][0]
    assert abs(ratio['median'] - same_run) < 2e-3 and ratio['min'] <= ratio['median'] <= ratio['max']


def test_benchmark_command_measures_the_accuracy_of_a_checkpoint_in_each_runtime(yolov5_dir, offline, tmp_path):
    """`yolov5-mnv4 benchmark --weights best.pt --data`: the trained Conv-S-ReLU (tests/data) on the shipped
    coco64 val images at 160, in PyTorch and ONNX Runtime: the same mAP in both (a float export that
    lost accuracy would show), near what YOLOv5's val.py reports for it (mAP50 0.0050, mAP50-95 0.0015,
    measured 2026-12-07 with rectangular batches; our square letterbox gave 0.0036 / 0.0011)."""
    from yolov5_mnv4.resources import dataset_yaml
    data = dataset_yaml(REPO / 'tests' / 'data' / 'coco64', tmp_path / 'data')
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'yolov5_mnv4', 'benchmark', '--models', '--weights',
                           str(TRAINED), '--data', str(data),
                           '--sizes', '160', '--runtimes', 'torch', 'onnxruntime', '--runs', '1', '--reps', '2',
                           '--warmup', '1', '--yolov5', str(yolov5_dir), '--out', str(out)],
                          capture_output=True, text=True, env=offline, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row, = json.loads((out / 'benchmark.json').read_text())['rows']
    maps = {runtime: (row[f'{runtime}_160_map50'], row[f'{runtime}_160_map']) for runtime in ('torch', 'onnxruntime')}
    print(maps)
    assert abs(maps['torch'][0] - maps['onnxruntime'][0]) < 2e-4 and abs(maps['torch'][1] - maps['onnxruntime'][1]) < 2e-4
    assert 0.0025 < maps['torch'][0] < 0.0075 and 0.0007 < maps['torch'][1] < 0.0025


def test_mean_average_precision_against_hand_computed_cases():
    """The benchmark's mAP on cases worked out by hand, and controls that must lower it."""
    import numpy as np

    from yolov5_mnv4.bench import mean_average_precision
    truth = [np.array([[0, 10, 10, 50, 50], [1, 60, 60, 100, 100]], float)]
    perfect = [np.array([[10, 10, 50, 50, 0.9, 0], [60, 60, 100, 100, 0.8, 1]], float)]
    assert mean_average_precision(perfect, truth) == (1.0, 1.0)
    shifted = [np.array([[14, 10, 54, 50, 0.9, 0], [60, 60, 100, 100, 0.8, 1]], float)]  # IoU 0.818 on class 0
    assert mean_average_precision(shifted, truth) == (1.0, 0.85)  # class 0 passes 7 of the 10 thresholds
    # the class-0 box labelled 1: class 0 found nothing (AP 0); class 1's true box comes second (precision 0.5)
    wrong_class = [np.array([[10, 10, 50, 50, 0.9, 1], [60, 60, 100, 100, 0.8, 1]], float)]
    assert mean_average_precision(wrong_class, truth) == (0.25, 0.25)
    missed = [np.array([[200, 200, 220, 220, 0.95, 1], [10, 10, 50, 50, 0.9, 0]], float)]
    assert mean_average_precision(missed, truth) == (0.5, 0.5)


def test_benchmark_command_times_the_ultralytics_twins(offline, tmp_path):
    """Our Ultralytics-package config beside its stock twin (yolo11n), in PyTorch and ONNX Runtime."""
    from helpers import require
    require('ultralytics', 'ultralytics')
    out = tmp_path / 'bench'
    env = {k: v for k, v in offline.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    proc = subprocess.run([sys.executable, '-m', 'yolov5_mnv4', 'benchmark', '--models', 'yolo11n-mnv4-conv-s', 'yolo11n',
                           '--runtimes', 'torch', 'onnxruntime', '--sizes', '160', '--runs', '1', '--reps', '2',
                           '--warmup', '1', '--out', str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / 'benchmark.json').read_text())
    assert [(r['model'], r['twin']) for r in result['rows']] == [('yolo11n-mnv4-conv-s', 'yolo11n'), ('yolo11n', '(stock)')]
    assert list(result['ratios']) == ['torch_160', f'{CHANNELS_LAST}_160', 'onnxruntime_160']
    assert [list(pairs) for pairs in result['ratios'].values()] == [['yolo11n-mnv4-conv-s/yolo11n']] * 3
    assert list(result['fair_ratios']) == ['torch_160', 'onnxruntime_160']
    assert result['rows'][0]['params'] > result['rows'][1]['params'] > 2_000_000  # fused yolo11n: 2.6 M


def test_benchmark_command_in_tflite_when_asked(yolov5_dir, offline, tmp_path):
    """TFLite is left out of the default runtimes (it imports TensorFlow) and runs when asked for:
    Conv-S beside yolov5n (a ratio row in TFLite), and the trained checkpoint's mAP in TFLite equal to
    PyTorch's (the fp32 .tflite is the same detector, its boxes scaled back to pixels)."""
    from helpers import require_installed
    require_installed('tensorflow', 'tflite')  # used in the command's process, never imported in this one
    from yolov5_mnv4.resources import dataset_yaml
    data = dataset_yaml(REPO / 'tests' / 'data' / 'coco64', tmp_path / 'data')
    out = tmp_path / 'bench'
    command = [sys.executable, '-m', 'yolov5_mnv4', 'benchmark', '--sizes', '160', '--runs', '1', '--reps', '2',
               '--warmup', '1', '--yolov5', str(yolov5_dir), '--out', str(out)]
    proc = subprocess.run([*command, '--models', 'MNv4-Conv-S', 'yolov5n', '--weights',
                           str(TRAINED), '--data', str(data),
                           '--runtimes', 'torch', 'tflite'], capture_output=True, text=True, env=offline, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / 'benchmark.json').read_text())
    assert result['runtimes'] == ['torch', CHANNELS_LAST, 'tflite']
    assert list(result['ratios']['tflite_160']) == ['MNv4-Conv-S/yolov5n']
    from yolov5_mnv4.bench import export_name
    assert sorted(p.name for p in out.glob('*.tflite')) == sorted(  # cached under the names the next run looks for
        f'{export_name(name)}-160.tflite' for name in ('MNv4-Conv-S', 'yolov5n', str(TRAINED)))
    checkpoint = result['rows'][2]
    print({k: v for k, v in checkpoint.items() if 'map' in k})
    for key in ('160_map50', '160_map'):
        assert checkpoint[f'torch_{key}'] > 0 and abs(checkpoint[f'tflite_{key}'] - checkpoint[f'torch_{key}']) < 2e-4
    # by default, TFLite is named and left out (here only ONNX Runtime's absence would change the list)
    default = subprocess.run([*command, '--models', 'yolov5n', '--reps', '1', '--out', str(tmp_path / 'default')],
                             capture_output=True, text=True, env=offline, timeout=900)
    assert default.returncode == 0, default.stdout[-3000:] + default.stderr[-3000:]
    assert 'TFLite (LiteRT) is installed but imports TensorFlow: add it with --runtimes ... tflite' in default.stdout
    assert 'tflite' not in json.loads((tmp_path / 'default' / 'benchmark.json').read_text())['runtimes']


def test_benchmark_command_at_other_precisions(yolov5_dir, offline, tmp_path):
    """--precisions fp16 int8: each offered runtime gets its own column (MNN fp16 and int8, ExecuTorch
    int8, calibrated on the embedded images), the others are named as not offered, and the trained
    checkpoint's mAP in each stays near fp32's (an export that lost its accuracy would show)."""
    from yolov5_mnv4.resources import dataset_yaml
    data = dataset_yaml(REPO / 'tests' / 'data' / 'coco64', tmp_path / 'data')
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'yolov5_mnv4', 'benchmark', '--models', '--weights',
                           str(TRAINED), '--data', str(data),
                           '--sizes', '160', '--runtimes', 'torch', 'mnn', 'executorch', '--precisions', 'fp32', 'fp16',
                           'int8', '--runs', '1', '--reps', '2', '--warmup', '1', '--yolov5', str(yolov5_dir), '--out',
                           str(out)], capture_output=True, text=True, env=offline, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'fp16 is not offered here in PyTorch, ExecuTorch' in proc.stdout
    assert 'int8 is not offered here in PyTorch' in proc.stdout
    result = json.loads((out / 'benchmark.json').read_text())
    assert result['runtimes'] == ['torch', 'mnn', 'executorch', 'mnn-fp16', 'mnn-int8', 'executorch-int8']
    row, = result['rows']
    maps = {key: row[f'{key}_160_map50'] for key in result['runtimes']}
    print(maps)
    assert maps['torch'] > 0.0025
    assert abs(maps['mnn-fp16'] - maps['torch']) < 0.1 * maps['torch']
    for key in ('mnn-int8', 'executorch-int8'):
        assert abs(maps[key] - maps['torch']) < 0.5 * maps['torch'], key
    assert '| MNN int8 ms (IQR) | MNN int8 mAP50 / mAP50-95 |' in (out / 'benchmark.md').read_text()
    assert len(list(out.glob('*-160-int8.mnn'))) == 1 and len(list(out.glob('*-160-int8.pte'))) == 1  # cached apart


def test_benchmark_command_on_a_tree_never_patched(yolov5_dir, offline, tmp_path):
    """A fresh clone that `yolov5-mnv4 apply` never touched builds our configs too (the command registers
    in-process, as loading a checkpoint there does); the stock twin runs in both layouts and the
    summary states the ratio to its faster one."""
    tree = pristine_copy(yolov5_dir, tmp_path / 'yolov5')
    assert 'yolov5_mnv4' not in (tree / 'models' / 'yolo.py').read_text()
    out = tmp_path / 'bench'
    proc = subprocess.run([sys.executable, '-m', 'yolov5_mnv4', 'benchmark', '--quick', '--runtimes', 'torch',
                           '--reps', '2', '--warmup', '1', '--yolov5', str(tree), '--out', str(out)],
                          capture_output=True, text=True, env=offline, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / 'benchmark.json').read_text())
    assert result['runtimes'] == ['torch', CHANNELS_LAST]
    assert result['fair_ratios']['torch_320']['MNv4-Conv-S/yolov5n']['stock_layout'] in ('NCHW', 'channels-last')
    assert 'Ours / the stock twin at its best' in proc.stdout
    assert 'yolov5_mnv4' not in (tree / 'models' / 'yolo.py').read_text()  # registered in-process, nothing written


def _rows(ours, nchw, channels_last):
    """Rows of one Conv-S and its twin over len(ours) runs (ms per run), for twin_ratios."""
    def stats(runs):
        return {'ms': sorted(runs)[len(runs) // 2], 'runs': runs}
    stock = {f'torch_320_{k}': v for k, v in stats(nchw).items()}
    stock.update({f'{CHANNELS_LAST}_320_{k}': v for k, v in stats(channels_last).items()})
    return {'MNv4-Conv-S': {'model': 'MNv4-Conv-S', **{f'torch_320_{k}': v for k, v in stats(ours).items()}},
            'yolov5n': {'model': 'yolov5n', **stock}}


def test_fair_ratio_takes_the_stock_model_at_its_faster_layout():
    """Ours / the stock model in PyTorch is stated against whichever layout ran the stock model faster;
    the ratio against each layout is kept too."""
    for nchw, channels_last, layout in (([30, 31, 29], [24, 25, 23], 'channels-last'), ([20, 21, 19], [24, 25, 23], 'NCHW')):
        rows = _rows([25, 26, 24], nchw, channels_last)
        ratios = twin_ratios(rows, ['torch', CHANNELS_LAST], [320])
        fair = fair_ratios(list(rows.values()), ratios)
        pair = fair['torch_320']['MNv4-Conv-S/yolov5n']
        assert pair['stock_layout'] == layout
        expected = [a / b for a, b in zip([25, 26, 24], channels_last if layout == 'channels-last' else nchw)]
        assert pair['runs'] == [round(r, 3) for r in expected]
        assert list(fair) == ['torch_320']  # the channels-last key is folded into it


def test_verdict_words():
    assert verdict({'min': 0.95, 'max': 1.08}) == 'at parity'
    assert verdict({'min': 0.80, 'max': 0.88}) == 'faster'
    assert verdict({'min': 0.85, 'max': 0.95}) == 'faster'  # every run below 1, not all within the noise
    assert verdict({'min': 1.12, 'max': 1.30}) == 'slower'
    assert verdict({'min': 0.88, 'max': 1.23}) == 'mixed'
    assert verdict({'min': 0.89, 'max': 1.0}) == 'mixed'  # touches 1: not every run faster
