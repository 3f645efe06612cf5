"""ImageNet-pretrained backbones from timm checkpoints, inside a full YOLOv5 DetectionModel."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import BACKBONE_PARAMS, max_abs_diff, perturb_, require, save_timm
from yolov5_mnv4 import MobileNetV4
from yolov5_mnv4.cli.convert import build_pretrained_model
from yolov5_mnv4.pretrained import TIMM_BN_EPS
from yolov5_mnv4.resources import VARIANT_CONFIGS, embedded_dataset
from yolov5_mnv4.timm_weights import WeightMappingError

timm = require('timm')
REPO = Path(__file__).resolve().parents[1]


def backbone_taps(detection_model, x):
    taps = []
    for stage in detection_model.model[:5]:
        x = stage(x)
        taps.append(x)
    return taps[1:]


def config(variant):
    return yaml.safe_load((REPO / 'models' / VARIANT_CONFIGS[variant]).read_text())


@pytest.mark.parametrize('variant', list(VARIANT_CONFIGS))
def test_detector_backbone_reproduces_timm_features(yolo, variant, tmp_path):
    reference = perturb_(timm.create_model(f'mobilenetv4_{variant}', pretrained=False), seed=7).eval()
    x = torch.randn(1, 3, 320, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[1, 2, 3, 4], extra_blocks=True,
                                                   intermediates_only=True)
    for suffix in ('.safetensors', '.pth', '.bin'):
        source = save_timm(reference, tmp_path / f'{variant}{suffix}')
        model = build_pretrained_model(yolo, config(variant), source).eval()
        bns = [m for stage in model.model[:5] for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert {bn.eps for bn in bns} == {TIMM_BN_EPS}  # survived YOLOv5's initialize_weights
        assert {bn.momentum for bn in bns} == {0.03}  # YOLOv5's fine-tuning momentum
        with torch.no_grad():
            assert max_abs_diff(expected, backbone_taps(model, x)) < 1e-5, suffix


def test_wrong_variant_is_refused_naming_both(yolo, tmp_path):
    source = save_timm(timm.create_model('mobilenetv4_conv_large', pretrained=False), tmp_path / 'l.safetensors')
    with pytest.raises(WeightMappingError, match=r'MobileNetV4 hybrid_large \(it looks like conv_large\)'):
        build_pretrained_model(yolo, config('hybrid_large'), source)


def test_leftover_and_missing_keys_are_named(yolo, tmp_path):
    state = timm.create_model('mobilenetv4_conv_small', pretrained=False).state_dict()
    state['blocks.3.9.extra.weight'] = torch.zeros(1)
    del state['blocks.2.0.pw_exp.conv.weight']
    source = tmp_path / 'edited.pth'
    torch.save(state, source)
    with pytest.raises(WeightMappingError) as err:
        build_pretrained_model(yolo, config('conv_small'), source)
    assert 'blocks.3.9.extra.weight' in str(err.value) and 'blocks.2.0.pw_exp.conv.weight' in str(err.value)


@pytest.mark.parametrize('where', ['cwd', 'option'])
def test_converter_outside_a_yolov5_tree_names_the_option(tmp_path, offline, where):
    extra = ['--yolov5', str(tmp_path)] if where == 'option' else []
    result = subprocess.run([str(Path(sys.executable).parent / 'yolov5-mnv4-convert'), '--cfg', 'yolov5-mnv4-conv-s.yaml',
                             '--timm', 'x.safetensors', '--out', 'x.pt', *extra], capture_output=True, text=True,
                            env=offline, cwd=tmp_path)
    assert result.returncode == 1
    assert 'is not a YOLOv5 checkout (no train.py, models/yolo.py and models/common.py): run it inside your YOLOv5 checkout or pass --yolov5' in result.stderr
    assert 'Traceback' not in result.stderr


def test_missing_file_and_bad_format_are_clear(yolo, tmp_path):
    with pytest.raises(FileNotFoundError, match='pretrained backbone weights not found'):
        build_pretrained_model(yolo, config('conv_small'), tmp_path / 'nope.safetensors')
    (tmp_path / 'w.onnx').write_text('x')
    with pytest.raises(ValueError, match='unsupported checkpoint format'):
        build_pretrained_model(yolo, config('conv_small'), tmp_path / 'w.onnx')


def test_weights_file_through_stock_train(yolov5_dir, offline, tmp_path):
    reference = perturb_(timm.create_model('mobilenetv4_conv_small', pretrained=False), seed=5).eval()
    source = save_timm(reference, tmp_path / 'mnv4s.safetensors')
    weights = tmp_path / 'mnv4s.pt'
    # The console command, run inside the tree as the README shows (no --yolov5).
    convert = subprocess.run([str(Path(sys.executable).parent / 'yolov5-mnv4-convert'), '--cfg',
                              'yolov5-mnv4-conv-s.yaml', '--timm', str(source), '--out', str(weights)],
                             capture_output=True, text=True, env=offline, cwd=yolov5_dir)
    assert convert.returncode == 0, convert.stderr[-3000:]
    assert f'({len(MobileNetV4("conv_small").state_dict())} backbone tensors from' in convert.stdout

    # The weights file alone (timm file gone) reproduces timm's features once rebuilt from the config.
    source.unlink()
    sys.path.insert(0, str(yolov5_dir))
    ckpt = torch.load(weights, weights_only=False)
    import models.yolo
    rebuilt = models.yolo.DetectionModel(str(REPO / 'models' / 'yolov5-mnv4-conv-s.yaml'))
    rebuilt.load_state_dict(ckpt['model'].state_dict())
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[1, 2, 3, 4], extra_blocks=True,
                                                   intermediates_only=True)
        assert max_abs_diff(expected, backbone_taps(rebuilt.eval(), x)) < 1e-4

    from yolov5_mnv4.cli.demo import prepare_data
    data_yaml, _ = prepare_data(embedded_dataset(), tmp_path)
    train = subprocess.run([sys.executable, 'train.py', '--cfg', 'yolov5-mnv4-conv-s.yaml', '--weights', str(weights),
                            '--data', str(data_yaml), '--epochs', '1', '--img', '64', '--batch-size', '4',
                            '--workers', '0', '--device', 'cpu', '--noplots', '--freeze', '5', '--project',
                            str(tmp_path / 'runs'), '--name', 'ft'], cwd=yolov5_dir, env=offline,
                           capture_output=True, text=True, timeout=600)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-3000:]
    done, total = map(int, re.search(r'Transferred (\d+)/(\d+) items', log).groups())
    print(f'train.py: Transferred {done}/{total} items')
    assert done == total - 1  # all but the anchors, which train.py excludes when --cfg is given
    assert 'freezing model.4.' in log and 'freezing model.5.' not in log


def run_train(yolov5_dir, offline, *args):
    result = subprocess.run([sys.executable, 'train.py', *map(str, args), '--img', '64', '--batch-size', '4',
                             '--workers', '0', '--device', 'cpu', '--noplots', '--exist-ok'], cwd=yolov5_dir,
                            env=offline, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    return log


def test_pretrained_row_frozen_training_then_checkpoints_outlive_the_timm_file(yolo, yolov5_dir, offline, tmp_path):
    """A YAML row naming a timm file, trained with --freeze 5: the frozen backbone keeps timm's BN
    statistics (eval mode) while the head's move; the checkpoint no longer names the file, so after
    deleting it both fine-tuning from last.pt (no --cfg) and --resume rebuild and run."""
    reference = perturb_(timm.create_model('mobilenetv4_conv_small', pretrained=False), seed=3).eval()
    source = save_timm(reference, tmp_path / 'mnv4s.safetensors')
    cfg = config('conv_small')
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4ConvSmall', [str(source)]]
    cfg_path = tmp_path / 'pretrained-row.yaml'
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    from yolov5_mnv4.cli.demo import prepare_data
    data_yaml, _ = prepare_data(embedded_dataset(), tmp_path)
    runs = tmp_path / 'runs'

    log = run_train(yolov5_dir, offline, '--cfg', cfg_path, '--weights', '', '--data', data_yaml, '--epochs', 1,
                    '--freeze', 5, '--project', runs, '--name', 'frozen')
    assert f'pretrained tensors loaded from {source}' in log
    last = runs / 'frozen' / 'weights' / 'last.pt'
    ckpt = torch.load(last, map_location='cpu', weights_only=False)
    assert str(source) not in yaml.safe_dump(ckpt['model'].yaml)
    trained = ckpt['model'].float().eval()
    with torch.no_grad():
        built = build_pretrained_model(yolo, config('conv_small'), source).eval()
        for (name, a), b in zip(built.model[:5].state_dict().items(), trained.model[:5].state_dict().values()):
            if name.endswith(('running_mean', 'running_var')):  # fp16 in the checkpoint: 1e-3 relative
                assert (a - b).abs().max() <= 2e-3 * a.abs().max() + 1e-6, name
        head = [k for k in built.state_dict() if k.startswith('model.6.') and k.endswith('running_var')]
        assert not torch.allclose(built.state_dict()[head[0]], trained.state_dict()[head[0]], rtol=1e-2)

    source.unlink()
    log = run_train(yolov5_dir, offline, '--weights', last, '--data', data_yaml, '--epochs', 1, '--project', runs,
                    '--name', 'finetune')
    assert 'Transferred' in log

    # An interrupted run: last.pt one epoch into two (train.py strips a finished one of its state).
    opt = yaml.safe_load((runs / 'frozen' / 'opt.yaml').read_text())
    (runs / 'frozen' / 'opt.yaml').write_text(yaml.safe_dump({**opt, 'epochs': 2}))
    torch.save({**ckpt, 'epoch': 0}, last)
    log = run_train(yolov5_dir, offline, '--resume', last)
    assert 'Resuming training from' in log and re.search(r'1/1 ', log)


def test_timm_backbone_to_a_yolov5_classifier(yolo, yolov5_dir, offline, tmp_path):
    """yolov5-mnv4-convert --classify: a ClassificationModel with the timm backbone (its features equal
    timm's) and YOLOv5's Classify head, which the stock classify/train.py fine-tunes on an ImageFolder."""
    reference = perturb_(timm.create_model('mobilenetv4_conv_small', pretrained=False), seed=11).eval()
    source = save_timm(reference, tmp_path / 'mnv4s.safetensors')
    out = tmp_path / 'mnv4s-cls.pt'
    convert = subprocess.run([str(Path(sys.executable).parent / 'yolov5-mnv4-convert'), '--classify', '--cfg',
                              'yolov5-mnv4-conv-s.yaml', '--timm', str(source), '--out', str(out)],
                             capture_output=True, text=True, env=offline, cwd=yolov5_dir)
    assert convert.returncode == 0, convert.stderr[-3000:]
    model = torch.load(out, weights_only=False)['model'].float().eval()
    assert type(model).__name__ == 'ClassificationModel' and type(model.model[-1]).__name__ == 'Classify'
    assert len(model.model) == 6 and model.model[-1].conv.conv.in_channels == 128  # the /32 stage width
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[1, 2, 3, 4], extra_blocks=True,
                                                   intermediates_only=True)
        assert max_abs_diff(expected, backbone_taps(model, x)) < 1e-4

    from make_task_data import make_classify
    coco = REPO.parent / 'shared' / 'datasets' / 'coco128'
    data = tmp_path / 'crops'
    made = make_classify(coco if coco.is_dir() else embedded_dataset(), data, 3, 20,
                         {i: f'class{i}' for i in range(80)})
    assert len({k.split('/')[1] for k in made}) == 3
    env = {**offline, 'PYTHONPATH': str(yolov5_dir)}  # the PyPI-built tree's classify/train.py needs its root
    train = subprocess.run([sys.executable, 'classify/train.py', '--model', str(out), '--data', str(data), '--epochs',
                            '1', '--img', '64', '--batch-size', '8', '--workers', '0', '--device', 'cpu',
                            '--project', str(tmp_path / 'runs'), '--name', 'cls'], cwd=yolov5_dir, env=env,
                           capture_output=True, text=True, timeout=600)
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-3000:]
    best = torch.load(tmp_path / 'runs' / 'cls' / 'weights' / 'best.pt', weights_only=False)['model']
    assert best.model[-1].linear.out_features == 3  # classify/train.py reshaped the head to the data's classes


def test_timm_weights_table_matches_the_backbones_and_names_resolve(monkeypatch):
    """TIMM_WEIGHTS (the table docs/design.md is generated from): each row's backbone params are what
    our MobileNetV4 of that variant counts, and a bare variant name as --timm source asks timm for the
    row's model (timm's download replaced by a recorder: nothing leaves this machine)."""
    from yolov5_mnv4 import MobileNetV4, pretrained
    from yolov5_mnv4.timm_weights import TIMM_WEIGHTS
    assert set(TIMM_WEIGHTS) == set(BACKBONE_PARAMS)
    asked = []
    monkeypatch.setattr(pretrained, '_from_timm', lambda name: asked.append(name) or {})
    for variant, weights in TIMM_WEIGHTS.items():
        with torch.device('meta'):
            assert sum(p.numel() for p in MobileNetV4(variant).parameters()) == weights.backbone_params, variant
        pretrained.read_timm_state(variant)
        pretrained.read_timm_state(f'timm:{variant}')
    assert asked == [w.name for w in TIMM_WEIGHTS.values() for _ in range(2)]
    with pytest.raises(FileNotFoundError, match='or a variant name for its ImageNet weights: conv_small'):
        pretrained.read_timm_state('conv_smal')  # control: a misspelt variant is not sent to timm
