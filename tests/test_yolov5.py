"""The plugin inside YOLOv5: configs build through the stock parse_model, fuse, layouts, errors."""
import copy
from pathlib import Path

import pytest
import torch
import yaml

from helpers import keeping_default_act, run_python
from yolov5_mnv4.hosts.yolov5 import MobileNetV4Stage, expand_backbone_rows
from yolov5_mnv4.resources import VARIANT_CONFIGS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'models').glob('*.yaml'))
RELU_HEAD_CONFIGS = {'conv_small': 'yolov5-mnv4-conv-s-relu.yaml', 'conv_medium': 'yolov5-mnv4-conv-m-relu.yaml'}
SEG_CONFIGS = {v: name.replace('.yaml', '-seg.yaml') for v, name in VARIANT_CONFIGS.items()}
P2_CONFIGS = {'conv_small': 'yolov5-mnv4-conv-s-p2.yaml', 'conv_medium': 'yolov5-mnv4-conv-m-p2.yaml'}
ALL_CONFIGS = (VARIANT_CONFIGS, RELU_HEAD_CONFIGS, SEG_CONFIGS, P2_CONFIGS)
TAPS = {'conv_small': [64, 96, 128], 'conv_medium': [80, 160, 256], 'conv_large': [96, 192, 512],
        'hybrid_medium': [80, 160, 256], 'hybrid_large': [96, 192, 512]}


def test_every_variant_has_a_config_and_the_card_config_exists():
    names = {p.name for p in CONFIGS}
    assert {n for configs in ALL_CONFIGS for n in configs.values()} | {'yolov5_mobilenetv4.yaml'} == names
    assert len({n.lower() for n in names}) == len(names)  # nothing that collides case-insensitively


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: p.name)
def test_config_builds_with_backbone_in_layers_0_to_4(yolo, config):
    cfg = yaml.safe_load(config.read_text())
    variant = next((v for configs in ALL_CONFIGS for v, name in configs.items() if name == config.name),
                   'conv_small')
    strides = [4, 8, 16, 32] if config.name in P2_CONFIGS.values() else [8, 16, 32]
    masks = 32 if config.name in SEG_CONFIGS.values() else 0
    with keeping_default_act(yolo):
        model = (yolo.SegmentationModel if masks else yolo.DetectionModel)(str(config))
    stages = [m for m in model.model if isinstance(m, MobileNetV4Stage)]
    assert [m.i for m in stages] == [0, 1, 2, 3, 4] and {m.variant for m in stages} == {variant}
    assert type(model.model[5]).__name__ == 'SPPF'
    assert model.stride.tolist() == strides
    assert type(model).__name__ == ('SegmentationModel' if masks else 'DetectionModel')
    backbone = sum(p.numel() for m in stages for p in m.parameters())
    from helpers import BACKBONE_PARAMS
    assert backbone == BACKBONE_PARAMS[variant]
    model.train()
    out = model(torch.zeros(2, 3, 128, 96))
    if masks:
        out, protos = out
        assert protos.shape[:2] == (2, masks) and protos.shape[2:] == (128 // 4, 96 // 4)
    assert [tuple(o.shape) for o in out] == [(2, 3, 128 // s, 96 // s, cfg['nc'] + 5 + masks) for s in strides]
    # The head's P3, P4, P5 come from layers 2, 3, 4: the /8, /16, /32 stage outputs (P2 from layer 1).
    x, taps = torch.zeros(1, 3, 64, 64), []
    for stage in stages:
        x = stage(x)
        taps.append(x.shape[1])
    assert taps[2:] == TAPS[variant]


@pytest.mark.parametrize('variant', RELU_HEAD_CONFIGS)
def test_relu_head_configs_are_all_relu_and_leave_other_models_alone(yolo, variant):
    with keeping_default_act(yolo):
        model = yolo.DetectionModel(str(REPO / 'models' / RELU_HEAD_CONFIGS[variant]))
    plain = yolo.DetectionModel(str(REPO / 'models' / VARIANT_CONFIGS[variant]))
    activations = {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.SiLU))}
    assert activations == {'ReLU'}
    head_acts = {type(m.act).__name__ for m in plain.model[5:].modules() if isinstance(m, yolo.Conv)}
    assert head_acts == {'SiLU'}
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())


def test_freeze_5_freezes_exactly_the_backbone(yolo):
    model = yolo.DetectionModel(str(REPO / 'models' / 'yolov5-mnv4-hybrid-m.yaml'))
    frozen = [f'model.{x}.' for x in range(5)]  # what train.py --freeze 5 matches
    backbone = {f'model.{m.i}.{n}' for m in model.model if isinstance(m, MobileNetV4Stage)
                for n, _ in m.named_parameters()}
    matched = {n for n, _ in model.named_parameters() if any(f in n for f in frozen)}
    assert matched == backbone


def test_width_multiple_leaves_the_backbone_alone(yolo):
    cfg = yaml.safe_load((REPO / 'models' / 'yolov5-mnv4-conv-m.yaml').read_text())
    for width in (0.25, 0.33, 0.75, 1.25):
        model = yolo.DetectionModel({**copy.deepcopy(cfg), 'width_multiple': width})
        assert [m.np for m in model.model[:5]] == [
            sum(p.numel() for p in m.parameters()) for m in model.model[:5]]
        assert sum(m.np for m in model.model[:5]) == 6_955_472


