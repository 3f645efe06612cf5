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
from pathlib import Path

import pytest
import torch

from helpers import assert_input_dependent, drop_residuals_, output_errors, real_images
from make_golden import CONFIGS, IMG, golden_input, input_dependent, input_dependent_outputs_path

GOLDEN = Path(__file__).resolve().parent / 'data' / 'golden'
KEYS = list(CONFIGS)


@pytest.fixture(scope='module')
def unpacked(tmp_path_factory):
    out = tmp_path_factory.mktemp('golden')
    paths = {}
    for key in KEYS:
        paths[key] = out / f'mnv4-{key}-nc3.pt'
        paths[key].write_bytes(lzma.decompress((GOLDEN / f'mnv4-{key}-nc3.pt.xz').read_bytes()))
    return paths


def stored_output(key):
    return torch.load(GOLDEN / f'mnv4-{key}-nc3.outputs.pt', weights_only=True)['output']


def close(a, b):
    """Boxes within 1e-4 of the largest coordinate, scores within 1e-4 (helpers.output_errors)."""
    return a.shape == b.shape and max(output_errors(a, b)) <= 1e-4


@pytest.mark.parametrize('key', KEYS)
def test_attempt_load_fuses_and_reproduces_the_stored_outputs(yolo, unpacked, key):
    from models.experimental import attempt_load
    model = attempt_load(str(unpacked[key]), device='cpu', fuse=True).eval()
    assert model.nc == 3 and list(model.names.values()) == ['person', 'vehicle', 'thing']
    norms = [m for stage in model.model[:5] for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == (4 if key == 'hybrid-m' else 0)  # fused: only kv-stride-2 attention inputs stay
    with torch.no_grad():
        output = model(golden_input())[0]
    assert close(output, stored_output(key))


@pytest.mark.parametrize('key', KEYS)
def test_detect_multi_backend_reproduces_the_stored_outputs(yolo, unpacked, key):
    from models.common import DetectMultiBackend
    backend = DetectMultiBackend(str(unpacked[key]), device=torch.device('cpu'), fuse=True)
    assert backend.pt and backend.stride == 32
    with torch.no_grad():
        output = backend(golden_input())
    output = output[0] if isinstance(output, (list, tuple)) else output
    assert close(output, stored_output(key))


@pytest.mark.parametrize('key', KEYS)
def test_what_the_loaded_convs_compute_is_unchanged(yolo, unpacked, key):
    """The golden models' own outputs hardly depend on the input (measured: Conv-S 5e-6 between two
    images, Hybrid-M 0), so the tests above show loading and fusing only. Made input-dependent the same
    deterministic way as when their outputs were stored (make_golden.input_dependent), they must give
    those outputs on real images: a change in what any loaded conv, block or attention computes shows."""
    from models.experimental import attempt_load
    model = input_dependent(attempt_load(str(unpacked[key]), device='cpu', fuse=False)).fuse().eval()
    images = real_images(IMG, 2)
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


def test_every_pickled_path_still_resolves(unpacked):
    import importlib
    ours = set()
    for path in unpacked.values():
        ours |= {pair for pair in pickled_globals(path) if pair[0].startswith('yolov5_mnv4')}
    assert ('yolov5_mnv4.integration', 'MobileNetV4Stage') in ours
    assert ('yolov5_mnv4.attention', 'MobileMultiQueryAttention') in ours  # from the hybrid
    for module, name in sorted(ours):
        obj = importlib.import_module(module)
        for part in name.split('.'):
            obj = getattr(obj, part, None)
        assert obj is not None, f'{module}.{name} is pickled in every checkpoint made so far: keep an alias for it'
