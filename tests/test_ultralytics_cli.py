"""The Ultralytics package the way its users work: its own `yolo` command with our configs by name and
our checkpoints, and its multi-GPU (DDP) worker scripts, with nothing but the installed plugin's
start-up hook (plugin/yolov5_mnv4_startup.py) to load the plugin. Each with a control: the same
command with the hook switched off (YOLOV5_MNV4_STARTUP=0) fails as the package fails without us.
"""
import json
import os
import sys
from pathlib import Path

import pytest

from helpers import pristine_copy, require, run_python

if os.environ.get('MNV4_REQUIRE_ULTRALYTICS') == '1':
    import ultralytics  # noqa: F401 (CI: fail, never skip, without the package)
else:
    pytest.importorskip('ultralytics', reason='the Ultralytics package is not installed (pip install ultralytics)')

from ultralytics_flow import offline_env  # noqa: E402
from yolov5_mnv4.resources import dataset_yaml, embedded_dataset  # noqa: E402

YOLO = Path(sys.executable).with_name('yolo')  # the package's console command
CONFIG = 'yolo11n-mnv4-conv-s.yaml'
BUILT = 'MobileNetV4 conv_small: layers 0-4 are its five stages'  # the plugin's line when it builds the model
OFF = {'YOLOV5_MNV4_STARTUP': '0'}
COMMON = ['epochs=1', 'imgsz=64', 'batch=4', 'workers=0', 'plots=False', 'exist_ok=True']


def yolo(*args, cwd, **env):
    import subprocess
    proc = subprocess.run([str(YOLO), *map(str, args)], cwd=cwd, env=offline_env(**env), capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp('plain-yolo')
    return folder, dataset_yaml(embedded_dataset(), folder)


@pytest.fixture(scope='module')
def trained(work):
    """`yolo train model=<shipped config by name>` (1 epoch, embedded data): the run's best.pt."""
    folder, data = work
    rc, out = yolo('train', f'model={CONFIG}', f'data={data}', *COMMON, f'project={folder / "runs"}', 'name=train',
                   cwd=folder)
    assert rc == 0 and BUILT in out, out[-3000:]
    return folder / 'runs' / 'train' / 'weights' / 'best.pt'


def test_plain_yolo_trains_validates_predicts_and_exports(work, trained):
    folder, data = work
    image = sorted((embedded_dataset() / 'images' / 'val2017').glob('*.jpg'))[0]
    rc, out = yolo('val', f'model={trained}', f'data={data}', 'imgsz=64', 'batch=4', 'workers=0', 'plots=False',
                   f'project={folder / "runs"}', 'name=val', cwd=folder)
    assert rc == 0 and 'all ' in out, out[-3000:]
    rc, out = yolo('predict', f'model={trained}', f'source={image}', 'imgsz=64', f'project={folder / "runs"}',
                   'name=predict', 'exist_ok=True', cwd=folder)
    assert rc == 0 and any((folder / 'runs' / 'predict').glob('*.jpg')), out[-3000:]
    rc, out = yolo('export', f'model={trained}', 'format=onnx', 'imgsz=64', cwd=folder)
    assert rc == 0 and trained.with_suffix('.onnx').is_file(), out[-3000:]


def test_plain_yolo_without_the_start_up_hook_fails_as_the_package_does(work):
    """Control: with the hook off the package cannot find our config (its own message)."""
    folder, data = work
    rc, out = yolo('train', f'model={CONFIG}', f'data={data}', *COMMON, f'project={folder / "runs"}', 'name=off',
                   cwd=folder, **OFF)
    assert rc != 0 and 'yolo11-mnv4-conv-s.yaml' in out and 'does not exist' in out, out[-2000:]


def test_the_start_up_hook_loads_nothing_until_the_package_is_imported(yolov5_dir, tmp_path):
    """A process that never imports ultralytics.nn.tasks never imports the plugin (nor torch), and a
    YOLOv5 checkout that was never patched stays unregistered: apply/revert is its only switch."""
    tree = pristine_copy(yolov5_dir, tmp_path / 'yolov5')
    code = f'''
import sys
finders = [type(f).__name__ for f in sys.meta_path]
print('BARE', 'yolov5_mnv4' in sys.modules, 'torch' in sys.modules, 'UltralyticsFinder' in finders)
sys.path.insert(0, {str(tree)!r})
import models.yolo
print('TREE', hasattr(models.yolo, 'MobileNetV4Stage'), 'yolov5_mnv4' in sys.modules)
'''
    proc = run_python(code, tmp_path, offline_env())
    assert 'BARE False False True' in proc.stdout and 'TREE False False' in proc.stdout, proc.stdout + proc.stderr
    off = run_python(code, tmp_path, offline_env(**OFF))
    assert 'BARE False False False' in off.stdout, off.stdout + off.stderr  # control: switched off, no finder


# The worker script of the package's 8.3.x releases (up to 8.4.138, ultralytics/utils/dist.py): it imports
# the trainer class by module and builds the model from the trainer's args in a fresh interpreter.
WORKER_8_3 = '''
# Ultralytics Multi-GPU training temp file (should be automatically deleted after use)
overrides = {overrides!r}

if __name__ == "__main__":
    from {module} import {name}
    from ultralytics.utils import DEFAULT_CFG_DICT

    cfg = DEFAULT_CFG_DICT.copy()
    cfg.update(save_dir='')   # handle the extra key 'save_dir'
    trainer = {name}(cfg=cfg, overrides=overrides)
    trainer.args.model = "{model}"
    results = trainer.train()
'''

# Writes the worker script of the installed package (ultralytics.utils.dist.generate_ddp_file: since
# 8.4.150 it cloudpickles the trainer class, args, model and callbacks) and the 8.3.x one, for one trainer.
GENERATE = '''
import json, sys
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.dist import generate_ddp_file
trainer = DetectionTrainer(overrides=json.loads(sys.argv[1]))
native = generate_ddp_file(trainer)
older = native[:-3] + '_8_3.py'
open(older, 'w').write(sys.argv[2].format(overrides=vars(trainer.args), module=type(trainer).__module__,
                                          name=type(trainer).__name__, model=trainer.args.model))
print('WORKERS', json.dumps([native, older]))
'''


def workers_for(model, folder, data):
    overrides = dict(model=str(model), data=str(data), epochs=1, imgsz=64, batch=4, workers=0, plots=False,
                     device='cpu', project=str(folder / 'runs'), name='ddp', exist_ok=True)
    proc = run_python(GENERATE, folder, offline_env(), json.dumps(overrides), WORKER_8_3)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('WORKERS ')]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len('WORKERS '):])


