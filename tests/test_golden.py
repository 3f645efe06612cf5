"""Checkpoints made today load in every later version: the golden files in tests/data/golden (made by
the stock train.py through tests/tools/make_golden.py) load with YOLOv5's own loaders, fuse, and give the
outputs stored beside them.

Alias policy: the class paths these files pickle are a public API. A class that moves or is renamed
keeps its old module path working (an import of the new one under the old name), and
test_every_pickled_path_still_resolves below fails, naming the path, until it does.
"""
import io
import lzma
import pickletools
import zipfile

import pytest
import torch

from helpers import assert_input_dependent, drop_residuals_, output_errors, real_images, require, within
from make_golden import (
    CONFIGS,
    GOLDEN,
    IMG,
    ULTRALYTICS_KEY,
    golden_input,
    input_dependent,
    input_dependent_outputs_path,
    stored_output,
    ultralytics_outputs,
)

KEYS = list(CONFIGS)


@pytest.fixture(scope='module')
def unpacked(tmp_path_factory):
    out = tmp_path_factory.mktemp('golden')
    paths = {}
    for key in KEYS:
        paths[key] = out / f'mnv4-{key}-nc3.pt'
        paths[key].write_bytes(lzma.decompress((GOLDEN / f'mnv4-{key}-nc3.pt.xz').read_bytes()))
    return paths


@pytest.fixture(scope='module')
def ultralytics_golden(tmp_path_factory):
    """The Ultralytics-package golden file, unpacked; the package imported with the plugin registered."""
    require('ultralytics', 'ultralytics')
    # isort: off
    import yolov5_mnv4  # noqa: F401
    import ultralytics.nn.tasks  # noqa: F401 (registers the plugin into the package)
    # isort: on
    path = tmp_path_factory.mktemp('golden-ultralytics') / f'mnv4-{ULTRALYTICS_KEY}-nc3.pt'
    path.write_bytes(lzma.decompress((GOLDEN / f'{path.name}.xz').read_bytes()))
    return path


