"""MobileNetV4 core: exact architecture, fusion, export and error handling."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as nn

from helpers import (
    BACKBONE_PARAMS,
    INPUT_DEPENDENCE,
    calibrate_batchnorm_,
    fusion_and_wrong_fold,
    max_abs_diff,
    peak_attention_,
    perturb_,
    real_images,
    relative_error,
    require,
    residual_branches,
)
from yolov5_mnv4 import VARIANTS, MobileNetV4
from yolov5_mnv4.attention import MobileMultiQueryAttention
from yolov5_mnv4.blocks import UniversalInvertedBottleneck
from yolov5_mnv4.export.onnx import onnx_file
from yolov5_mnv4.layers import DropPath, LayerScale

# Reference counts: timm 1.0.31's mobilenetv4_* models without their classifier, equal to the TF reference's.
# An attention branch (block output minus input) of a peaked block against another form of it, over its own
# size; a control (the same block with uniform attention) must be off by CONTROL_MARGIN times that.
ATTENTION_BOUND = 1e-5
CONTROL_MARGIN = 100
CLASSIFIER_PARAMS = {'conv_small': 3_774_024, 'conv_medium': 9_715_512, 'conv_large': 32_590_864,
                     'hybrid_medium': 11_074_648, 'hybrid_large': 37_764_624}
TAP_CHANNELS = {'conv_small': [32, 64, 96, 128], 'conv_medium': [48, 80, 160, 256],
                'conv_large': [48, 96, 192, 512], 'hybrid_medium': [48, 80, 160, 256],
                'hybrid_large': [48, 96, 192, 512]}
# (residual blocks, UIBs, MQA blocks) from the reference's residual-count table.
RESIDUALS = {'conv_small': (10, 12, 0), 'conv_medium': (18, 21, 0), 'conv_large': (23, 26, 0),
             'hybrid_medium': (27, 22, 8), 'hybrid_large': (32, 27, 8)}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope='module', params=list(VARIANTS))
def variant(request):
    return request.param


def test_parameter_counts_equal_reference(variant):
    assert n_params(MobileNetV4(variant)) == BACKBONE_PARAMS[variant]
    assert n_params(MobileNetV4(variant, num_classes=1000)) == CLASSIFIER_PARAMS[variant]


def test_taps_have_reference_channels_and_strides(variant):
    model = MobileNetV4(variant).eval()
    with torch.no_grad():
        taps = model(torch.zeros(1, 3, 128, 96))
    assert [t.shape[1] for t in taps] == TAP_CHANNELS[variant] == model.out_channels
    assert [(t.shape[2], t.shape[3]) for t in taps] == [(128 // s, 96 // s) for s in (4, 8, 16, 32)]


def test_residuals_layer_scale_and_activation(variant):
    model = MobileNetV4(variant)
    uibs = [m for m in model.modules() if isinstance(m, UniversalInvertedBottleneck)]
    mqas = [m for m in model.modules() if isinstance(m, MobileMultiQueryAttention)]
    residual = sum(m.has_residual for m in uibs) + len(mqas)
    assert (residual, len(uibs), len(mqas)) == RESIDUALS[variant]
    scales = [m for m in model.modules() if isinstance(m, LayerScale)]
    if variant.startswith('hybrid'):
        assert len(scales) == len(uibs) + len(mqas)
        # timm's 1e-5 on every residual branch; 1.0 where a UIB has no residual (test_timm_equivalence)
        on_branches = [m.layer_scale for m in uibs if m.has_residual] + [m.layer_scale for m in mqas]
        assert all(torch.all(s.gamma == 1e-5) for s in on_branches)
        assert all(torch.all(m.layer_scale.gamma == 1.0) for m in uibs if not m.has_residual)
    else:
        assert not scales
    acts = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU, nn.ReLU6, nn.SiLU))}
    assert acts == ({nn.GELU} if variant == 'hybrid_large' else {nn.ReLU})


def test_uib_residual_is_the_identity_when_the_branch_is_zero():
    block = MobileNetV4('conv_small').stages[3][1].eval()  # a stride-1 IB with a residual
    nn.init.zeros_(block.pw_proj.bn.weight)
    nn.init.zeros_(block.pw_proj.bn.bias)
    x = torch.randn(2, 96, 8, 8)
    assert torch.equal(block(x), x)


def test_construction_never_runs_a_forward_pass():
    def refuse(module, inputs):
        raise AssertionError(f'{type(module).__name__} ran a forward pass during construction')

    handle = torch.nn.modules.module.register_module_forward_pre_hook(refuse)
    try:
        for name in VARIANTS:
            MobileNetV4(name, num_classes=10)
    finally:
        handle.remove()


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError) as err:
        MobileNetV4('conv_tiny')
    assert 'conv_tiny' in str(err.value)
    for name in VARIANTS:
        assert name in str(err.value)


def test_wrong_input_channels_says_what_was_expected():
    with pytest.raises(ValueError, match=r'expects an input of shape \(N, 3, H, W\), got \(1, 4, 64, 64\)'):
        MobileNetV4('conv_small')(torch.zeros(1, 4, 64, 64))


def test_fuse_folds_every_foldable_bn_and_keeps_outputs(variant):
    images = real_images(160, 2)  # BatchNorm statistics of real images: perturbed ones alone give constant features
    model = calibrate_batchnorm_(perturb_(MobileNetV4(variant)), images)
    x = images[:1]
    with torch.no_grad():
        before = model(x)
        moved = worst_feature_error(model(images[1:]), before)
        model.fuse()
        after = model(x)
    assert moved >= INPUT_DEPENDENCE * FUSE_BOUND, f'features barely depend on the input ({moved:.2g})'
    assert worst_feature_error(after, before) < FUSE_BOUND
    # Only the input BN of kv-stride-2 attention blocks stays (it feeds zero-padded depthwise convs).
    left = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    strided_mqa = [m for m in model.modules()
                   if isinstance(m, MobileMultiQueryAttention) and not isinstance(m.key_down, nn.Identity)]
    assert len(left) == len(strided_mqa) == {'hybrid_medium': 4, 'hybrid_large': 4}.get(variant, 0)
    assert not any(isinstance(m, LayerScale) for m in model.modules())


FUSE_BOUND = 1e-4  # worst feature map, relative to its largest value


def peaked_hybrid(name, size=160):
    """A hybrid with perturbed weights, BatchNorm statistics of 4 real images and attention peaked on the
    first: its features depend on the image and a wrong query or key shows. Returns (model, images)."""
    x = real_images(size, 4)
    model = calibrate_batchnorm_(perturb_(MobileNetV4(name)), x)
    return peak_attention_(model, x[:1]), x


def worst_feature_error(got, ref):
    return max(relative_error(g, r) for g, r in zip(got, ref))


@pytest.mark.parametrize('name', ['hybrid_medium', 'hybrid_large'])
def test_fuse_keeps_features_with_peaked_attention(name):
    """Every fold, the attention-input BatchNorm into query, key and value included, under attention as
    peaked as a trained model's; a fold that drops the query's shift fails the same bound (it moved the
    features of the perturbed-only model with random input, which test_fuse_folds_every_foldable_bn_...
    uses, by 3e-7 only)."""
    model, x = peaked_hybrid(name)
    unfused, error, control = fusion_and_wrong_fold(model, x, worst_feature_error)
    between_images = worst_feature_error(unfused[-1][1:2], unfused[-1][:1])
    print(f'{name}: fused {error:.2g} (bound {FUSE_BOUND:g}); query folded without shift {control:.2g}; '
          f'/32 features move {between_images:.2g} between two images')
    assert between_images > 0.1
    assert error < FUSE_BOUND
    assert control > 10 * FUSE_BOUND


def test_stochastic_depth_is_off_by_default_and_only_on_residual_branches():
    assert not any(isinstance(m, DropPath) for m in MobileNetV4('hybrid_medium').modules())
    model = MobileNetV4('hybrid_medium', drop_path_rate=0.1)
    for m in model.modules():
        if isinstance(m, UniversalInvertedBottleneck) and not m.has_residual:
            assert not isinstance(m.drop_path, DropPath)
    rates = [m.rate for m in model.modules() if isinstance(m, DropPath)]
    assert rates == sorted(rates) and 0 < max(rates) < 0.1
    model.train()
    x = torch.randn(8, 3, 64, 64)
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)


def test_classifier_head_gives_logits():
    model = MobileNetV4('conv_small', num_classes=7).eval()
    assert model.classify(torch.zeros(2, 3, 96, 96)).shape == (2, 7)
    with pytest.raises(RuntimeError, match='without a classification head'):
        MobileNetV4('conv_small').classify(torch.zeros(1, 3, 64, 64))


@pytest.mark.parametrize('name', ['conv_small', 'hybrid_medium'])
def test_pickle_deepcopy_and_trace(name):
    model = perturb_(MobileNetV4(name)).eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        ref = model(x)
        buf = io.BytesIO()
        torch.save(model, buf)
        buf.seek(0)
        for clone in (torch.load(buf, weights_only=False), copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert max_abs_diff(ref, clone(x)) == 0
        traced = torch.jit.trace(model.fuse(), x, strict=False)
        assert max_abs_diff(ref, traced(x)) < 1e-4


class WithAttentionBranches(nn.Module):
    """A MobileNetV4 whose outputs are its /4../32 features and then every attention branch (y - x),
    so that an ONNX file shows each branch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out, branches = residual_branches(self.model, x, lambda m: isinstance(m, MobileMultiQueryAttention))
        return (*out, *branches)


