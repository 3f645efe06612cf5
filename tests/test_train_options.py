"""The training options YOLOv5 users rely on, through the stock scripts on a hybrid config (whose
attention sees every size --multi-scale, --rect and TTA make): tests/tools/train_options.py runs them."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ['resume', 'multi-scale+cache-ram+AdamW+cos-lr+label-smoothing', 'rect+freeze-5', 'image-weights',
           'val-task-speed', 'val-augment', 'detect-video', 'detect-mixed-sizes']


@pytest.mark.smoke
def test_training_options_on_hybrid_m(yolov5_dir, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / 'tests' / 'tools' / 'train_options.py'), '--yolov5', str(yolov5_dir),
                             '--cfg', 'yolov5-mnv4-hybrid-m.yaml', '--out', str(tmp_path / 'options')],
                            capture_output=True, text=True, timeout=1200)
    summary = result.stdout[result.stdout.find('train-options: yolov5-mnv4'):]
    print(summary)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for option in OPTIONS:
        assert f'  {option}: ok (' in summary, option
    assert 'resume restored' in (tmp_path / 'options' / 'resume.log').read_text()
