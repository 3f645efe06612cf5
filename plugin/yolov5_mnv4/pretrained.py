"""ImageNet-pretrained backbones from timm checkpoints.

A source is a timm state dict saved as `.safetensors`, `.pth`/`.pt` or `.bin`, or (with the network
and timm installed) a timm model name such as `mobilenetv4_conv_small.e2400_r224_in1k` (`timm:` in
front is optional). Every backbone tensor is mapped through `timm_weights.convert_timm_state_dict`:
a tensor left over on either side, or a checkpoint of another variant, is an error.
"""
import functools
import pickle
import re
from pathlib import Path

import torch

from .layers import FOLDABLE_NORMS
from .model import MobileNetV4
from .timm_weights import TIMM_WEIGHTS, WeightMappingError, convert_timm_state_dict

TIMM_BN_EPS = 1e-5  # timm trains MobileNetV4 with PyTorch's default BatchNorm eps
TORCH_FORMATS = ('.pth', '.pt', '.bin')
FORMATS = ('.safetensors', *TORCH_FORMATS)


class CheckpointReadError(ValueError):
    """A pretrained source file exists but is not a readable state dict; the message is one line."""

    def __init__(self, path, reason):
        super().__init__(f'could not read {path} as a timm MobileNetV4 state dict: {reason}')


def _torch_load_reason(err):
    """One line for why torch.load(weights_only=True) refused a file (its own message is a page)."""
    text = str(err)
    found = re.search(r'Unsupported global: GLOBAL ([\w.]+)', text)
    if found:
        return (f'it pickles Python objects ({found.group(1)}), which are not loaded from a file a config '
                f"names (weights_only); save the model's state_dict() instead")
    unpickler = re.search(r'WeightsUnpickler error:\s*([^\n]+)', text)
    first = unpickler.group(1) if unpickler else (text.strip().splitlines() or [''])[0]
    first = first.split('. ')[0].rstrip('.')  # torch's messages go on for sentences
    return f'not a PyTorch checkpoint (torch.load: {type(err).__name__}: {first})'.replace(': )', ')')


@functools.lru_cache(maxsize=4)
def _read_file(path, mtime):
    suffix = path.suffix.lower()
    if suffix == '.safetensors':
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # installed with the plugin; gone only from a hand-made environment
            raise ImportError(f'reading {path} needs the safetensors package: pip install safetensors') from err
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError (and OSError for I/O)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointReadError(path, f'safetensors: {first}') from err
    elif suffix in TORCH_FORMATS:
        try:  # never weights_only=False: the file is named in a YAML, it must not run code
            state = torch.load(str(path), map_location='cpu', weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, IndexError, KeyError, AttributeError,
                TypeError) as err:
            raise CheckpointReadError(path, _torch_load_reason(err)) from err
        state = state.get('state_dict', state) if isinstance(state, dict) else state
    else:
        raise ValueError(f'unsupported checkpoint format {path.name!r}: use .safetensors, .pth, .pt or .bin')
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointReadError(path, f'it holds a {type(state).__name__}, not a dict of tensors')
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
    if name in TIMM_WEIGHTS:  # a variant name: timm's ImageNet weights for it
        name = TIMM_WEIGHTS[name].name
    if name.startswith('mobilenetv4_') and path.suffix.lower() not in FORMATS:
        return _from_timm(name)
    raise FileNotFoundError(f'pretrained backbone weights not found: {text} (a timm checkpoint file, or a '
                            f'timm model name such as mobilenetv4_conv_small.e2400_r224_in1k, or a variant name for its '
                            f'ImageNet weights: {", ".join(TIMM_WEIGHTS)})')


def backbone_state(source, variant):
    """Our MobileNetV4 state dict (keys stages.*) for `variant` from a timm source, fully checked."""
    with torch.device('meta'):
        skeleton = MobileNetV4(variant)
    state = read_timm_state(source)
    if 'conv_stem.weight' not in state and not any(k.startswith('blocks.') for k in state):
        names = ', '.join(list(state)[:3]) + (', ...' if len(state) > 3 else '')
        raise WeightMappingError(f'{source} is not a MobileNetV4 checkpoint: none of its {len(state)} tensors '
                                 f'({names}) has a timm MobileNetV4 name (conv_stem.weight, blocks.*)')
    return convert_timm_state_dict(state, skeleton)


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