@pytest.mark.parametrize('given', ['config name', 'config path', 'checkpoint'])
def test_ddp_worker_scripts_of_both_generations_build_and_train(work, trained, given):
    """The package's DDP worker scripts, run as the launcher runs each rank (a fresh interpreter; here
    one rank on the CPU: the package starts DDP only on CUDA devices), build our model and train it."""
    folder, data = work
    model = {'config name': CONFIG, 'config path': embedded_config(CONFIG), 'checkpoint': trained}[given]
    for worker in workers_for(model, folder, data):
        proc = run_python(f'import runpy; runpy.run_path({worker!r}, run_name="__main__")', folder, offline_env(),
                          timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and 'epochs completed' in out, f'{Path(worker).name}: {out[-3000:]}'
        if given != 'checkpoint':
            assert BUILT in out, out[-3000:]
    if given == 'config name':  # control: the same worker with the hook off cannot build the model
        off = run_python(f'import runpy; runpy.run_path({worker!r}, run_name="__main__")', folder,
                         offline_env(**OFF), timeout=600)
        assert off.returncode != 0 and 'does not exist' in off.stdout + off.stderr, off.stderr[-2000:]


def embedded_config(name):
    from yolov5_mnv4.hosts.ultralytics import config_folder
    return config_folder() / name


def test_ddp_worker_builds_a_pretrained_timm_backbone(work, tmp_path):
    """A config whose backbone row names a timm checkpoint: the worker loads the weights too."""
    timm = require('timm')
    import yaml

    from helpers import save_timm
    folder, data = work
    source = save_timm(timm.create_model('mobilenetv4_conv_small', pretrained=False), tmp_path / 'mnv4s.safetensors')
    spec = yaml.safe_load(embedded_config(CONFIG).read_text())
    spec['backbone'][0][3] = [str(source)]
    config = tmp_path / 'yolo11n-mnv4-conv-s-pretrained.yaml'
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    native, _ = workers_for(config, folder, data)
    proc = run_python(f'import runpy; runpy.run_path({native!r}, run_name="__main__")', folder, offline_env(),
                      timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'pretrained tensors loaded from' in out and 'epochs completed' in out, out[-3000:]


ULTRALYTICS_8_3 = Path(__file__).resolve().parents[1] / '.cache' / 'ultralytics-8.3'  # scripts/setup.sh puts it there


def test_ddp_worker_of_the_real_8_3_package_builds_and_trains(work):
    """The same with ultralytics 8.3.100 itself (its own generate_ddp_file and trainer, on PYTHONPATH
    before the installed 8.4), with a control that switches the hook off."""
    if not (ULTRALYTICS_8_3 / 'ultralytics').is_dir():
        message = f'{ULTRALYTICS_8_3} is missing (scripts/setup.sh installs ultralytics 8.3.100 there)'
        if os.environ.get('MNV4_REQUIRE_ULTRALYTICS') == '1':
            pytest.fail(message)
        pytest.skip(message)
    folder, data = work
    overrides = dict(model=CONFIG, data=str(data), epochs=1, imgsz=64, batch=4, workers=0, plots=False, device='cpu',
                     project=str(folder / 'runs'), name='ddp83', exist_ok=True)
    code = """
import json, sys
import ultralytics
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.dist import generate_ddp_file
print('VERSION', ultralytics.__version__)
print('WORKER', generate_ddp_file(DetectionTrainer(overrides=json.loads(sys.argv[1]))))
"""
    env = offline_env(PYTHONPATH=str(ULTRALYTICS_8_3))
    proc = run_python(code, folder, env, json.dumps(overrides))
    assert 'VERSION 8.3.100' in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    worker = next(line.split(' ', 1)[1] for line in proc.stdout.splitlines() if line.startswith('WORKER '))
    assert 'from ultralytics.models.yolo.detect.train import DetectionTrainer' in Path(worker).read_text()
    run = f'import runpy; runpy.run_path({worker!r}, run_name="__main__")'
    trained = run_python(run, folder, env, timeout=600)
    out = trained.stdout + trained.stderr
    assert trained.returncode == 0 and 'Ultralytics 8.3.100' in out and BUILT in out and 'epochs completed' in out, out[-3000:]
    off = run_python(run, folder, {**env, **OFF}, timeout=600)
    assert off.returncode != 0 and 'does not exist' in off.stdout + off.stderr, off.stderr[-2000:]
