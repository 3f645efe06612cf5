"""`yolov5-mnv4 check`: what a bug report needs, in the spirit of `yolo checks` and torch's
collect_env: the plugin, Python, torch, the YOLOv5 tree (version, and whether and by which plugin
version it is patched), and which optional runtimes are installed. Reads versions from package
metadata, so nothing heavy (TensorFlow, OpenVINO) is imported.
"""
import argparse
import importlib.metadata
import importlib.util
import platform
import sys
from pathlib import Path

from .. import __version__
from ..hosts.yolov5_tree import ApplyError, find_tree, is_tree, numpy_conflict

# (what a user knows it as, import name, distribution name)
RUNTIMES = (
    ('ONNX', 'onnx', 'onnx'),
    ('ONNX Runtime', 'onnxruntime', 'onnxruntime'),
    ('TensorFlow', 'tensorflow', 'tensorflow'),
    ('LiteRT', 'ai_edge_litert', 'ai-edge-litert'),
    ('OpenVINO', 'openvino', 'openvino'),
    ('pnnx', 'pnnx', 'pnnx'),
    ('NCNN', 'ncnn', 'ncnn'),
    ('MNN', 'MNN', 'MNN'),
    ('ExecuTorch', 'executorch', 'executorch'),
    ('timm', 'timm', 'timm'),
    ('PyPI yolov5', 'yolov5', 'yolov5'),
    ('Ultralytics', 'ultralytics', 'ultralytics'),
)


def _version(import_name, dist):
    if importlib.util.find_spec(import_name) is None:
        return None
    for name in (dist, import_name, import_name.replace('_', '-')):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return 'installed'


def _torch():
    try:
        import torch
    except ImportError as err:
        return f'not importable ({err})'
    cuda = f'CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)' if torch.cuda.is_available() else 'CPU only'
    return f'{torch.__version__} ({cuda}, {torch.get_num_threads()} threads)'


def hook_state(tree):
    """Whether models/yolo.py carries the plugin's hook, and which plugin version wrote it."""
    if tree.applied is None:
        return 'not patched (checkpoints still load: the plugin registers itself when one is unpickled)'
    configs = len(list((tree.root / 'models' / 'mnv4').glob('*.yaml')))
    return f'patched by yolov5-mnv4 {tree.applied}, {configs} configs in models/mnv4'


def report(tree=None):
    lines = [f'yolov5-mnv4   {__version__} ({Path(__file__).resolve().parent})',
             f'Python        {platform.python_version()} ({sys.executable})',
             f'platform      {platform.platform()}, {platform.machine()}',
             f'torch         {_torch()}',
             f'torchvision   {_version("torchvision", "torchvision") or "not installed (YOLOv5 needs it)"}']
    if tree is None:
        lines.append('YOLOv5 tree   none given (--yolov5 PATH, or run inside a checkout)')
    else:
        try:
            found = find_tree(tree)
            lines.append(f'YOLOv5 tree   {found.root}: {found.version}; {hook_state(found)}')
            conflict = numpy_conflict(found.root)
            if conflict:
                lines.append(f'warning       {conflict}')
        except ApplyError as err:
            lines.append(f'YOLOv5 tree   {err}')
    for label, import_name, dist in RUNTIMES:
        lines.append(f'{label:<13} {_version(import_name, dist) or "not installed"}')
    from ..bench import RUNTIMES as BENCH_RUNTIMES
    from ..bench import available_runtimes, default_runtimes
    default, asked_only = default_runtimes(available_runtimes())
    used = [BENCH_RUNTIMES[name][1] for name in default]
    asked = [f'{BENCH_RUNTIMES[name][1]} (--runtimes ... {name})' for name in asked_only]
    lines.append(f'benchmark     yolov5-mnv4 benchmark runs: {", ".join(used) or "none"}'
                 + (f'; when asked: {", ".join(asked)}' if asked else ''))
    return '\n'.join(lines)


def main(argv=None, prog='yolov5-mnv4 check'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, help='the YOLOv5 tree (default: the current folder, if it is one)')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    tree = args.yolov5 or (Path.cwd() if is_tree(Path.cwd()) else None)
    print(report(tree))
    return 0


if __name__ == '__main__':
    sys.exit(main())
