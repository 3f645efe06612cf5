"""ImageNet-pretrained backbones from timm checkpoints.

A source is a timm state dict saved as `.safetensors`, `.pth`/`.pt` or `.bin`, or (with the network
and timm installed) a timm model name such as `mobilenetv4_conv_small.e2400_r224_in1k` (`timm:` in
front is optional). Every backbone tensor is mapped through `timm_weights.convert_timm_state_dict`:
a tensor left over on either side, or a checkpoint of another variant, is an error.
"""
import functools
from pathlib import Path

import torch

from .layers import FOLDABLE_NORMS
from .model import MobileNetV4
from .timm_weights import convert_timm_state_dict

TIMM_BN_EPS = 1e-5  # timm trains MobileNetV4 with PyTorch's default BatchNorm eps
TORCH_FORMATS = ('.pth', '.pt', '.bin')
FORMATS = ('.safetensors', *TORCH_FORMATS)


@functools.lru_cache(maxsize=4)
def _read_file(path, mtime):
    suffix = path.suffix.lower()
    if suffix == '.safetensors':
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # installed with the plugin; gone only from a hand-made environment
            raise ImportError(f'reading {path} needs the safetensors package: pip install safetensors') from err
        state = load_file(str(path))
    elif suffix in TORCH_FORMATS:
        state = torch.load(str(path), map_location='cpu', weights_only=True)
        state = state.get('state_dict', state) if isinstance(state, dict) else state
    else:
        raise ValueError(f'unsupported checkpoint format {path.name!r}: use .safetensors, .pth, .pt or .bin')
    if not isinstance(state, dict):
        raise ValueError(f'{path} does not hold a state dict')
    return state


@functools.lru_cache(maxsize=2)
def _from_timm(name):
    try:
        import timm
    except ImportError as err:
        raise ImportError(f'loading {name!r} by name needs timm (pip install timm) and the network; '
                          f'or pass a local checkpoint file') from err
    return timm.create_model(name, pretrained=True).state_dict()


def read_timm_state(source):
    """The timm state dict named by `source` (a file path or a timm model name)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        return _read_file(path.resolve(), path.stat().st_mtime)
    name = text[len('timm:'):] if text.startswith('timm:') else text
    if name.startswith('mobilenetv4_') and path.suffix.lower() not in FORMATS:
        return _from_timm(name)
    raise FileNotFoundError(f'pretrained backbone weights not found: {text} (a timm checkpoint file, or a '
                            f'timm model name such as mobilenetv4_conv_small.e2400_r224_in1k)')


def backbone_state(source, variant):
    """Our MobileNetV4 state dict (keys stages.*) for `variant` from a timm source, fully checked."""
    with torch.device('meta'):
        skeleton = MobileNetV4(variant)
    return convert_timm_state_dict(read_timm_state(source), skeleton)


def load_stage_weights(stage, source):
    """Load one YOLOv5 stage layer (a MobileNetV4Stage) from a timm source and keep timm's BN eps;
    returns the number of tensors loaded."""
    prefix = f'stages.{stage.index}.'
    state = {k[len(prefix):]: v for k, v in backbone_state(source, stage.variant).items() if k.startswith(prefix)}
    stage.load_state_dict(state, strict=True)
    for m in stage.modules():
        if isinstance(m, FOLDABLE_NORMS):
            m.eps = TIMM_BN_EPS
    return len(state)


@torch.no_grad()
def rescale_bn_for_eps(module, eps):
    """Change every BN's eps to `eps` keeping its eval-mode output: gamma *= sqrt((var+eps)/(var+old))."""
    for m in module.modules():
        if isinstance(m, FOLDABLE_NORMS) and m.eps != eps:
            var = m.running_var.double()
            m.weight.mul_(torch.sqrt((var + eps) / (var + m.eps)).to(m.weight.dtype))
            m.eps = eps
