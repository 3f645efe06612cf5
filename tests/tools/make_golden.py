#!/usr/bin/env python3
"""Make the golden checkpoints in tests/data/golden/ with the stock train.py and today's code.

YOLOv5 pickles whole models, so every best.pt names our classes by module path; the golden files pin
today's paths (tests/test_golden.py loads them with the stock attempt_load and DetectMultiBackend and
reproduces the outputs stored beside them). To stay a few MB, each model starts from weights rounded
to three levels per tensor and trains one epoch with everything but Detect frozen (--freeze 20; the
frozen layers, BatchNorm statistics included, keep their values): the file is then low-entropy and
compresses well (xz). Data: the embedded coco8 with its labels folded onto 3 classes (class % 3).

    python tests/tools/make_golden.py --yolov5 .cache/yolov5-v7.0
    python tests/tools/make_golden.py --yolov5 .cache/yolov5-v7.0 --input-dependent-outputs
    python tests/tools/make_golden.py --ultralytics

`--ultralytics` makes the Ultralytics-package golden file the same way, with the package's own trainer:
yolo11n-mnv4-conv-s, one epoch from a ternary start with everything but the Detect frozen; its pickle
names `yolov5_mnv4.hosts.ultralytics.MobileNetV4Stage`. Beside it, the fused model's outputs on the
fixed random input and those of the model made input-dependent on two real images.

A golden model's own outputs barely depend on its input (its BatchNorm statistics and layer scales are
still their initial values: Conv-S moves by 5e-6 between two images, Hybrid-M by exactly 0), so the
stored outputs prove that it loads and fuses, not what it computes. `--input-dependent-outputs` stores,
beside the existing files and without touching them, the outputs of each golden model made
input-dependent by `input_dependent()` on two real images: outputs that any change in what the loaded
convs compute would move.
"""
import argparse
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers when run as a script
from helpers import input_dependent_, perturb_, real_images, write_checkpoint  # noqa: E402
from yolov5_mnv4.hosts.offline import offline_env  # noqa: E402
from yolov5_mnv4.resources import dataset_yaml, embedded_dataset, write_data_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / 'tests' / 'data' / 'golden'
CONFIGS = {'conv-s': 'yolov5-mnv4-conv-s.yaml', 'hybrid-m': 'yolov5-mnv4-hybrid-m.yaml'}
ULTRALYTICS_CONFIG = 'yolo11n-mnv4-conv-s.yaml'
ULTRALYTICS_KEY = 'ultralytics-yolo11n-conv-s'  # tests/data/golden/mnv4-<key>-nc3.*
NAMES = ['person', 'vehicle', 'thing']
IMG = 64


GOLDEN = OUT


def stored_output(key):
    """The outputs stored beside the golden file `key` on golden_input()."""
    return torch.load(OUT / f'mnv4-{key}-nc3.outputs.pt', weights_only=True)['output']


def golden_input():
    """The fixed input the stored outputs belong to."""
    return torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))


def input_dependent(model):
    """The unfused golden `model` with outputs that depend on the image, deterministically (in place):
    in float64, norms, biases and layer scales perturbed (seed 0), BatchNorm statistics of the 8
    embedded train images at IMG, attention peaked on the first; its conv weights stay the
    checkpoint's. Eval mode, unfused (the hosts' conv-BN fusion makes float32 convs).

    Float64, because such a model is ill-conditioned: in float32 its outputs move by 4e-4 (YOLOv5
    Conv-S) to 3e-3 (Ultralytics yolo11n) between one and two CPU threads, measured; in float64 the
    summation order no longer shows at the stored bound (1e-4)."""
    return input_dependent_(perturb_(model.double(), 0), IMG, 0)


def input_dependent_outputs(model):
    """input_dependent(model)'s outputs on the first two embedded val images (float64)."""
    with torch.no_grad():
        return input_dependent(model)(real_images(IMG, 2).double())[0]


def input_dependent_outputs_path(key):
    return OUT / f'mnv4-{key}-nc3.input-dependent-outputs.pt'


def write_input_dependent_outputs(attempt_load):
    """For each golden file: the fused input_dependent() model's outputs on the first two embedded val
    images, stored beside it."""
    import tempfile
    for key in CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / 'golden.pt'
            path.write_bytes(lzma.decompress((OUT / f'mnv4-{key}-nc3.pt.xz').read_bytes()))
            output = input_dependent_outputs(attempt_load(str(path), device='cpu', fuse=False))
        torch.save({'img': IMG, 'images': 'the first two embedded val images', 'output': output},
                   input_dependent_outputs_path(key))
        print(f'make_golden: {input_dependent_outputs_path(key).name}: output {tuple(output.shape)}')


def ultralytics_outputs(model):
    """(fused float32 outputs on golden_input(), input_dependent_outputs()) of an unfused
    Ultralytics-package `model` (it is changed in place)."""
    import copy
    with torch.no_grad():
        fixed = copy.deepcopy(model).float().fuse().eval()(golden_input())[0]
    return fixed, input_dependent_outputs(model)


