"""Training paths CPU CI does not walk by itself, made checkable on CPU: --freeze with pretrained
weights, --sync-bn then fuse, DDP, the Conv-equality scope and registration, pretrained checkpoints
that outlive the timm file."""
import copy
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import (
    assert_input_dependent,
    calibrate_batchnorm_,
    fusion_and_wrong_fold,
    output_errors,
    peak_attention_,
    perturb_,
    real_images,
    require,
    run_python,
)
from yolov5_mnv4.hosts.yolov5 import MobileNetV4Stage

REPO = Path(__file__).resolve().parents[1]
PARITY_BOUND = 1e-4  # boxes relative to the largest coordinate, scores absolute (helpers.output_errors)
CONV_S, HYBRID_M = REPO / 'models' / 'yolov5-mnv4-conv-s.yaml', REPO / 'models' / 'yolov5-mnv4-hybrid-m.yaml'


def taps(model, x):
    out = []
    for stage in model.model[:5]:
        x = stage(x)
        out.append(x)
    return out[2:]  # the /8, /16, /32 the head reads


# --- fuse ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('sync_bn', [False, True], ids=['batchnorm', 'syncbatchnorm'])
@pytest.mark.parametrize('config', [CONV_S, HYBRID_M], ids=lambda p: p.stem)
def test_yolov5_fuse_keeps_backbone_taps_and_outputs(yolo, config, sync_bn):
    """model.fuse() (YOLOv5's, wrapped) keeps the taps to 1e-4 of their scale (measured up to 1.3e-5 with
    BatchNorm statistics of real images): a fold that drops a BN shift or puts a layer scale before its
    norm moves them by far more. --sync-bn models too."""
    x = real_images(128, 4)
    model = calibrate_batchnorm_(perturb_(yolo.DetectionModel(str(config))), x)
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).eval()
    x = x[:2, :, :, 16:112]  # two images, 128 x 96
    with torch.no_grad():
        before, out_before = taps(model, x), model(x)[0]
    assert_input_dependent(out_before, PARITY_BOUND, config.stem)
    with torch.no_grad():
        model.fuse()
        after, out_after = taps(model, x), model(x)[0]
    for a, b in zip(before, after):
        assert (a - b).abs().max().item() < 1e-4 * a.abs().max().item()
    assert max(output_errors(out_after, out_before)) < PARITY_BOUND
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == (4 if config == HYBRID_M else 0)  # kv-stride-2 attention inputs only
    # Fused layers need no gradients (ours and YOLOv5's fused Convs); only Detect's unfused convs do.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(f'model.{len(model.model) - 1}.') for n in trainable), trainable


def test_yolov5_fuse_keeps_outputs_with_peaked_attention(yolo):
    """The Hybrid-M detector with BatchNorm statistics of real images and peaked attention, so that its
    outputs depend on the image and every fold counts: fused equals unfused; a fold that drops the
    attention-input BatchNorm's shift from the query fails the same bound."""
    x = real_images(128, 4)
    model = calibrate_batchnorm_(perturb_(yolo.DetectionModel(str(HYBRID_M))), x)
    peak_attention_(model, x[:1])
    (unfused, _), errors, control = fusion_and_wrong_fold(model, x, lambda a, b: output_errors(a[0], b[0]))
    assert_input_dependent(unfused, PARITY_BOUND, 'Hybrid-M (YOLOv5)')
    print(f'fused: boxes {errors[0]:.2g}, scores {errors[1]:.2g}; query folded without shift: boxes {control[0]:.2g}, '
          f'scores {control[1]:.2g} (bound {PARITY_BOUND:g})')
    assert max(errors) < PARITY_BOUND
    assert max(control) > 10 * PARITY_BOUND


# --- --freeze -----------------------------------------------------------------------------------

