"""Our features equal timm's for the same weights, through the key mapping the weight loader uses.

The hybrids are compared twice: with perturbed weights, under which Mobile MQA's attention is near
uniform (an attention bug barely shows), and with peaked attention (helpers.peak_attention_), each
attention branch against its own size; a negative control shows that the bound sees a wrong scale.
"""
import pytest
import torch

from helpers import (
    INPUT_DEPENDENCE,
    drop_residuals_,
    max_abs_diff,
    peak_attention_,
    perturb_,
    relative_error,
    require,
    residual_branches,
)
from yolov5_mnv4 import VARIANTS, MobileNetV4
from yolov5_mnv4.attention import MobileMultiQueryAttention
from yolov5_mnv4.timm_weights import WeightMappingError, convert_timm_state_dict, timm_key_map

timm = require('timm')

BRANCH_BOUND = 1e-4  # max abs error of each attention branch over its own max (measured ~1e-6)
FEATURES_BOUND = 1e-5  # max abs error of the /4../32 features (measured ~1e-6)
CONTROL_MARGIN = 10  # a control (a deliberate bug) is off by this many times the bound
CASES = [(v, 'perturbed') for v in VARIANTS] + [(v, 'peaked') for v in VARIANTS if v.startswith('hybrid')]


def timm_attention_block(module):
    return type(module).__name__ == 'MobileAttention'  # timm's Mobile MQA block, norm to residual


def timm_pair(name, weights):
    """(timm model, our model with the same weights, input); with `weights='peaked'` our attention is
    peaked on the input and the peaked weights copied back into timm's model."""
    reference = perturb_(timm.create_model(f'mobilenetv4_{name}', pretrained=False), seed=3).eval()
    ours = MobileNetV4(name).eval()
    ours.load_state_dict(convert_timm_state_dict(reference.state_dict(), ours))
    x = torch.randn(1, 3, 320, 256, generator=torch.Generator().manual_seed(0))
    if weights == 'peaked':
        peak_attention_(ours, x)
        state = ours.state_dict()
        reference.load_state_dict({theirs: state[key] for key, theirs in timm_key_map(ours).items()}, strict=False)
    return reference, ours, x


@pytest.fixture(scope='module', params=CASES, ids=[f'{v}-{w}' for v, w in CASES])
def pair(request):
    """(variant, timm model, our model with the same weights, input)."""
    name, weights = request.param
    return (name, *timm_pair(name, weights))


def compare(reference, ours, x):
    """(max abs difference of the /4../32 features, worst attention branch error, branch count)."""
    expected, theirs = residual_branches(
        lambda t: reference.forward_intermediates(t, indices=[1, 2, 3, 4], extra_blocks=True, intermediates_only=True),
        x, timm_attention_block, modules=reference)
    got, mine = residual_branches(ours, x, lambda m: isinstance(m, MobileMultiQueryAttention))
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
    assert len(mine) == len(theirs)
    branch = max((relative_error(a.numpy(), b.numpy()) for a, b in zip(mine, theirs)), default=0.0)
    return max_abs_diff(expected, got), branch, len(mine)


def test_features_equal_timm(pair, record, request):
    name, reference, ours, x = pair
    features, branch, blocks = compare(reference, ours, x)
    with torch.no_grad():  # the features of another input: the bound means something only if they move far more
        change = max_abs_diff(ours(x), ours(torch.roll(x, shifts=(37, 53), dims=(2, 3))))
    print(f'{name}: features max abs {features:.2g}, attention branches ({blocks}) worst relative {branch:.2g}; '
          f'features move {change:.2g} with the input')
    assert change >= INPUT_DEPENDENCE * FEATURES_BOUND
    assert features < FEATURES_BOUND
    assert branch <= BRANCH_BOUND
    record(f'stage/timm/{request.node.callspec.id}', features=features, branch=branch, features_bound=FEATURES_BOUND,
           branch_bound=BRANCH_BOUND)


def test_features_bound_rejects_a_dropped_residual(record):
    """Negative control for the features bound: our Conv-S without its last UIB residual, against timm's."""
    reference, ours, x = timm_pair('conv_small', 'perturbed')
    drop_residuals_(ours, -1)
    features, _, _ = compare(reference, ours, x)
    print(f'last residual dropped: features max abs {features:.2g}')
    assert features >= CONTROL_MARGIN * FEATURES_BOUND
    record('control/timm features/last-residual', features=features, features_bound=FEATURES_BOUND,
           variant='conv_small (perturbed)', fails=['features'])


def test_bound_rejects_a_doubled_attention_scale(monkeypatch, record):
    """Negative control: with peaked attention, a logit scale of 2/sqrt(d) fails the branch bound."""
    reference, ours, x = timm_pair('hybrid_medium', 'peaked')
    for block in ours.modules():
        if isinstance(block, MobileMultiQueryAttention):
            monkeypatch.setattr(block, 'scale', block.scale * 2)
    features, branch, _ = compare(reference, ours, x)
    print(f'doubled scale: features max abs {features:.2g}, worst attention branch {branch:.2g}')
    record('control/timm attention branch/doubled-scale', branch=branch, branch_bound=BRANCH_BOUND,
           variant='hybrid_medium (peaked)')
    assert branch > BRANCH_BOUND


def test_classifier_equals_timm_and_every_key_is_mapped():
    for name in VARIANTS:
        reference = perturb_(timm.create_model(f'mobilenetv4_{name}', pretrained=False), seed=3).eval()
        ours = MobileNetV4(name, num_classes=1000).eval()
        mapping = timm_key_map(ours)
        assert sorted(mapping.values()) == sorted(reference.state_dict())
        ours.load_state_dict(convert_timm_state_dict(reference.state_dict(), ours, strict_head=True))
        x = torch.randn(2, 3, 128, 128)
        with torch.no_grad():
            assert (reference(x) - ours.classify(x)).abs().max().item() < 1e-4, name


def test_other_variant_is_refused_naming_both():
    reference = timm.create_model('mobilenetv4_conv_medium', pretrained=False)
    with pytest.raises(WeightMappingError, match=r'hybrid_medium.*looks like conv_medium'):
        convert_timm_state_dict(reference.state_dict(), MobileNetV4('hybrid_medium'))


@pytest.mark.parametrize('name', ['hybrid_medium', 'hybrid_large'])
def test_a_fresh_hybrid_carries_its_signal_in_train_mode(name):
    """From scratch, every returned stage's output has an O(1) scale (timm's layer scale init, 1e-5 on
    every block, gave 1.4e-5 to 3.7e-5 from /8 on: docs/results/hybrid_init.md); the residual
    branches and the attention keep timm's 1e-5; loading timm's weights replaces all of them (the
    equality tests above)."""
    from yolov5_mnv4.attention import MobileMultiQueryAttention
    from yolov5_mnv4.blocks import UniversalInvertedBottleneck
    from yolov5_mnv4.layers import LayerScale
    torch.manual_seed(0)
    model = MobileNetV4(name).train()
    x = torch.randn(8, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    stds = []
    with torch.no_grad():
        for stage in model.stages:
            x = stage(x)
            stds.append(float(x.std()))
    print(f'{name}: stage output std {[f"{s:.2g}" for s in stds]}')
    assert all(0.3 < s < 10 for s in stds), stds
    for m in model.modules():
        if isinstance(m, (UniversalInvertedBottleneck, MobileMultiQueryAttention)):
            assert isinstance(m.layer_scale, LayerScale)
            residual = getattr(m, 'has_residual', True)  # attention always adds to its input
            assert torch.all(m.layer_scale.gamma == (1e-5 if residual else 1.0)), m
