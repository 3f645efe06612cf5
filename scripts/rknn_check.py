#!/usr/bin/env python3
"""RKNN (Rockchip NPUs, rk3588) for MNv4 and stock YOLOv5 detectors: ONNX to .rknn with
rknn-toolkit2, int8 calibrated on a dataset's train images and fp16, run in the toolkit's simulator
and compared with the fp32 PyTorch model; which ops the toolkit leaves off the NPU.

The toolkit pins torch <= 2.4 and numpy <= 1.26, so it lives in its own environment
(scripts/rknn_env.sh) and this script runs in three steps, each in the environment it needs:

    python scripts/rknn_check.py export --yolov5 .cache/yolov5-v7.0 --work runs/rknn [--data data.yaml]
    .cache/rknn-env/bin/python scripts/rknn_check.py convert --work runs/rknn
    python scripts/rknn_check.py report --yolov5 .cache/yolov5-v7.0 --work runs/rknn

As Rockchip's model zoo does for YOLOv5, the ONNX ends at the Detect's three convolutions (their
4-D outputs: a 5-D reshape there is an op the NPU leaves to the CPU); the box decoding runs on the CPU afterwards
(here in `report`, with the Detect's own grids). In int8 one scale for pixel boxes and [0, 1] scores
would drown the scores (measured for ExecuTorch: 1 dB). Cases: the trained Conv-S-ReLU of tests/data
(its detections mean something), and untrained yolov5n, yolov5n with ReLU (the zoo's advice), MNv4-Conv-S
and MNv4-Hybrid-M (untrained, their norms set on 16 real images: their SNR says how the numbers survive,
not how detections do).
"""
import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / 'tests' / 'data' / 'mnv4-conv-s-relu-coco128-160.pt'
CASES = {'conv-s-relu-trained': TRAINED, 'yolov5n': 'yolov5n.yaml', 'yolov5n-relu': 'yolov5n.yaml',
         'conv-s': 'yolov5-mnv4-conv-s.yaml', 'hybrid-m': 'yolov5-mnv4-hybrid-m.yaml'}
CALIBRATION_IMAGES = 64
VAL_IMAGES = 32
PRECISIONS = ('int8', 'fp16')


def raw_head(model):
    """`model` returning the Detect's three conv outputs, (1, anchors * (5 + classes), ny, nx) each:
    what is left of the Detect is dead code that the ONNX export drops."""
    import torch
    detect = model.model[-1]

    class RawHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            outputs = []
            hooks = [conv.register_forward_hook(lambda m, args, out: outputs.append(out)) for conv in detect.m]
            try:
                self.model(x)
            finally:
                for hook in hooks:
                    hook.remove()
            return tuple(outputs)

    return RawHead().eval()


def decode(detect, heads):
    """YOLOv5's Detect decoding of raw head outputs (numpy) into (1, anchors, 5 + classes)."""
    import torch
    out = []
    for i, h in enumerate(heads):
        _, _, ny, nx = h.shape
        y = torch.from_numpy(h).float().view(1, detect.na, detect.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
        xy, wh, conf = y.split((2, 2, detect.nc + 1), 4)
        xy = (xy * 2 + detect.grid[i]) * detect.stride[i]
        wh = (wh * 2) ** 2 * detect.anchor_grid[i]
        out.append(torch.cat((xy, wh, conf), 4).view(1, -1, detect.no))
    return torch.cat(out, 1).numpy()


BN_IMAGES = 16


def bn_batch(work):
    """The first calibration images as one NCHW batch in [0, 1] (what untrained models' norms are set on)."""
    import cv2
    import numpy as np
    import torch
    files = sorted((work / 'calibration').glob('*.png'))[:BN_IMAGES]
    return torch.from_numpy(np.stack([cv2.imread(str(f))[:, :, ::-1].transpose(2, 0, 1) for f in files]).astype(np.float32) / 255)


def load_case(yolov5, case, size, work):
    """The fused fp32 model of a case, its Detect grids made for `size`. An untrained model gets the
    statistics of real images in its BatchNorms (else its outputs are its biases, whatever the image,
    and any export would match them)."""
    import torch
    sys.path.insert(0, str(yolov5))
    from models.experimental import attempt_load
    from models.yolo import DetectionModel
    source = CASES[case]
    if isinstance(source, Path):
        model = attempt_load(str(source), device='cpu', fuse=True)
    else:
        cfg = (yolov5 / 'models' / source) if source.startswith('yolov5n') else (REPO / 'models' / source)
        if case.endswith('-relu') and case.startswith('yolov5n'):
            import yaml
            spec = yaml.safe_load(cfg.read_text())
            spec['activation'] = 'nn.ReLU()'
            cfg = spec
        from models.common import Conv
        default_act = Conv.default_act  # a config's `activation:` changes it for the rest of the process
        torch.manual_seed(0)
        try:
            model = DetectionModel(cfg if isinstance(cfg, dict) else str(cfg), nc=80)
        finally:
            Conv.default_act = default_act
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: one batch sets the statistics
        with torch.no_grad():
            model.train()(bn_batch(work))
        model = model.eval().fuse()
    model = model.float().eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))  # grids for this size
    return model