def onnx_errors(model, x, path):
    """(worst error of a feature map, worst of an attention branch, each over its own largest value):
    ONNX Runtime running torch.onnx.export's file against eager PyTorch."""
    import onnxruntime as ort
    wrapped = WithAttentionBranches(model).eval()  # export restores the mode it finds, on every child
    onnx_file(wrapped, x, path, opset=12)  # the package's ONNX export (TorchScript-based, any torch >= 2.1)
    outputs = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'images': x.numpy()})
    with torch.no_grad():
        ref = wrapped(x)
    features = worst_feature_error([torch.from_numpy(o) for o in outputs[:4]], ref[:4])
    branch = max((relative_error(o, r.numpy()) for o, r in zip(outputs[4:], ref[4:])), default=0.0)
    return features, branch


# ONNX Runtime against eager, each feature map and attention branch over its own size, on backbones with
# BatchNorm statistics of real images: features up to 2.6e-5; branches up to 1.3e-4 (Hybrid-M, peaked: the
# explicit softmax of the export against eager's fused kernel); the broken attentions of the controls: 1e-2
# and more.
ONNX_BOUNDS = (1e-4, 1e-3)
ONNX_CASES = [('conv_small', 'perturbed'), ('hybrid_medium', 'perturbed'), ('hybrid_medium', 'peaked'),
              ('hybrid_large', 'peaked')]