def test_frozen_backbone_keeps_its_batchnorm_statistics(yolo):
    """train.py --freeze 5 sets requires_grad False on layers 0-4 and calls model.train() each epoch:
    the frozen stages stay in eval mode, so their features do not move; the head still trains."""
    torch.manual_seed(0)
    model = perturb_(yolo.DetectionModel(str(HYBRID_M)))
    for name, p in model.named_parameters():
        p.requires_grad = not any(f'model.{i}.' in name for i in range(5))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = taps(model.eval(), x)
    head_bn = model.model[6].bn
    head_mean = head_bn.running_mean.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    assert not any(m.training for stage in model.model[:5] for m in stage.modules()) and head_bn.training
    for _ in range(3):
        optimizer.zero_grad()
        sum(o.square().mean() for o in model(torch.rand(2, 3, 96, 96) * 4)).backward()
        optimizer.step()
    with torch.no_grad():
        assert [(a - b).abs().max().item() for a, b in zip(expected, taps(model.eval(), x))] == [0, 0, 0]
    assert not torch.equal(head_mean, head_bn.running_mean)
    for p in model.parameters():  # unfrozen again: the whole model trains
        p.requires_grad = True
    model.train()
    assert all(m.training for m in model.modules())


# --- registration -------------------------------------------------------------------------------

def test_stage_equals_conv_only_inside_parse_model(yolo):
    model = yolo.DetectionModel(str(CONV_S))  # parse_model saw the stages as Conv and got their widths
    assert [m.np for m in model.model[:5]] == [sum(p.numel() for p in m.parameters()) for m in model.model[:5]]
    assert MobileNetV4Stage != yolo.Conv and yolo.Conv != MobileNetV4Stage
    assert hash(MobileNetV4Stage) != hash(yolo.Conv)
    assert MobileNetV4Stage not in {yolo.Conv} and {yolo.Conv: 1}.get(MobileNetV4Stage) is None


