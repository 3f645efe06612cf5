"""The benchmark's quick mode produces a complete table (numbers are not asserted: machines differ)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
        assert all(value != '' for value in row.values()), row
        assert float(row['torch_320_ms']) > 0 and float(row['ort_320_ms']) > 0 and float(row['gflops_640']) > 0
    assert (out / 'latency_vs_gflops.png').stat().st_size > 10_000
    assert 'Conv-S/yolov5n' in proc.stdout and 'Conv-M/yolov5s' in proc.stdout
    result = json.loads((out / 'benchmark.json').read_text())  # what scripts/render_docs.py reads
    assert result['command'].startswith('python scripts/benchmark.py') and result['date'] and result['runs'] == 1
    by = {r['model']: r for r in result['rows']}
    for runtime in ('torch', 'ort'):
        ratio = result['ratios'][f'{runtime}_320']['MNv4-Conv-S/yolov5n']
        same_run = by['MNv4-Conv-S'][f'{runtime}_320_runs'][0] / by['yolov5n'][f'{runtime}_320_runs'][0]
        assert abs(ratio['median'] - same_run) < 2e-3 and ratio['min'] <= ratio['median'] <= ratio['max']
