import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'tools'))  # the smoke runs and data makers
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'scripts'))  # blog_recipe, benchmark helpers

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config):
    return f'yolov5 tree: {yolov5_tree_path()}'


# ---- markers: `scripts/test.sh --quick` runs `-m "not slow"` (~2 min: the core, the YOLOv5 host's
# registration, bad input, the docs), CI runs everything. A module is slow when one of its tests trains,
# exports through a runtime or runs YOLOv5's scripts: each of these took 20 s to 10 min in a full run.
SLOW_MODULES = {'test_benchmark', 'test_package', 'test_pretrained', 'test_qat', 'test_runtimes', 'test_smoke',
                'test_tf_export', 'test_train_options', 'test_training_paths', 'test_ultralytics',
                'test_ultralytics_cli', 'test_unpatched'}
LEFT_OUT = []


def pytest_collection_modifyitems(config, items):
    """slow: the modules above; tree: every test that needs a YOLOv5 tree (the yolov5_dir fixture);
    ultralytics: the Ultralytics-package host's modules (edge and smoke are set in the modules)."""
    for item in items:
        module = item.module.__name__.rsplit('.', 1)[-1]
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if 'yolov5_dir' in item.fixturenames:
            item.add_marker(pytest.mark.tree)
        if module.startswith('test_ultralytics'):
            item.add_marker(pytest.mark.ultralytics)


def pytest_deselected(items):
    LEFT_OUT.extend(item for item in items if item.get_closest_marker('slow'))


def pytest_terminal_summary(terminalreporter):
    if LEFT_OUT:
        modules = sorted({item.module.__name__.rsplit('.', 1)[-1] for item in LEFT_OUT})
        terminalreporter.write_line(f'left out {len(LEFT_OUT)} tests marked slow ({", ".join(modules)}); '
                                    'scripts/test.sh without --quick runs them, as CI does')


def yolov5_tree_path():
    return Path(os.environ.get('YOLOV5_DIR') or REPO / '.cache' / 'yolov5-v7.0').resolve()


@pytest.fixture(scope='session')
def yolov5_dir():
    """The YOLOv5 checkout (plugin applied) that scripts/setup.sh prepares; the tests need it."""
    tree = yolov5_tree_path()
    if not (tree / 'models' / 'yolo.py').is_file():
        pytest.fail(f'no YOLOv5 tree at {tree}: run scripts/setup.sh (or set YOLOV5_DIR)', pytrace=False)
    return tree


@pytest.fixture(scope='session')
def offline(tmp_path_factory):
    from yolov5_mnv4.hosts.offline import offline_env
    return offline_env(tmp_path_factory.mktemp('yolov5-state'))


@pytest.fixture(scope='session')
def yolo(yolov5_dir, offline):
    """YOLOv5's models.yolo imported from the tree, in this process (the tree's hook registers us)."""
    os.environ.update(offline)
    sys.path.insert(0, str(yolov5_dir))
    import models.yolo

    from yolov5_mnv4.hosts.yolov5 import is_registered
    assert is_registered(models.yolo), 'the hook in models/yolo.py did not register'
    return models.yolo


TESTBED = REPO / 'tests' / 'data' / 'testbed'


@pytest.fixture(scope='session')
def testbed_dir(tmp_path_factory):
    """A copy of the committed accuracy testbed (tests/data/testbed: checkpoints that detect their
    128 training images at 320 px, and those images with their labels) with `testbed.yaml`, a data
    YAML whose train and val splits are those images: a copy, since YOLOv5's loaders write label
    caches beside the labels."""
    import shutil

    import yaml

    from yolov5_mnv4.resources import COCO_NAMES
    folder = tmp_path_factory.mktemp('testbed') / 'testbed'
    shutil.copytree(TESTBED, folder)
    (folder / 'testbed.yaml').write_text(yaml.safe_dump({
        'path': str(folder), 'train': 'images/train2017', 'val': 'images/train2017',
        'names': dict(enumerate(COCO_NAMES))}, sort_keys=False))
    return folder


# ---- measured numbers for docs/results: `MNV4_RECORD=docs/results/parity.json python -m pytest ...` ----
RECORDS = {}
PENDING = {}  # {test id: its records}, kept only if the test passes


@pytest.fixture
def record(request):
    """record(key, **values): keep a number this test measured (a parity error, an int8 SNR). With
    MNV4_RECORD=<file.json> set, the session merges the records of the tests that passed into that file
    (key by key, each with the test, date and machine), which scripts/render_docs.py turns into the
    docs' tables; a failing test's records are dropped."""
    def add(key, **values):
        PENDING.setdefault(request.node.nodeid, {})[key] = {**{k: _plain(v) for k, v in values.items()},
                                                            'test': request.node.nodeid.split('::', 1)[0]}
    return add


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == 'call':
        kept = PENDING.pop(item.nodeid, {})
        if report.passed:
            RECORDS.update(kept)


def _plain(value):
    """`value` as JSON keeps it: numpy and torch scalars and arrays as Python numbers and lists,
    floats rounded to 8 decimals."""
    if hasattr(value, 'tolist'):  # numpy and torch, scalars included
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return round(value, 8) if isinstance(value, float) else value


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get('MNV4_RECORD')
    if not path or not RECORDS:
        return
    import json
    import platform
    import time

    import torch
    target = Path(path)
    result = json.loads(target.read_text()) if target.is_file() else {}
    stamp = {'date': time.strftime('%Y-%m-%d'),
             'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}'}
    result['command'] = ('MNV4_RECORD=docs/results/parity.json python -m pytest tests/test_model.py '
                         'tests/test_timm_equivalence.py tests/test_runtimes.py tests/test_tf_export.py')
    result.setdefault('records', {}).update({key: {**values, **stamp} for key, values in RECORDS.items()})
    result['records'] = dict(sorted(result['records'].items()))
    target.write_text(json.dumps(result, indent=1) + '\n')