@pytest.mark.parametrize('name, weights', ONNX_CASES, ids=[f'{n}-{w}' for n, w in ONNX_CASES])
def test_onnx_export_matches_eager(name, weights, tmp_path, record):
    """The exported (explicit) attention against eager's fused kernel, branch by branch."""
    require('onnxruntime')
    require('onnx')
    images = real_images(160, 2)  # BatchNorm statistics of real images: perturbed ones alone give constant features
    model = calibrate_batchnorm_(perturb_(MobileNetV4(name)), images)
    x = images[:1]
    if weights == 'peaked':
        peak_attention_(model, x)
    model.fuse()
    with torch.no_grad():
        moved = worst_feature_error(model(images[1:]), model(x))
    features, branch = onnx_errors(model, x, tmp_path / f'{name}.onnx')
    print(f'{name} ({weights}): worst feature map {features:.2g}, worst attention branch {branch:.2g} (each over its '
          f'own size); features move {moved:.2g} with the input')
    assert moved >= INPUT_DEPENDENCE * ONNX_BOUNDS[0], f'features barely depend on the input ({moved:.2g})'
    assert features < ONNX_BOUNDS[0] and branch <= ONNX_BOUNDS[1]
    record(f'stage/ONNX/{name}-{weights}', features=features, branch=branch, features_bound=ONNX_BOUNDS[0],
           branch_bound=ONNX_BOUNDS[1])


@pytest.mark.parametrize('bug', ['no-scale', 'mean-of-values'])
def test_onnx_bounds_reject_a_broken_explicit_attention(bug, monkeypatch, tmp_path, record):
    """Negative controls: a wrong explicit attention (what exports run) fails the ONNX test's bounds."""
    require('onnxruntime')
    from yolov5_mnv4 import attention
    explicit = attention.attend_explicit
    broken = {'no-scale': lambda q, k, v, scale: explicit(q, k, v, 1.0),
              'mean-of-values': lambda q, k, v, scale: v.mean(dim=2, keepdim=True).expand(*q.shape[:3], v.shape[-1])}
    images = real_images(160, 1)
    model = peak_attention_(calibrate_batchnorm_(perturb_(MobileNetV4('hybrid_medium')), images), images)
    monkeypatch.setattr(attention, 'attend_explicit', broken[bug])
    features, branch = onnx_errors(model.fuse(), images, tmp_path / 'broken.onnx')
    print(f'{bug}: worst feature map {features:.2g}, worst attention branch {branch:.2g}')
    assert branch > CONTROL_MARGIN * ONNX_BOUNDS[1]
    record(f'control/ONNX attention branch/{bug}', branch=branch, branch_bound=ONNX_BOUNDS[1], variant='hybrid_medium (peaked)')