def make_ultralytics_golden():
    # isort: off
    import yolov5_mnv4  # noqa: F401 (registers into the package when it is imported)
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel
    # isort: on

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = dataset_yaml(three_class_data(work).parent / 'coco8-3', work / 'u', NAMES)
        torch.manual_seed(0)
        model = DetectionModel(ULTRALYTICS_CONFIG, nc=len(NAMES), verbose=False)
        ternarize_(model)
        init = work / 'init.pt'
        torch.save({'model': model.half(), 'epoch': -1, 'train_args': {}}, init)
        frozen = len(model.model) - 1  # every layer but the Detect
        YOLO(str(init)).train(data=str(data), epochs=1, imgsz=IMG, batch=4, workers=0, plots=False, device='cpu',
                              freeze=frozen, project=str(work / 'runs'), name='golden', exist_ok=True, seed=0,
                              amp=False, val=False)
        best = work / 'runs' / 'golden' / 'weights' / 'last.pt'
        packed = OUT / f'mnv4-{ULTRALYTICS_KEY}-nc3.pt.xz'
        packed.write_bytes(lzma.compress(best.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        size = best.stat().st_size
        loaded = YOLO(str(best)).model.float()
        fixed, varied = ultralytics_outputs(loaded)
    torch.save({'input_seed': 0, 'img': IMG, 'output': fixed}, OUT / f'mnv4-{ULTRALYTICS_KEY}-nc3.outputs.pt')
    torch.save({'img': IMG, 'images': 'the first two embedded val images', 'output': varied},
               input_dependent_outputs_path(ULTRALYTICS_KEY))
    print(f'make_golden: {packed.name} {packed.stat().st_size / 1e6:.2f} MB '
          f'(checkpoint {size / 1e6:.1f} MB); output {tuple(fixed.shape)}')
    return 0


def three_class_data(work):
    source = embedded_dataset()
    data = work / 'coco8-3'
    shutil.copytree(source, data, ignore=shutil.ignore_patterns('*.cache', 'README.md'))
    for label in (data / 'labels').rglob('*.txt'):
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        label.write_text(''.join(f'{int(r[0]) % 3} {" ".join(r[1:])}\n' for r in rows))
    return write_data_yaml(data, NAMES, work / 'data.yaml')


@torch.no_grad()
def ternarize_(model):
    """Every weight tensor of `model` takes three values, -a, 0, a (in place)."""
    for p in model.parameters():
        if p.ndim > 1:
            scale = p.abs().mean()
            p.copy_(torch.sign(p) * scale * (p.abs() > scale / 2))
    return model


def ternary_init(yolo, cfg, path):
    """A train.py --weights file whose every weight tensor takes three values: -a, 0, a."""
    torch.manual_seed(0)
    write_checkpoint(ternarize_(yolo.DetectionModel(str(cfg), nc=len(NAMES))), path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, help='YOLOv5 checkout with the plugin applied')
    parser.add_argument('--ultralytics', action='store_true', help='make the Ultralytics-package golden file')
    parser.add_argument('--input-dependent-outputs', action='store_true',
                        help='only add the input-dependent outputs of the existing golden files')
    args = parser.parse_args(argv)
    if args.ultralytics:
        os.environ.update({k: v for k, v in offline_env().items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'})
        OUT.mkdir(parents=True, exist_ok=True)
        return make_ultralytics_golden()
    if args.yolov5 is None:
        parser.error('--yolov5 is required unless --ultralytics')
    tree = args.yolov5.resolve()
    env = offline_env()
    os.environ.update(env)  # attempt_load below: v7.0 on torch >= 2.6 (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)
    sys.path.insert(0, str(tree))
    import models.yolo
    from models.experimental import attempt_load
    if args.input_dependent_outputs:
        return write_input_dependent_outputs(attempt_load)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = three_class_data(work)
        for key, cfg_name in CONFIGS.items():
            cfg = REPO / 'models' / cfg_name
            init = work / f'{key}-init.pt'
            ternary_init(models.yolo, cfg, init)
            subprocess.run([sys.executable, 'train.py', '--cfg', str(cfg), '--weights', str(init), '--data', str(data),
                            '--epochs', '1', '--img', str(IMG), '--batch-size', '4', '--workers', '0', '--device',
                            'cpu', '--noplots', '--freeze', '20', '--project', str(work), '--name', key],
                           cwd=tree, env=env, check=True)
            best = work / key / 'weights' / 'best.pt'
            packed = OUT / f'mnv4-{key}-nc3.pt.xz'
            packed.write_bytes(lzma.compress(best.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
            model = attempt_load(str(best), device='cpu', fuse=True).eval()
            with torch.no_grad():
                output = model(golden_input())[0]
            torch.save({'input_seed': 0, 'img': IMG, 'output': output}, OUT / f'mnv4-{key}-nc3.outputs.pt')
            print(f'make_golden: {packed.name} {packed.stat().st_size / 1e6:.2f} MB '
                  f'(checkpoint {best.stat().st_size / 1e6:.1f} MB); output {tuple(output.shape)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