def export(args):
    """ONNX (raw heads), calibration list, val images (uint8 NHWC) and fp32 references, per case."""
    import numpy as np
    import torch

    from yolov5_mnv4.hosts.offline import set_offline_defaults
    set_offline_defaults()
    sys.path.insert(0, str(args.yolov5))
    from yolov5_mnv4.cli.demo import prepare_data
    from yolov5_mnv4.cli.export import dataset_images
    from yolov5_mnv4.export.runtimes import write_pngs
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or prepare_data(REPO / 'tests' / 'data' / 'coco64', work / 'data')[0]
    size = (args.img, args.img)
    calibration = dataset_images(data, 'train', size, CALIBRATION_IMAGES)
    val = dataset_images(data, 'val', size, VAL_IMAGES)
    paths = write_pngs(calibration, work / 'calibration')
    (work / 'dataset.txt').write_text('\n'.join(map(str, paths)) + '\n')
    np.save(work / 'val_nhwc_uint8.npy', np.stack([np.rint(im[0].transpose(1, 2, 0) * 255).astype(np.uint8) for im in val]))
    cases = [c for c in args.cases]
    for case in cases:
        model = load_case(args.yolov5, case, args.img, work)
        net = raw_head(model)
        x = torch.zeros(1, 3, *size)
        names = [f'p{int(s).bit_length() - 1}' for s in model.model[-1].stride]
        with torch.no_grad():
            torch.onnx.export(net, x, str(work / f'{case}.onnx'), opset_version=17, input_names=['images'],
                              output_names=names, dynamo=False)
            refs = [[h.numpy() for h in net(torch.from_numpy(im))] for im in val]
        np.savez(work / f'{case}-fp32.npz', **{f'{i}_{j}': h for i, r in enumerate(refs) for j, h in enumerate(r)})
        print(f'rknn_check: {case}: wrote {case}.onnx and its fp32 outputs on {len(val)} val images', flush=True)
    (work / 'cases.json').write_text(json.dumps({'cases': cases, 'img': args.img, 'data': str(data)}))


def convert(args):
    """In the rknn-toolkit2 environment: .rknn per case and precision, simulator outputs, op placement."""
    import numpy as np
    from rknn.api import RKNN
    work = args.work.resolve()
    meta = json.loads((work / 'cases.json').read_text())
    val = np.load(work / 'val_nhwc_uint8.npy')
    summary = {}
    for case in meta['cases']:
        for precision in PRECISIONS:
            rknn = RKNN(verbose=True)
            log_path = work / f'{case}-{precision}.log'
            with fd_log(log_path):
                rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform='rk3588')
                ok = rknn.load_onnx(model=str(work / f'{case}.onnx')) == 0
                ok = ok and rknn.build(do_quantization=precision == 'int8', dataset=str(work / 'dataset.txt')) == 0
                ok = ok and rknn.export_rknn(str(work / f'{case}-{precision}.rknn')) == 0
                ok = ok and rknn.init_runtime() == 0
                outputs = [rknn.inference(inputs=[im[None]], data_format='nhwc') for im in val] if ok else []
            rknn.release()
            text = log_path.read_text(errors='replace')
            if not ok or any(o is None for o in outputs):
                summary[f'{case}-{precision}'] = {'ok': False}
                print(f'rknn_check: {case} {precision}: FAILED (log: {case}-{precision}.log)\n{text[-2000:]}', flush=True)
                continue
            np.savez(work / f'{case}-{precision}.npz', **{f'{i}_{j}': h for i, o in enumerate(outputs) for j, h in enumerate(o)})
            summary[f'{case}-{precision}'] = {'ok': True, 'cpu_ops': cpu_ops(text),
                                              'rknn_mb': round((work / f'{case}-{precision}.rknn').stat().st_size / 1e6, 2)}
            print(f'rknn_check: {case} {precision}: {summary[f"{case}-{precision}"]}', flush=True)
    (work / 'convert.json').write_text(json.dumps(summary, indent=1))


