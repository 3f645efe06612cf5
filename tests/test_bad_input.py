"""Every bad input a user can give gets one clear error, raised before anything is built or written.

One table per kind of input; each row is (case id, what the user did, exception, the exact message).
The apply-script cases (a user's own config under one of our names) are in test_apply.py.
"""
import copy
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONV_S = yaml.safe_load((REPO / 'models' / 'yolov5-mnv4-conv-s.yaml').read_text())
VALID = ('valid rows: MobileNetV4ConvSmall, MobileNetV4ConvMedium, MobileNetV4ConvLarge, MobileNetV4HybridMedium, '
         'MobileNetV4HybridLarge, or MobileNetV4 with the variant as its argument')


def backbone_row(row):
    def edit(cfg):
        cfg['backbone'][0] = row
    return edit


def insert_before(row):
    def edit(cfg):
        cfg['backbone'].insert(0, row)
    return edit


# (id, edit of the Conv-S config, exception, exact message)
CONFIG_CASES = [
    ('misspelled-row', backbone_row([-1, 1, 'MobileNetV4ConvSmal', []]), ValueError,
     "backbone row 0 [-1, 1, 'MobileNetV4ConvSmal', []]: unknown MobileNetV4 module 'MobileNetV4ConvSmal' "
     f"(did you mean MobileNetV4ConvSmall?); {VALID}"),
    ('wrong-case-row', backbone_row([-1, 1, 'MobileNetv4ConvSmall', []]), ValueError,
     "backbone row 0 [-1, 1, 'MobileNetv4ConvSmall', []]: unknown MobileNetV4 module 'MobileNetv4ConvSmall' "
     f"(did you mean MobileNetV4ConvSmall?); {VALID}"),
    ('misspelled-generic-row', backbone_row([-1, 1, 'MobilenetV4', ['conv_small']]), ValueError,
     "backbone row 0 [-1, 1, 'MobilenetV4', ['conv_small']]: unknown MobileNetV4 module 'MobilenetV4' "
     f"(did you mean MobileNetV4?); {VALID}"),
    ('unknown-variant', backbone_row([-1, 1, 'MobileNetV4', ['conv_tiny']]), ValueError,
     "unknown MobileNetV4 variant 'conv_tiny'; valid names: conv_small, conv_medium, conv_large, hybrid_medium, "
     "hybrid_large"),
    ('generic-row-without-variant', backbone_row([-1, 1, 'MobileNetV4', []]), ValueError,
     'a MobileNetV4 row needs the variant as its first argument, e.g. [-1, 1, MobileNetV4, [conv_small]]'),
    ('number-not-1', backbone_row([-1, 2, 'MobileNetV4ConvSmall', []]), ValueError,
     'a MobileNetV4 backbone row takes number 1, not 2'),
    ('two-arguments', backbone_row([-1, 1, 'MobileNetV4ConvSmall', ['a.pth', 'b.pth']]), ValueError,
     "a MobileNetV4 backbone row takes at most one argument (the pretrained weights), got ['a.pth', 'b.pth']"),
    ('row-not-first', insert_before([-1, 1, 'Conv', [16, 3, 1]]), ValueError,
     "backbone row 1 [-1, 1, 'MobileNetV4ConvSmall', []]: the MobileNetV4 row must be the first backbone row and "
     "read the image (from -1): its five stages become layers 0-4, which the head's layer indices count on"),
    ('from-not-minus-1', backbone_row([0, 1, 'MobileNetV4ConvSmall', []]), ValueError,
     "backbone row 0 [0, 1, 'MobileNetV4ConvSmall', []]: the MobileNetV4 row must be the first backbone row and "
     "read the image (from -1): its five stages become layers 0-4, which the head's layer indices count on"),
    ('misspelled-in-head', lambda cfg: cfg['head'].append([-1, 1, 'MobileNetV4Stag', []]), ValueError,
     f"head row {len(CONV_S['head'])} [-1, 1, 'MobileNetV4Stag', []]: unknown MobileNetV4 module 'MobileNetV4Stag' "
     f"(did you mean MobileNetV4Stage?); {VALID}"),
]