def test_generic_row_and_bad_rows(yolo):
    cfg = yaml.safe_load((REPO / 'models' / 'yolov5-mnv4-conv-s.yaml').read_text())
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4', ['hybrid-medium']]
    assert {m.variant for m in yolo.DetectionModel(copy.deepcopy(cfg)).model[:5]} == {'hybrid_medium'}
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4', ['conv_tiny']]
    with pytest.raises(ValueError, match='valid names: conv_small, conv_medium'):
        yolo.DetectionModel(copy.deepcopy(cfg))
    cfg['backbone'][0] = [-1, 2, 'MobileNetV4ConvSmall', []]
    with pytest.raises(ValueError, match='takes number 1'):
        yolo.DetectionModel(copy.deepcopy(cfg))


def test_expansion_keeps_the_yaml_and_the_row_numbering():
    cfg = yaml.safe_load((REPO / 'models' / 'yolov5_mobilenetv4.yaml').read_text())
    original = copy.deepcopy(cfg)
    expanded = expand_backbone_rows(cfg)
    assert cfg == original  # the model's yaml (saved in checkpoints) keeps the one-row form
    assert [row[2] for row in expanded['backbone']] == ['MobileNetV4Stage'] * 5 + ['SPPF']
    assert expanded['head'] == cfg['head']


def test_pypi_yolov5_package_is_registered_on_import(offline, tmp_path):
    code = f'''
import yolov5_mnv4, torch
from yolov5.models.yolo import DetectionModel
m = DetectionModel({str(REPO / 'models' / 'yolov5-mnv4-hybrid-m.yaml')!r}).eval()
assert type(m.model[3]).__name__ == 'MobileNetV4Stage', type(m.model[3])
print('params', sum(p.numel() for p in m.parameters()), tuple(m(torch.zeros(1, 3, 128, 128))[0].shape))
'''
    result = run_python(code, tmp_path, offline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'params 11644013 (1, 1008, 85)' in result.stdout


def test_checkpoint_without_the_plugin_fails_clearly(yolov5_dir, offline, tmp_path):
    code = f'''
import sys, torch
sys.path.insert(0, {str(yolov5_dir)!r})
from models.yolo import DetectionModel
torch.save({{'model': DetectionModel({str(REPO / 'models' / 'yolov5-mnv4-conv-s.yaml')!r})}}, 'ckpt.pt')
'''
    assert run_python(code, tmp_path, offline).returncode == 0
    blocked = f'''
import sys, torch
sys.modules['yolov5_mnv4'] = None  # as if the plugin were not installed
sys.path.insert(0, {str(yolov5_dir)!r})
import models.yolo
torch.load('ckpt.pt', weights_only=False)
'''
    result = run_python(blocked, tmp_path, offline)
    assert result.returncode != 0
    assert 'yolov5-mnv4 0.3.0 or later is not installed here (pip install /path/to/yolov5-mnv4)' in result.stderr
    assert "yolov5_mnv4" in result.stderr.splitlines()[-1]


def test_blog_recipe_rebuild_has_the_originals_parameter_count(yolo):
    from blog_recipe import build_blog_detector
    model = build_blog_detector(yolo)
    assert sum(p.numel() for p in model.parameters()) == 7_771_101  # the blog model before fusion (docs/benchmarks.md)
    assert not any(m.has_residual for m in model.modules() if hasattr(m, 'has_residual'))


def test_tensorflow_is_imported_only_for_the_tf_exports(yolov5_dir, offline, tmp_path):
    code = f'''
import sys, torch
sys.path.insert(0, {str(yolov5_dir)!r})
import yolov5_mnv4, yolov5_mnv4.export.tflite
from models.yolo import DetectionModel
DetectionModel({str(REPO / 'models' / 'yolov5-mnv4-hybrid-m.yaml')!r}).eval().fuse()
assert 'tensorflow' not in sys.modules and 'yolov5_mnv4.hosts.yolov5_keras' not in sys.modules, 'imported TensorFlow'
print('no tensorflow')
'''
    result = run_python(code, tmp_path, offline)
    assert result.returncode == 0 and 'no tensorflow' in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize('cutoff, width', [(5, 96), (6, 128)])
def test_classification_model_cut_from_a_detector(yolo, cutoff, width):
    """classify/train.py --model <detection best.pt> --cutoff k: YOLOv5 replaces layer k-1 by Classify,
    sized from that layer's `.conv.in_channels` (cutoff 5: the /32 stage goes, Classify reads the /16
    output, 96 wide for Conv-S; cutoff 6: the whole backbone stays and Classify replaces the SPPF)."""
    detector = yolo.DetectionModel(str(REPO / 'models' / 'yolov5-mnv4-conv-s.yaml'))
    model = yolo.ClassificationModel(model=detector, nc=7, cutoff=cutoff).eval()
    assert type(model.model[-1]).__name__ == 'Classify' and model.model[-1].conv.conv.in_channels == width
    assert len([m for m in model.model if isinstance(m, MobileNetV4Stage)]) == min(cutoff - 1, 5)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
        fused = model.fuse()(torch.zeros(2, 3, 64, 64))
    assert fused.shape == (2, 7)