@contextlib.contextmanager
def fd_log(path):
    """Send this process's stdout and stderr, the toolkit's C++ logging included, to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, 'w') as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


OP_ROW = re.compile(r'RKNN: \[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(CPU|NPU)\s')


def cpu_ops(log):
    """{op type: count} that the toolkit's verbose build log places on the CPU (its per-layer table,
    the last one printed: the built model's), the graph's input and output operators left out."""
    tables, rows = [], None
    for line in log.splitlines():
        if re.search(r'RKNN: \[[^\]]*\]\s+ID\s+OpType', line):
            rows = []
            tables.append(rows)
        elif rows is not None and (match := OP_ROW.search(line)):
            rows.append((match.group(2), match.group(4)))
    ops = {}
    for kind, target in tables[-1] if tables else []:
        if target == 'CPU' and kind not in ('InputOperator', 'OutputOperator'):
            ops[kind] = ops.get(kind, 0) + 1
    return ops


def report(args):
    """Decode each case's simulator outputs and compare with its fp32 PyTorch model."""
    import numpy as np

    from yolov5_mnv4.hosts.offline import set_offline_defaults
    set_offline_defaults()
    from yolov5_mnv4.export.parity import detection_errors, int8_report
    work = args.work.resolve()
    meta = json.loads((work / 'cases.json').read_text())
    converted = json.loads((work / 'convert.json').read_text())
    size, lines = meta['img'], []
    for case in meta['cases']:
        model = load_case(args.yolov5, case, size, work)
        detect = model.model[-1]
        fp32 = np.load(work / f'{case}-fp32.npz')
        n = len({k.split('_')[0] for k in fp32.files})
        refs = [decode(detect, [fp32[f'{i}_{j}'] for j in range(detect.nl)])[0] for i in range(n)]
        for precision in PRECISIONS:
            info = converted.get(f'{case}-{precision}', {'ok': False})
            if not info['ok']:
                lines.append(f'- {case} {precision}: conversion or simulation failed (see {case}-{precision}.log)')
                continue
            got = np.load(work / f'{case}-{precision}.npz')
            outs = [decode(detect, [got[f'{i}_{j}'].reshape(fp32[f'{i}_{j}'].shape) for j in range(detect.nl)])[0]
                    for i in range(n)]
            placement = ', '.join(f'{k} {v}' for k, v in sorted(info['cpu_ops'].items())) or 'none'
            if precision == 'int8':
                measure = int8_report(outs, refs, detect.stride, detect.na, (size, size))[-1]
            else:
                boxes, scores = np.max([detection_errors(o, r) for o, r in zip(outs, refs)], axis=0)
                measure = f'max box error {boxes:.1e} of the largest coordinate, max score error {scores:.1e}'
            lines.append(f'- {case} {precision} ({info["rknn_mb"]} MB): {measure}; ops on the CPU: {placement}')
    text = (f'RKNN rk3588 (rknn-toolkit2 simulator) at {size}, {n} val images of {meta["data"]}, against the fp32 '
            'PyTorch model (raw heads decoded on the CPU). Untrained cases (all but the trained one) have random '
            'weights and real-image norm statistics: such nets amplify rounding layer after layer, so their '
            'errors bound nothing; what carries over from them is where the toolkit puts each op.\n\n'
            + '\n'.join(lines) + '\n')
    (work / 'rknn_report.md').write_text(text)
    print(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('step', choices=['export', 'convert', 'report'])
    parser.add_argument('--work', type=Path, default=REPO / 'runs' / 'rknn')
    parser.add_argument('--yolov5', type=Path, default=REPO / '.cache' / 'yolov5-v7.0')
    parser.add_argument('--data', type=Path, help='data YAML (default: the shipped coco64 subset)')
    parser.add_argument('--img', type=int, default=320)
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    {'export': export, 'convert': convert, 'report': report}[args.step](args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
