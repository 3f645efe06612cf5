"""The plugin as users install it: a wheel and an sdist built from this checkout carry every file the
plugin reads at run time, and the installed wheel, with the checkout off the path, applies to a
pristine YOLOv5 tree, builds every shipped config, runs the demo (one training epoch, val, detect,
export), converts timm weights, registers into the PyPI `yolov5` package, and reverts the tree byte
for byte.

The wheel goes into a target folder put first on PYTHONPATH; every subprocess prints where it
imported `yolov5_mnv4` from, and the tests check that this is the target, not the checkout.
"""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import pristine_copy, require, tree_digest

REPO = Path(__file__).resolve().parents[1]
SOURCE_IGNORE = shutil.ignore_patterns('.git', '.venv', '.cache', 'runs', 'build', 'dist', '*.egg-info',
                                       '__pycache__', '.pytest_cache')


def data_files(names):
    """The run-time data a distribution must carry, as paths inside the package."""
    configs = sorted(p.name for p in (REPO / 'models').glob('*.yaml'))
    data = sorted(str(p.relative_to(REPO / 'plugin')) for p in (REPO / 'plugin' / 'yolov5_mnv4' / 'data').rglob('*')
                  if p.is_file())
    ultralytics = sorted(p.name for p in (REPO / 'models' / 'ultralytics').glob('*.yaml'))
    expected = ({f'yolov5_mnv4/configs/{c}' for c in configs} | {f'yolov5_mnv4/configs/ultralytics/{c}' for c in ultralytics}
                | set(data) | {'yolov5_mnv4/shipped_configs.txt'})
    return expected - set(names), len(configs)


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    """`python -m build` of a copy of the checkout: the sdist, then the wheel built from that sdist. Without
    isolation (the environment's setuptools builds), and pip kept off every index: nothing downloads."""
    work = tmp_path_factory.mktemp('dist')
    source = work / 'source'
    shutil.copytree(REPO, source, symlinks=True, ignore=SOURCE_IGNORE)
    proc = subprocess.run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(work / 'out'), str(source)],
                          capture_output=True, text=True, env={**os.environ, 'PIP_NO_INDEX': '1'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel, = (work / 'out').glob('*.whl')
    sdist, = (work / 'out').glob('*.tar.gz')
    return wheel, sdist


def test_wheel_and_sdist_carry_configs_hashes_and_data(dist):
    wheel, sdist = dist
    names = zipfile.ZipFile(wheel).namelist()
    missing, n_configs = data_files(names)
    assert not missing, f'the wheel lacks {sorted(missing)}'
    assert n_configs == 15
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    root = members[0].name.split('/')[0]
    inside = [m.name[len(f'{root}/plugin/'):] for m in members if m.name.startswith(f'{root}/plugin/') and m.isfile()]
    missing, _ = data_files(inside)
    assert not missing, f'the sdist lacks {sorted(missing)} (or holds them as links)'
    assert 'yolov5_mnv4_startup.pth' in inside  # the start-up hook's .pth, which setup.py puts into the wheel
    with zipfile.ZipFile(wheel) as z:
        assert z.read('yolov5_mnv4_startup.pth').decode().strip() == 'import yolov5_mnv4_startup'
        assert 'yolov5_mnv4_startup.py' in z.namelist()
    print(f'wheel: {len(names)} files; sdist: {len(members)} members')


@pytest.fixture(scope='module')
def installed(dist, tmp_path_factory):
    """The wheel installed into a target folder, and an environment that puts it first on the path."""
    wheel, _ = dist
    target = tmp_path_factory.mktemp('site')
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--target', str(target),
                           str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = {**os.environ, 'PYTHONPATH': str(target)}
    return target, env


def run_installed(installed, code, *args, cwd):
    """Run `code` with the installed wheel; it must import yolov5_mnv4 from the target folder."""
    target, env = installed
    probe = 'import yolov5_mnv4, sys; print("imported-from", yolov5_mnv4.__file__, flush=True)\n'
    proc = subprocess.run([sys.executable, '-c', probe + code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)
    where = next((line.split(' ', 1)[1] for line in proc.stdout.splitlines() if line.startswith('imported-from')), '')
    assert where.startswith(str(target)), f'yolov5_mnv4 came from {where!r}, not the wheel in {target}'
    return proc


@pytest.fixture(scope='module')
def pristine_tree(yolov5_dir, tmp_path_factory):
    return pristine_copy(yolov5_dir, tmp_path_factory.mktemp('tree') / 'yolov5')


def digest(tree):
    return {k: v for k, v in tree_digest(tree).items() if '__pycache__' not in k}


def test_installed_wheel_applies_builds_every_config_trains_and_reverts(installed, pristine_tree, offline, tmp_path):
    before = digest(pristine_tree)
    cli = 'from yolov5_mnv4.__main__ import main; sys.exit(main(sys.argv[1:]))'
    applied = run_installed(installed, cli, 'apply', pristine_tree, cwd=tmp_path)
    assert applied.returncode == 0 and 'applied' in applied.stdout, applied.stderr
    configs = sorted((pristine_tree / 'models' / 'mnv4').glob('*.yaml'))
    assert len(configs) == 15
    build_all = '''
import sys, torch
sys.path.insert(0, sys.argv[1])
import models.yolo as yolo
from yolov5_mnv4.hosts.yolov5 import is_registered
assert is_registered(yolo)
for cfg in sys.argv[2:]:
    default_act = yolo.Conv.default_act
    model = (yolo.SegmentationModel if '-seg' in cfg else yolo.DetectionModel)(cfg)
    yolo.Conv.default_act = default_act
    print('built', cfg.rsplit('/', 1)[-1], sum(p.numel() for p in model.parameters()))
'''
    built = run_installed(installed, build_all, pristine_tree, *configs, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert sum(line.startswith('built ') for line in built.stdout.splitlines()) == 15, built.stdout
    demo = run_installed(installed, cli, 'demo', '--yolov5', pristine_tree, '--epochs', 1, '--img', 96,
                         '--out', tmp_path / 'demo', cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-2000:]
    assert (tmp_path / 'demo' / 'train' / 'weights' / 'best.onnx').is_file()
    print(demo.stdout.strip().splitlines()[-1])
    reverted = run_installed(installed, cli, 'apply', pristine_tree, '--revert', cwd=tmp_path)
    assert reverted.returncode == 0 and 'reverted' in reverted.stdout, reverted.stderr
    assert digest(pristine_tree) == before


def test_installed_wheel_converts_timm_weights(installed, pristine_tree, offline, tmp_path):
    require('timm')
    convert = '''
import timm, torch
from safetensors.torch import save_file
model = timm.create_model('mobilenetv4_conv_small', pretrained=False)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[2])
from yolov5_mnv4.cli.convert import main
tree, timm_file, out = sys.argv[1:4]
sys.exit(main(['--yolov5', tree, '--cfg', 'yolov5-mnv4-conv-s.yaml', '--timm', timm_file, '--out', out]))
'''
    proc = run_installed(installed, convert, pristine_tree, tmp_path / 'timm.safetensors', tmp_path / 'mnv4s.pt',
                         cwd=tmp_path)
    assert proc.returncode == 0 and 'backbone tensors' in proc.stdout, proc.stderr[-3000:]
    assert not (pristine_tree / 'models' / 'mnv4').exists()  # a config the plugin ships, read from the wheel


def test_installed_wheel_registers_into_the_pypi_yolov5_package(installed, offline, tmp_path):
    code = '''
from pathlib import Path
from yolov5_mnv4.resources import configs
from yolov5.models.yolo import DetectionModel
Path('cfg.yaml').write_bytes(configs()['yolov5-mnv4-hybrid-m.yaml'])
model = DetectionModel('cfg.yaml')
print('stages', sum(type(m).__name__ == 'MobileNetV4Stage' for m in model.model))
'''
    target, env = installed
    proc = run_installed((target, {**env, **offline}), code, cwd=tmp_path)
    assert proc.returncode == 0 and 'stages 5' in proc.stdout, proc.stderr[-3000:]


def test_command_line_explains_itself(installed, tmp_path):
    code = '''
import time
start = time.perf_counter()
from yolov5_mnv4.cli.apply import main
try:
    main(['--help'])
except SystemExit:
    pass
print('torch imported:', 'torch' in sys.modules, 'seconds: %.3f' % (time.perf_counter() - start))
'''
    proc = run_installed(installed, code, cwd=tmp_path)
    assert proc.returncode == 0 and 'torch imported: False' in proc.stdout, proc.stdout + proc.stderr
    cli = 'from yolov5_mnv4.__main__ import main; sys.exit(main(sys.argv[1:]))'
    helped = run_installed(installed, cli, '--help', cwd=tmp_path)
    for command in ('apply', 'convert', 'export', 'demo', 'offline', 'check'):
        assert f'\n  {command} ' in helped.stdout, helped.stdout
    from yolov5_mnv4 import __version__
    for command in ('apply', 'convert', 'export', 'demo', 'offline', 'check'):
        version = run_installed(installed, cli, command, '--version', cwd=tmp_path)
        assert version.returncode == 0 and version.stdout.strip().endswith(f'yolov5-mnv4 {__version__}'), version
    bad = run_installed(installed, cli, 'aply', cwd=tmp_path)
    assert bad.returncode == 2 and "unknown command 'aply'" in bad.stderr


def test_module_paths_of_earlier_releases_still_import(installed, tmp_path):
    """From the wheel: every module path of 0.1.x and 0.2.x imports (yolov5_mnv4._moved) and gives the
    object of the module that holds it now; the two that checkpoints pickle stay silent, the others
    warn; the hook block of 0.2.0 (`from yolov5_mnv4 import integration`) gets `register`."""
    code = '''
import importlib, warnings
from yolov5_mnv4._moved import MOVED, PICKLED
warnings.simplefilter('error', DeprecationWarning)
from yolov5_mnv4 import integration as _mnv4
assert _mnv4.register is importlib.import_module('yolov5_mnv4.hosts.yolov5').register
for old, new in MOVED.items():
    module = importlib.import_module(f'yolov5_mnv4.{old}')
    name = next(n for n in vars(importlib.import_module(f'yolov5_mnv4.{new}')) if not n.startswith('_'))
    try:
        value = getattr(module, name)
        warned = False
    except DeprecationWarning:
        warned = True
    assert warned == (old not in PICKLED), old
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    from yolov5_mnv4.export import main as export_main  # the old module yolov5_mnv4.export is now a package
assert export_main is importlib.import_module('yolov5_mnv4.cli.export').main and caught
print('OLD PATHS OK', len(MOVED))
'''
    proc = run_installed(installed, code, cwd=tmp_path)
    assert proc.returncode == 0 and 'OLD PATHS OK 16' in proc.stdout, proc.stdout + proc.stderr
    control = run_installed(installed, 'import yolov5_mnv4.integratoin', cwd=tmp_path)  # a misspelt old path
    assert control.returncode != 0 and "No module named 'yolov5_mnv4.integratoin'" in control.stderr


def test_installed_wheels_start_up_hook_registers_when_the_package_is_imported(installed, tmp_path):
    """The wheel's .pth, processed as site-packages' are (site.addsitedir on the target folder): the
    finder is armed, nothing is imported until ultralytics.nn.tasks is, and then the plugin (the
    wheel's) has registered."""
    code = """
import site, sys
# this environment's own hook (the checkout's editable install) out of the way, the wheel's folder first
sys.modules.pop('yolov5_mnv4_startup', None)
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != 'UltralyticsFinder']
sys.path.insert(0, sys.argv[1])
site.addsitedir(sys.argv[1])  # processes its .pth files as site-packages' are
finder = next(f for f in sys.meta_path if type(f).__name__ == 'UltralyticsFinder')
print('ARMED', type(finder).__module__, sys.modules[type(finder).__module__].__file__.startswith(sys.argv[1]),
      'yolov5_mnv4.hosts' in sys.modules)
import ultralytics.nn.tasks as tasks
from yolov5_mnv4.hosts.registration import is_registered
print('REGISTERED', is_registered(tasks), sys.modules['yolov5_mnv4'].__file__.startswith(sys.argv[1]))
"""
    target, env = installed
    proc = subprocess.run([sys.executable, '-c', code, str(target)], cwd=tmp_path, env={**env, 'PYTHONPATH': '',
                          'YOLOV5_MNV4_STARTUP': '1'}, capture_output=True, text=True, timeout=600)
    assert 'ARMED yolov5_mnv4_startup True False' in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert 'REGISTERED True True' in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_installed_wheel_benchmarks_conv_s_against_yolov5n(installed, offline, tmp_path):
    """`yolov5-mnv4 benchmark --quick` from the wheel, no checkout on the path (the models built in the
    PyPI yolov5 package): Conv-S and yolov5n timed in PyTorch and ONNX Runtime; the table, CSV, JSON
    and plot it writes, and every ratio row naming the model's stock twin."""
    import csv
    import json
    target, env = installed
    out = tmp_path / 'bench'
    proc = run_installed((target, {**env, **offline}), 'from yolov5_mnv4.cli.main import main; sys.exit(main(sys.argv[1:]))',
                         'benchmark', '--quick', '--out', out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'models from PyPI yolov5' in proc.stdout and 'round 13/13' in proc.stdout  # where from; progress
    result = json.loads((out / 'benchmark.json').read_text())
    assert [r['model'] for r in result['rows']] == ['MNv4-Conv-S', 'yolov5n']
    assert set(result['ratios']) == {'torch_320', 'torch-channels_last_320', 'onnxruntime_320'}  # yolov5n in both layouts
    assert set(result['fair_ratios']) == {'torch_320', 'onnxruntime_320'}
    for pairs in result['ratios'].values():
        assert list(pairs) == ['MNv4-Conv-S/yolov5n'] and all(0.2 < r['median'] < 5 for r in pairs.values())
    rows = list(csv.DictReader((out / 'benchmark.csv').open()))
    assert [r['model'] for r in rows] == ['MNv4-Conv-S', 'yolov5n'] and rows[0]['twin'] == 'yolov5n'
    assert float(rows[0]['onnxruntime_320_ms']) > 0 and int(rows[1]['params']) == 1_867_405  # yolov5n, fused
    text = (out / 'benchmark.md').read_text()
    ratio_rows = [line for line in text.splitlines() if line.startswith(('| PyTorch, 320', '| PyTorch channels-last, 320',
                                                                          '| ONNX Runtime, 320'))]
    assert len(ratio_rows) == 3 and all('MNv4-Conv-S/yolov5n' in line for line in ratio_rows), text
    png = (out / 'latency_vs_gflops.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
    from yolov5_mnv4 import __version__
    assert (out / f'MNv4-Conv-S-{__version__}-320.onnx').is_file()  # the export, cached for the next run
