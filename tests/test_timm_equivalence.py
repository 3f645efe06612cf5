"""Our features equal timm's for the same weights, through the key mapping the weight loader uses."""
import pytest
import torch

from helpers import max_abs_diff, perturb_
from yolov5_mnv4 import VARIANTS, MobileNetV4
from yolov5_mnv4.timm_weights import WeightMappingError, convert_timm_state_dict, timm_key_map

timm = pytest.importorskip('timm', reason='timm is in the test extra (pip install -e .[test])')


@pytest.fixture(scope='module', params=list(VARIANTS))
def pair(request):
    reference = perturb_(timm.create_model(f'mobilenetv4_{request.param}', pretrained=False), seed=3).eval()
    return request.param, reference


def test_features_equal_timm(pair):
    name, reference = pair
    ours = MobileNetV4(name).eval()
    ours.load_state_dict(convert_timm_state_dict(reference.state_dict(), ours))
    x = torch.randn(1, 3, 320, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=[1, 2, 3, 4], extra_blocks=True,
                                                   intermediates_only=True)
        got = ours(x)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
    assert max_abs_diff(expected, got) < 1e-5


def test_classifier_equals_timm_and_every_key_is_mapped(pair):
    name, reference = pair
    ours = MobileNetV4(name, num_classes=1000).eval()
    mapping = timm_key_map(ours)
    assert sorted(mapping.values()) == sorted(reference.state_dict())
    ours.load_state_dict(convert_timm_state_dict(reference.state_dict(), ours, strict_head=True))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert (reference(x) - ours.classify(x)).abs().max().item() < 1e-4


def test_other_variant_is_refused_naming_both():
    reference = timm.create_model('mobilenetv4_conv_medium', pretrained=False)
    with pytest.raises(WeightMappingError, match=r'hybrid_medium.*looks like conv_medium'):
        convert_timm_state_dict(reference.state_dict(), MobileNetV4('hybrid_medium'))