@pytest.mark.parametrize('key', KEYS)
def test_attempt_load_fuses_and_reproduces_the_stored_outputs(yolo, unpacked, key):
    from models.experimental import attempt_load
    model = attempt_load(str(unpacked[key]), device='cpu', fuse=True).eval()
    assert model.nc == 3 and list(model.names.values()) == ['person', 'vehicle', 'thing']
    norms = [m for stage in model.model[:5] for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (4 if key == 'hybrid-m' else 0)  # fused: only kv-stride-2 attention inputs stay
    with torch.no_grad():
        output = model(golden_input())[0]
    assert within(output, stored_output(key))


@pytest.mark.parametrize('key', KEYS)
def test_detect_multi_backend_reproduces_the_stored_outputs(yolo, unpacked, key):
    from models.common import DetectMultiBackend
    backend = DetectMultiBackend(str(unpacked[key]), device=torch.device('cpu'), fuse=True)
    assert backend.pt and backend.stride == 32
    with torch.no_grad():
        output = backend(golden_input())
    output = output[0] if isinstance(output, (list, tuple)) else output
    assert within(output, stored_output(key))


@pytest.mark.parametrize('key', KEYS)
def test_what_the_loaded_convs_compute_is_unchanged(yolo, unpacked, key):
    """The golden models' own outputs hardly depend on the input (measured: Conv-S 5e-6 between two
    images, Hybrid-M 0), so the tests above show loading and fusing only. Made input-dependent the same
    deterministic way as when their outputs were stored (make_golden.input_dependent), they must give
    those outputs on real images: a change in what any loaded conv, block or attention computes shows."""
    from models.experimental import attempt_load
    model = input_dependent(attempt_load(str(unpacked[key]), device='cpu', fuse=False))
    images = real_images(IMG, 2).double()
    with torch.no_grad():
        output = model(images)[0]
    assert_input_dependent(output, 1e-4, f'golden {key}, made input-dependent')
    stored = torch.load(input_dependent_outputs_path(key), weights_only=True)['output']
    errors = output_errors(output, stored)
    with torch.no_grad():  # control: the same model without its last UIB residual
        broken = drop_residuals_(model, -1)[0](images)[0]
    control = output_errors(broken, stored)
    print(f'golden {key}: boxes {errors[0]:.2g}, scores {errors[1]:.2g} from the stored outputs; without the last '
          f'residual {control[0]:.2g}, {control[1]:.2g}')
    assert output.shape == stored.shape and max(errors) <= 1e-4
    assert max(control) > 1e-3


def _check_ultralytics_golden(model):
    fixed, varied = ultralytics_outputs(model)
    stored_fixed = stored_output(ULTRALYTICS_KEY)
    stored_varied = torch.load(input_dependent_outputs_path(ULTRALYTICS_KEY), weights_only=True)['output']
    assert_input_dependent(varied, 1e-4, 'Ultralytics golden, made input-dependent', channels_first=True)
    for got, stored in ((fixed, stored_fixed), (varied, stored_varied)):
        errors = output_errors(got, stored, channels_first=True)  # the package's (batch, 4 + classes, anchors)
        assert got.shape == stored.shape and max(errors) <= 1e-4, errors


def test_ultralytics_golden_loads_with_the_packages_loader_and_gives_the_stored_outputs(ultralytics_golden):
    """The package's own loader (YOLO(path): plain unpickling), the model fused as its predictor does it,
    and made input-dependent as when the outputs were stored: both stored outputs within 1e-4."""
    from ultralytics import YOLO
    model = YOLO(str(ultralytics_golden)).model
    assert model.names == {0: 'person', 1: 'vehicle', 2: 'thing'}
    _check_ultralytics_golden(model)


def test_ultralytics_golden_loads_under_safe_loading(ultralytics_golden):
    """`torch_safe_load(safe_only=True)` (what ULTRALYTICS_SAFE_LOAD=1 runs: torch.load with
    weights_only=True and the package's allow-list) accepts our classes under the names pickled."""
    from ultralytics.nn.tasks import torch_safe_load
    loaded = torch_safe_load(str(ultralytics_golden), safe_only=True)
    ckpt = loaded[0] if isinstance(loaded, tuple) else loaded
    _check_ultralytics_golden(ckpt['model'])


def test_ultralytics_golden_control_without_the_plugins_classes(ultralytics_golden):
    """Control for the test above: the same safe load, with the package's allow-list but not ours
    (every safe global torch was given kept for the call, but ours), refuses the file."""
    from ultralytics.nn.tasks import torch_safe_load
    assert ('yolov5_mnv4.ultralytics_host', 'MobileNetV4Stage') in pickled_globals(ultralytics_golden)
    registered = torch.serialization.get_safe_globals()
    ours = [g for g in registered if (g[0] if isinstance(g, tuple) else g).__module__.startswith('yolov5_mnv4')]
    assert ours, 'the plugin registered no safe globals'
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([g for g in registered if g not in ours])
    try:
        with pytest.raises(Exception, match='outside the supported'):
            torch_safe_load(str(ultralytics_golden), safe_only=True)
    finally:
        torch.serialization.add_safe_globals(registered)


def pickled_globals(checkpoint):
    """The (module, name) pairs a torch.save file's pickle refers to."""
    with zipfile.ZipFile(checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith('/data.pkl')))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name == 'GLOBAL':
            found.add(tuple(arg.split(' ', 1)))
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'UNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            found.add((strings[-2], strings[-1]))
    return found


def test_every_pickled_path_still_resolves(unpacked, ultralytics_golden):
    import importlib
    ours = set()
    for path in [*unpacked.values(), ultralytics_golden]:
        ours |= {pair for pair in pickled_globals(path) if pair[0].startswith('yolov5_mnv4')}
    assert ('yolov5_mnv4.integration', 'MobileNetV4Stage') in ours  # the paths of 0.1.x and 0.2.x
    assert ('yolov5_mnv4.ultralytics_host', 'MobileNetV4Stage') in ours
    assert ('yolov5_mnv4.attention', 'MobileMultiQueryAttention') in ours  # from the hybrid
    for module, name in sorted(ours):
        obj = importlib.import_module(module)
        for part in name.split('.'):
            obj = getattr(obj, part, None)
        assert obj is not None, f'{module}.{name} is pickled in every checkpoint made so far: keep an alias for it'
