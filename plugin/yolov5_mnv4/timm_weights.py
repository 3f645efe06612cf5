"""Key mapping between timm's `mobilenetv4_*` state dicts and ours.

timm names: conv_stem/bn1 (stem), blocks.{0-3}.{j} (stages /4../32), blocks.4.0 (the 960 conv),
conv_head/norm_head/classifier (head). Ours: stages.{0-4}.{j}, head.{conv,pre_logits,classifier}.
Inside blocks only the plain conv-BN block and FusedIB are named differently.
"""
import re
from dataclasses import dataclass

from .attention import MobileMultiQueryAttention
from .blocks import FusedInvertedBottleneck
from .layers import ConvBNAct
from .specs import VARIANTS


@dataclass(frozen=True)
class TimmWeights:
    """timm's ImageNet-1k weights for one variant (timm's model cards): the model name that timm and
    `--timm` take, its training resolution and top-1, and our backbone's parameter count (without
    timm's classifier head, which the detector does not use)."""
    variant: str
    tag: str
    resolution: int
    top1: float
    backbone_params: int

    @property
    def name(self):
        return f'mobilenetv4_{self.variant}.{self.tag}'


TIMM_WEIGHTS = {w.variant: w for w in (
    TimmWeights('conv_small', 'e2400_r224_in1k', 224, 73.8, 1_136_864),
    TimmWeights('conv_medium', 'e500_r256_in1k', 256, 79.9, 6_955_472),
    TimmWeights('conv_large', 'e600_r384_in1k', 384, 83.0, 29_585_064),
    TimmWeights('hybrid_medium', 'e200_r256_in12k_ft_in1k', 256, 82.4, 8_314_608),
    TimmWeights('hybrid_large', 'ix_e600_r384_in1k', 384, 84.0, 34_758_824),
)}

# (our sub-key prefix, timm sub-key prefix) per block type; UIB uses timm's names already.
_BLOCK_RENAMES = {
    ConvBNAct: (('conv.', 'conv.'), ('bn.', 'bn1.')),
    FusedInvertedBottleneck: (('expand.conv.', 'conv_exp.'), ('expand.bn.', 'bn1.'),
                              ('project.conv.', 'conv_pwl.'), ('project.bn.', 'bn2.')),
    MobileMultiQueryAttention: (('query.', 'attn.query.proj.'), ('key_down.conv.', 'attn.key.down_conv.'),
                                ('key_down.bn.', 'attn.key.norm.'), ('key.', 'attn.key.proj.'),
                                ('value_down.conv.', 'attn.value.down_conv.'),
                                ('value_down.bn.', 'attn.value.norm.'), ('value.', 'attn.value.proj.'),
                                ('output.', 'attn.output.proj.')),
}
_HEAD_RENAMES = (('head.conv.conv.', 'blocks.4.0.conv.'), ('head.conv.bn.', 'blocks.4.0.bn1.'),
                 ('head.pre_logits.conv.', 'conv_head.'), ('head.pre_logits.bn.', 'norm_head.'),
                 ('head.classifier.', 'classifier.'))


def _rename(key, renames):
    for ours, theirs in renames:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def timm_key_map(model):
    """{our state_dict key: timm state_dict key} for every tensor of a `MobileNetV4`."""
    mapping = {}
    for s, stage in enumerate(model.stages):
        for j, block in enumerate(stage):
            prefix = 'stages.{}.{}.'.format(s, j)
            renames = _BLOCK_RENAMES.get(type(block), ())
            for sub in block.state_dict():
                timm_sub = _rename(sub, renames)
                if s == 0:  # the stem is one conv-BN block named conv_stem / bn1 at the top level
                    mapping[prefix + sub] = timm_sub.replace('conv.', 'conv_stem.', 1)
                else:
                    mapping[prefix + sub] = 'blocks.{}.{}.{}'.format(s - 1, j, timm_sub)
    if model.head is not None:
        for sub in model.head.state_dict():
            key = 'head.' + sub
            mapping[key] = _rename(key, _HEAD_RENAMES)
    return mapping


class WeightMappingError(ValueError):
    """A timm checkpoint does not fit our model exactly."""


_TIMM_BACKBONE_KEY = re.compile(r'^(conv_stem|bn1)\.|^blocks\.[0-3]\.')


def convert_timm_state_dict(timm_state, model, strict_head=False):
    """Return a state dict for `model` (a MobileNetV4) from a timm MobileNetV4 state dict.

    Every backbone tensor on both sides must be mapped with equal shapes; leftovers are an error that
    names them. timm head tensors (960 conv, 1280 conv, classifier) are dropped when `model` has no
    head, unless `strict_head`.
    """
    mapping = timm_key_map(model)
    expected = model.state_dict()
    missing = [theirs for theirs in mapping.values() if theirs not in timm_state]
    wanted = set(mapping.values())
    unused = [k for k in timm_state if k not in wanted and (strict_head or _TIMM_BACKBONE_KEY.match(k))]
    if missing or unused:
        raise WeightMappingError(_mismatch_message(model, timm_state, missing, unused))
    converted, bad_shapes = {}, []
    for ours, theirs in mapping.items():
        tensor = timm_state[theirs]
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            bad_shapes.append(f'{theirs} {tuple(tensor.shape)} -> {ours} {tuple(expected[ours].shape)}')
        converted[ours] = tensor
    if bad_shapes:
        raise WeightMappingError(_mismatch_message(model, timm_state, [], [], bad_shapes))
    return converted


def _mismatch_message(model, timm_state, missing, unused, bad_shapes=()):
    guess = guess_variant(timm_state)
    lines = [f'the checkpoint does not fit MobileNetV4 {model.variant.name}'
             + (f' (it looks like {guess})' if guess and guess != model.variant.name else '') + ':']
    for title, keys in (('missing from the checkpoint', missing), ('left over in the checkpoint', unused),
                        ('shape mismatch', bad_shapes)):
        if keys:
            lines.append(f'  {title} ({len(keys)}): ' + ', '.join(keys[:8]) + (' ...' if len(keys) > 8 else ''))
    return '\n'.join(lines)


def guess_variant(timm_state):
    """Name the MobileNetV4 variant a timm state dict was saved from (stem width, blocks per stage)."""
    stem = timm_state.get('conv_stem.weight')
    counts = [0, 0, 0, 0]
    for key in timm_state:
        found = re.match(r'^blocks\.([0-3])\.(\d+)\.', key)
        if found:
            s, j = int(found.group(1)), int(found.group(2))
            counts[s] = max(counts[s], j + 1)
    if stem is None:
        return None
    layout = (stem.shape[0], tuple(counts))
    for name, variant in VARIANTS.items():
        if (variant.stages[0][0].out, tuple(len(stage) for stage in variant.stages[1:])) == layout:
            return name
    return None