def test_checkout_and_pypi_package_in_one_process(yolov5_dir, offline, tmp_path):
    """Two YOLOv5 trees registered in one process (a checkout and the PyPI package): each parse_model
    sees the stages as its own Conv, in any order."""
    code = f'''
import sys
sys.path.insert(0, {str(yolov5_dir)!r})
import models.yolo as checkout
import yolov5_mnv4
import yolov5.models.yolo as pypi
from yolov5_mnv4.hosts.yolov5 import is_registered
assert is_registered(checkout) and is_registered(pypi) and checkout.Conv is not pypi.Conv
counts = [sum(p.numel() for p in tree.DetectionModel({str(CONV_S)!r}).parameters())
          for tree in (checkout, pypi, checkout, pypi)]
print('params', counts)
'''
    result = run_python(code, tmp_path, offline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'params [2032925, 2032925, 2032925, 2032925]' in result.stdout


def test_reloaded_models_yolo_is_registered_again(yolov5_dir, offline, tmp_path):
    code = f'''
import importlib, sys
sys.path.insert(0, {str(yolov5_dir)!r})
import models.yolo
from yolov5_mnv4.hosts.yolov5 import is_registered
first = models.yolo.parse_model
importlib.reload(models.yolo)
assert models.yolo.parse_model is not first and is_registered(models.yolo)
m = models.yolo.DetectionModel({str(CONV_S)!r})
print('stages', sum(type(x).__name__ == 'MobileNetV4Stage' for x in m.model))
'''
    result = run_python(code, tmp_path, offline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'stages 5' in result.stdout


# --- DDP ----------------------------------------------------------------------------------------

DDP_WORKER = '''
import os, sys, warnings
import torch, torch.distributed as dist, torch.multiprocessing as mp

def worker(rank, tree, cfg, rendezvous):
    sys.path.insert(0, tree)
    import models.yolo
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{rendezvous}', rank=rank, world_size=2)
    torch.manual_seed(0)
    ddp = torch.nn.parallel.DistributedDataParallel(models.yolo.DetectionModel(cfg).train())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            sum(o.square().mean() for o in ddp(torch.randn(2, 3, 64, 64))).backward()
    grads = sum(p.grad is not None for p in ddp.parameters()) - len(list(ddp.parameters()))
    strides = [str(w.message).splitlines()[1] for w in caught if 'Grad strides' in str(w.message)]
    print(f'rank {rank}: {grads} parameters without a gradient, stride warnings: {strides}', flush=True)
    dist.destroy_process_group()

if __name__ == '__main__':
    mp.spawn(worker, args=tuple(sys.argv[1:]), nprocs=2)
'''


def test_ddp_two_ranks_without_grad_stride_warnings(yolov5_dir, offline, tmp_path):
    """DDP (gloo, 2 CPU ranks) on a hybrid: no "Grad strides do not match bucket view strides" (1x1
    and depthwise conv weights carry the channels-last strides of their gradients; see
    hosts.yolov5.weights_strided_like_activations)."""
    script = tmp_path / 'ddp.py'
    script.write_text(DDP_WORKER)
    rendezvous = tmp_path / 'rendezvous'  # a file, not a TCP port: nothing to collide with
    result = subprocess.run([sys.executable, str(script), str(yolov5_dir), str(HYBRID_M), str(rendezvous)], cwd=tmp_path,
                            env={**os.environ, **offline}, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    # The two ranks print concurrently into one pipe, so their lines may run together: find each report.
    reports = dict(re.findall(r'rank (\d): (\d+ parameters without a gradient, stride warnings: \[.*?\])', log))
    assert sorted(reports) == ['0', '1'], log[-3000:]
    for rank, report in reports.items():
        assert report == '0 parameters without a gradient, stride warnings: []', (rank, report)


# --- pretrained rows ----------------------------------------------------------------------------

def test_pretrained_row_is_loaded_once_logged_and_forgotten(yolo, tmp_path):
    timm = require('timm')
    from helpers import save_timm
    source = save_timm(timm.create_model('mobilenetv4_conv_small', pretrained=False), tmp_path / 's.safetensors')
    cfg = yaml.safe_load(CONV_S.read_text())
    cfg['backbone'][0] = [-1, 1, 'MobileNetV4ConvSmall', [str(source)]]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    yolo.LOGGER.addHandler(handler)
    try:
        model = yolo.DetectionModel(copy.deepcopy(cfg))
    finally:
        yolo.LOGGER.removeHandler(handler)
    lines = [r.getMessage() for r in records if 'pretrained tensors' in r.getMessage()]
    from yolov5_mnv4 import MobileNetV4
    count = len(MobileNetV4('conv_small').state_dict())
    assert lines == [f'MobileNetV4 conv_small backbone: {count} pretrained tensors loaded from {source}']
    assert model.yaml['backbone'][0] == [-1, 1, 'MobileNetV4ConvSmall', []]
    assert cfg['backbone'][0][3] == [str(source)]  # the caller's dict is left alone
    assert all(m.pretrained is None for m in model.model[:5])
    source.unlink()
    rebuilt = yolo.DetectionModel(model.yaml)  # what train.py --weights best.pt / --resume do
    rebuilt.load_state_dict(model.state_dict())


# --- export -------------------------------------------------------------------------------------

def test_stock_onnx_export_of_a_hybrid_matches_pytorch(yolo, yolov5_dir, offline, tmp_path):
    """export.py --include onnx on a Hybrid-M checkpoint (torch's default exporter, dynamo, on this
    stack): onnxruntime equals the fused PyTorch model; the opset that comes out is export.py's."""
    onnx = require('onnx')
    ort = require('onnxruntime')
    from helpers import save_detector_checkpoint
    weights = save_detector_checkpoint(yolo, HYBRID_M, tmp_path / 'hybrid-m.pt', nc=3, peaked_at=128)
    result = subprocess.run([sys.executable, 'export.py', '--weights', str(weights), '--include', 'onnx', '--img', '128',
                             '--device', 'cpu'], cwd=yolov5_dir, env={**os.environ, **offline}, capture_output=True,
                            text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and 'export failure' not in log, log[-3000:]
    requested = int(re.search(r'opset=(\d+)', log).group(1))
    graph = onnx.load(str(weights.with_suffix('.onnx')))
    opset = next(o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx'))
    ops = {n.op_type for n in graph.graph.node}
    print(f'export.py asked for opset {requested}; the file has opset {opset}')
    assert opset == requested and {'MatMul', 'Softmax'} <= ops and 'Attention' not in ops
    from models.experimental import attempt_load
    model = attempt_load(weights, device='cpu', fuse=True).eval()
    session = ort.InferenceSession(str(weights.with_suffix('.onnx')), providers=['CPUExecutionProvider'])
    x = real_images(128, 2)
    with torch.no_grad():
        ref = model(x)[0]
    assert_input_dependent(ref, PARITY_BOUND, 'the Hybrid-M checkpoint')
    for i in range(2):
        got = session.run(None, {'images': x[i:i + 1].numpy()})[0]
        errors = output_errors(got, ref[i:i + 1])
        print(f'image {i}: ONNX Runtime against PyTorch: boxes {errors[0]:.2g}, scores {errors[1]:.2g}')
        assert got.shape == ref[i:i + 1].shape and max(errors) < PARITY_BOUND