def test_channels_last_execution_changes_no_value():
    model = perturb_(MobileNetV4('hybrid_medium')).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        fast = model(x)
        plain = []
        y = x
        for stage in model.stages:  # the same blocks, fed NCHW all the way
            y = stage(y)
            plain.append(y)
    assert fast[0].is_contiguous(memory_format=torch.channels_last)
    assert max_abs_diff(fast, plain[1:]) < 1e-5


# --- training paths: SyncBatchNorm, autocast, backward, SDPA shape, export form ----------

def backbone_norms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_fuse_folds_syncbatchnorm_and_its_layer_scales():
    """train.py --sync-bn turns every BatchNorm2d into SyncBatchNorm: fuse must fold those too, and a
    layer scale only into a conv whose norm it folded (else the scale lands before the norm)."""
    model = perturb_(MobileNetV4('hybrid_medium')).eval()
    x = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        before = model(x)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
        assert {type(m) for m in backbone_norms(synced)} == {nn.SyncBatchNorm}
        synced.fuse()
        after = synced(x)
    assert len(backbone_norms(synced)) == 4  # only the kv-stride-2 attention inputs stay
    assert not any(isinstance(m, LayerScale) for m in synced.modules())
    for a, b in zip(before, after):
        assert (a - b).abs().max().item() < 1e-4 * max(1.0, a.abs().max().item())


def test_a_layer_scale_stays_when_its_norm_cannot_fold():
    block = perturb_(UniversalInvertedBottleneck(32, 32, start_kernel=3, mid_kernel=3, stride=1, expand=2.0,
                                                 act_layer=nn.ReLU, layer_scale=1e-5)).eval()
    block.pw_proj.bn = nn.GroupNorm(4, 32)  # a norm that is not a BatchNorm: left as it is
    x = torch.randn(1, 32, 16, 16)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    assert isinstance(block.layer_scale, LayerScale) and isinstance(block.pw_proj.bn, nn.GroupNorm)
    assert (before - after).abs().max().item() < 1e-5


def test_fused_parameters_need_no_gradients():
    model = MobileNetV4('hybrid_medium').fuse()
    assert not any(p.requires_grad for p in model.parameters())


def test_bf16_autocast_forward_and_backward_keep_the_autocast_dtype(variant):
    """Under autocast every stage output is in the autocast dtype (a float32 layer scale used to
    promote the residual stream), and backward reaches every parameter with finite gradients."""
    model = MobileNetV4(variant).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        taps = model(torch.randn(2, 3, 96, 96))
        assert [t.dtype for t in taps] == [torch.bfloat16] * 4
        loss = sum(t.float().square().mean() for t in taps)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_hybrid_backward_equals_the_explicit_attention(monkeypatch):
    """Gradients through the fused SDPA path equal those through plain matmuls, for every parameter.

    In float64, where CPU SDPA runs the same fused flash kernel forward and backward: in float32 the
    train-mode BatchNorms' backward cancels most of each gradient, so rounding decides the rest
    (measured 5.9e-3 of the gradient norm apart on a 2-vCPU AMD EPYC with AVX-512, under 1e-4 on
    others), where float64 agrees to 2e-14."""
    from yolov5_mnv4 import attention
    torch.manual_seed(0)
    model = perturb_(MobileNetV4('hybrid_medium')).train().double()
    x = torch.randn(2, 3, 64, 96).double()

    def grads():
        model.zero_grad()
        sum(t.square().mean() for t in model(x)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fused = grads()
    monkeypatch.setattr(attention, 'attend', attention.attend_explicit)
    explicit = grads()
    attn = [n for n in fused if '.query.' in n or '.key.' in n or '.value.' in n]
    assert attn and all(fused[n].abs().max() > 0 for n in attn)  # the attention parameters do learn
    a, b = (torch.cat([g[n].flatten() for n in fused]) for g in (fused, explicit))
    assert (a - b).norm() <= 1e-10 * a.norm()
    for n in attn:
        assert (fused[n] - explicit[n]).abs().max() <= 1e-10 * fused[n].abs().max(), n


def test_sdpa_sees_one_head_on_both_sides_and_equals_the_explicit_form(monkeypatch):
    """The shared key/value head lets the query heads fold into the query length: SDPA then gets the
    same head count on q, k and v, a shape CUDA's flash and memory-efficient kernels accept."""
    from yolov5_mnv4 import attention
    block = perturb_(MobileMultiQueryAttention(64, heads=4, key_dim=16, value_dim=16, kv_stride=2)).eval()
    shapes, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        shapes.append((q.shape, k.shape, v.shape))
        return sdpa(q, k, v, **kwargs)

    x = torch.randn(2, 64, 12, 10)
    peak_attention_(block, x)  # near-uniform attention would hide a wrong head layout under any bound
    monkeypatch.setattr(attention.F, 'scaled_dot_product_attention', spy)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)  # as v7.0's train.py sets it
        with torch.no_grad():
            out = block(x)
            monkeypatch.setattr(attention, 'attend', attention.attend_explicit)
            reference = block(x)
            uniform = copy.deepcopy(block)
            uniform.query.weight.zero_()
            control = uniform(x)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert shapes == [((2, 1, 4 * 120, 16), (2, 1, 30, 16), (2, 1, 30, 16))]
    assert relative_error(out - x, reference - x) < ATTENTION_BOUND  # the attention branch, on its own scale
    assert relative_error(control - x, reference - x) > CONTROL_MARGIN * ATTENTION_BOUND  # control: uniform attention