@pytest.mark.parametrize('case, edit, error, message', CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_rows(yolo, case, edit, error, message):
    cfg = copy.deepcopy(CONV_S)
    edit(cfg)
    with pytest.raises(error) as raised:
        yolo.DetectionModel(cfg)
    assert str(raised.value) == message


def write(path, content):
    path.write_bytes(content)
    return path


def safetensors_bytes():
    from safetensors.torch import save
    return save({'weight': torch.zeros(64)})


# (id, file name, bytes writer, exception, message pattern; {path} is the file)
FILE_CASES = [
    ('truncated-safetensors', 'w.safetensors', lambda: safetensors_bytes()[:40], ValueError,
     r'could not read {path} as a timm MobileNetV4 state dict: safetensors: Error while deserializing header: .+'),
    ('empty-safetensors', 'w.safetensors', lambda: b'', ValueError,
     r'could not read {path} as a timm MobileNetV4 state dict: safetensors: Error while deserializing header: '
     r'header too small'),
    ('text-named-pth', 'w.pth', lambda: b'this is not a checkpoint\n', ValueError,
     r'could not read {path} as a timm MobileNetV4 state dict: not a PyTorch checkpoint \(torch.load: .+\)'),
    ('corrupt-zip-pt', 'w.pt', lambda: b'PK\x03\x04 cut short', ValueError,
     r'could not read {path} as a timm MobileNetV4 state dict: not a PyTorch checkpoint \(torch.load: RuntimeError: '
     r'PytorchStreamReader failed reading zip archive: not a ZIP archive\)'),
    ('pickled-module-pth', 'w.pth', lambda: None, ValueError,
     r'could not read {path} as a timm MobileNetV4 state dict: it pickles Python objects '
     r'\(torch.nn.modules.linear.Linear\), which are not loaded from a file a config names \(weights_only\); '
     r'save the model\'s state_dict\(\) instead'),
    ('state-dict-of-something-else', 'w.pth', lambda: None, ValueError,
     r'{path} is not a MobileNetV4 checkpoint: .+'),
    ('unsupported-suffix', 'w.onnx', lambda: b'onnx', ValueError,
     r"unsupported checkpoint format 'w.onnx': use .safetensors, .pth, .pt or .bin"),
    ('missing-file', 'missing.safetensors', None, FileNotFoundError,
     r'pretrained backbone weights not found: {path} \(a timm checkpoint file, or a timm model name such as '
     r'mobilenetv4_conv_small.e2400_r224_in1k, or a variant name for its ImageNet weights: conv_small, conv_medium, '
     r'conv_large, hybrid_medium, hybrid_large\)'),
]


@pytest.mark.parametrize('case, name, content, error, pattern', FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_pretrained_files(yolo, tmp_path, monkeypatch, case, name, content, error, pattern):
    path = tmp_path / name
    if case == 'pickled-module-pth':
        torch.save({'model': torch.nn.Linear(2, 2)}, path)
    elif case == 'state-dict-of-something-else':
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif content is not None:
        write(path, content())
    # Never a fallback to weights_only=False for a file a YAML names.
    real_load = torch.load

    def guarded_load(*args, **kwargs):
        assert kwargs.get('weights_only') is True, 'torch.load without weights_only=True'
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', guarded_load)
    cfg = copy.deepcopy(CONV_S)
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4ConvSmall', [str(path)]]
    with pytest.raises(error) as raised:
        yolo.DetectionModel(cfg)
    message = str(raised.value)
    assert '\n' not in message.strip()
    assert re.fullmatch(pattern.format(path=re.escape(str(path))), message), message


# (id, arguments of yolov5-mnv4-export after --weights <a file>, message on stderr)
EXPORT_CASES = [
    ('int8-without-data', ['--include', 'tflite', '--int8'], '--int8 calibrates on images: pass --data data.yaml'),
    ('missing-data', ['--int8', '--data', 'nowhere.yaml'], '--data nowhere.yaml: no such file'),
    ('odd-size', ['--img', '300'], '--img (300, 300): sizes must be multiples of 32'),
    ('three-sizes', ['--img', '320', '320', '320'], '--img takes one size or two (height width)'),
    ('unknown-format', ['--include', 'rknn'], "argument --include: invalid choice: 'rknn'"),
    ('int8-ncnn', ['--include', 'ncnn', '--int8', '--data', __file__], '--int8 is not offered for ncnn: NCNN quantizes with its C++ tools'),
    ('int8-half', ['--include', 'mnn', '--int8', '--half', '--data', __file__], '--int8 and --half exclude each other'),
    ('half-tflite', ['--include', 'tflite', '--half'], '--half is for ncnn and mnn'),
]


@pytest.mark.parametrize('case, args, message', EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_bad_export_arguments(tmp_path, capsys, case, args, message):
    """Refused before TensorFlow or YOLOv5 is imported, naming the option."""
    from yolov5_mnv4.cli.export import main
    weights = tmp_path / 'best.pt'
    weights.write_bytes(b'')
    with pytest.raises(SystemExit) as exit_:
        main(['--weights', str(weights), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# (id, arguments of yolov5-mnv4 benchmark, message on stderr)
BENCHMARK_CASES = [
    ('no-rounds', ['--reps', '0'], '--reps must be 1 or more'),
    ('no-runs', ['--runs', '0'], '--runs must be 1 or more'),
    ('negative-warmup', ['--warmup', '-1'], '--warmup must be 0 or more'),
    ('missing-weights', ['--weights', 'nowhere.pt'], '--weights nowhere.pt: no such file'),
    ('data-without-weights', ['--data', __file__], '--data measures the accuracy of trained checkpoints: give them with --weights'),
    ('unknown-runtime', ['--runtimes', 'tensorrt'], "argument --runtimes: invalid choice: 'tensorrt'"),
    ('unknown-model', ['--models', 'yolov5x'], "argument --models: invalid choice: 'yolov5x'"),
]


@pytest.mark.parametrize('case, args, message', BENCHMARK_CASES, ids=[c[0] for c in BENCHMARK_CASES])
def test_bad_benchmark_arguments(tmp_path, capsys, case, args, message):
    """Refused before any model is built or any folder written."""
    from yolov5_mnv4.cli.benchmark import main
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exit_:
        main([*args, '--out', str(out)])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_names_a_missing_weights_file_and_a_folder_that_is_not_yolov5(tmp_path, capsys, monkeypatch):
    from yolov5_mnv4.cli.export import main
    with pytest.raises(SystemExit):
        main(['--weights', str(tmp_path / 'best.pt')])
    assert f'--weights {tmp_path / "best.pt"}: no such file' in capsys.readouterr().err
    weights = tmp_path / 'best.pt'
    weights.write_bytes(b'')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r'yolov5-mnv4-export: .* is not a YOLOv5 checkout \(no train.py'):
        main(['--weights', str(weights)])


@pytest.mark.parametrize('fmt, package, extra', [('ncnn', 'pnnx', 'ncnn'), ('mnn', 'MNN', 'mnn'),
                                                 ('executorch', 'executorch', 'executorch')])
def test_export_names_the_extra_of_a_missing_runtime(tmp_path, monkeypatch, yolov5_dir, fmt, package, extra):
    """One line naming the extra, before the checkpoint is read (an empty file here)."""
    from yolov5_mnv4.cli.export import main
    weights = tmp_path / 'best.pt'
    weights.write_bytes(b'')
    monkeypatch.setitem(sys.modules, package, None)  # import of it raises ImportError
    with pytest.raises(SystemExit) as exit_:
        main(['--weights', str(weights), '--include', fmt, '--yolov5', str(yolov5_dir)])
    message = str(exit_.value.code)
    assert message.startswith(f'yolov5-mnv4-export: {fmt} needs the Python package {package}'), message
    from yolov5_mnv4.resources import install_hint
    hint = install_hint(extra)  # the extra's packages, from the installed metadata: runnable from a clone or a wheel
    assert hint.startswith('pip install ') and package.lower() in hint.lower(), hint
    assert message.endswith(hint) and '\n' not in message, message


@pytest.mark.parametrize('free_kb, extras, needs', [(1048576, None, 10), (4 * 1048576, 'test', 5)])
def test_setup_stops_before_installing_onto_a_disk_too_small(tmp_path, free_kb, extras, needs):
    """scripts/setup.sh on a fresh checkout whose disk (a `df` on PATH says so) cannot hold torch and the
    extras: it stops before pip with the free space and what to do, and installs nothing."""
    import os
    import shutil
    import subprocess
    checkout = tmp_path / 'checkout'
    (checkout / 'scripts').mkdir(parents=True)
    shutil.copy(REPO / 'scripts' / 'setup.sh', checkout / 'scripts' / 'setup.sh')
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'df').write_text('#!/bin/sh\necho "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
                             f'echo "/dev/fake 100000000 90000000 {free_kb} 99% /fake"\n')
    (fake / 'df').chmod(0o755)
    env = {**os.environ, 'PATH': f'{fake}{os.pathsep}{os.environ["PATH"]}', 'PYTHON': sys.executable,
           'PIP_CONFIG_FILE': os.devnull, 'PIP_NO_INDEX': '1'}  # should the check let pip start, it finds nothing
    env.pop('VIRTUAL_ENV', None)
    if extras:
        env['MNV4_SETUP_EXTRAS'] = extras
    else:
        env.pop('MNV4_SETUP_EXTRAS', None)
    result = subprocess.run(['bash', str(checkout / 'scripts' / 'setup.sh')], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"needs ~{needs} GB of disk and /fake has {free_kb / 1048576:.1f} GB free" in result.stderr, result.stderr
    assert 'MNV4_SETUP_IGNORE_DISK=1 tries anyway' in result.stderr
    assert 'installing torch' not in result.stdout
    site = list((checkout / '.venv' / 'lib').glob('python*/site-packages'))
    assert site and not list(site[0].glob('torch*')), 'torch was installed'


def test_numpy_without_trapz_is_named_before_training(yolov5_dir, tmp_path, capsys, monkeypatch):
    """YOLOv5 v7.0 calls np.trapz, which numpy 2.4 removed: `check` and `apply` say so with the fix,
    and the plugin's registration logs it when train.py builds the model (long before the first
    validation with a detection would stop); none of them says it while numpy has np.trapz."""
    import numpy

    from helpers import pristine_copy
    from yolov5_mnv4.cli import apply as apply_cli
    from yolov5_mnv4.cli import check
    from yolov5_mnv4.hosts.yolov5_tree import numpy_conflict
    tree = pristine_copy(yolov5_dir, tmp_path / 'yolov5')
    assert 'np.trapz(' in (tree / 'utils' / 'metrics.py').read_text()  # v7.0's compute_ap
    fix = "pip install 'numpy<2.4'"
    for has_trapz in (True, False):
        if not has_trapz:
            monkeypatch.delattr(numpy, 'trapz', raising=False)
        assert (fix in check.report(tree)) != has_trapz
        assert apply_cli.main([str(tree)]) == 0
        assert (fix in capsys.readouterr().err) != has_trapz
        assert apply_cli.main([str(tree), '--revert']) == 0
        capsys.readouterr()
        warned = numpy_conflict(tree)  # what the registration logs when train.py builds the model
        assert (warned is not None) != has_trapz and (warned is None or fix in warned)