@pytest.mark.parametrize('dynamo', [False, True], ids=['torchscript-exporter', 'dynamo-exporter'])
def test_onnx_export_takes_the_explicit_attention(monkeypatch, tmp_path, dynamo):
    """Both ONNX exporters get plain matmuls: under the dynamo one (torch's default since 2.9, used by
    YOLOv5's export.py) torch.jit.is_tracing() is False, so the export flag is checked as well."""
    require('onnx')
    from yolov5_mnv4 import attention
    calls, explicit = [], attention.attend_explicit

    def spy(*args):
        calls.append(1)
        return explicit(*args)

    import inspect
    takes_dynamo = 'dynamo' in inspect.signature(torch.onnx.export).parameters
    if dynamo and not takes_dynamo:
        pytest.skip(f'torch {torch.__version__} has no dynamo ONNX exporter behind dynamo=True (torch >= 2.5)')
    monkeypatch.setattr(attention, 'attend_explicit', spy)
    block = MobileMultiQueryAttention(32, heads=2, key_dim=16, value_dim=16, kv_stride=1).eval()
    torch.onnx.export(block, (torch.randn(1, 32, 8, 8),), str(tmp_path / 'mqa.onnx'), opset_version=18 if dynamo else 12,
                      **({'dynamo': dynamo} if takes_dynamo else {}))
    assert calls


def test_torch_export_takes_the_explicit_attention():
    """torch.export (the route of ExecuTorch and LiteRT's converter) gets plain matmuls, equal to eager."""
    block = perturb_(MobileMultiQueryAttention(32, heads=2, key_dim=16, value_dim=16, kv_stride=2)).eval()
    x = torch.randn(1, 32, 8, 8)
    peak_attention_(block, x)
    program = torch.export.export(block, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == 'call_function'}
    assert not any('scaled_dot_product' in t for t in targets), sorted(targets)
    assert any('softmax' in t for t in targets), sorted(targets)
    with torch.no_grad():
        reference = block(x)
        assert relative_error(program.module()(x) - x, reference - x) < ATTENTION_BOUND
        block.query.weight.zero_()  # control: the program of the block with uniform attention
        control = torch.export.export(block, (x,)).module()(x)
        assert relative_error(control - x, reference - x) > CONTROL_MARGIN * ATTENTION_BOUND


def test_drop_path_schedule_equals_timms():
    timm = require('timm')
    for name in ('conv_small', 'hybrid_medium'):
        ours = MobileNetV4(name, drop_path_rate=0.2)
        theirs = timm.create_model(f'mobilenetv4_{name}', drop_path_rate=0.2)
        our_blocks = [b for stage in ours.stages[1:] for b in stage]
        their_blocks = [b for stage in theirs.blocks[:-1] for b in stage]  # without the final 960 conv
        assert len(our_blocks) == len(their_blocks)
        compared = 0
        for a, b in zip(our_blocks, their_blocks):
            if isinstance(getattr(a, 'drop_path', None), DropPath):
                assert a.drop_path.rate == pytest.approx(b.drop_path.drop_prob, abs=1e-9)
                compared += 1
        assert compared == RESIDUALS[name][0]
    first = next(m for m in MobileNetV4('conv_small', drop_path_rate=0.2).modules() if isinstance(m, DropPath))
    assert first.rate == pytest.approx(0.2 * 5 / 17)  # 0.0588, as timm's builder gives it
