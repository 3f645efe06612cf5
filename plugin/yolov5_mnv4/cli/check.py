"""`yolov5-mnv4 check`: what a bug report needs, in the spirit of `yolo checks` and torch's
collect_env: the plugin, Python, torch, the YOLOv5 tree (version, and whether and by which plugin
version it is patched), and which optional runtimes are installed. Reads versions from package
metadata, so nothing heavy (TensorFlow, OpenVINO) is imported.
"""
import argparse
import importlib.metadata
import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

from .. import __version__
from ..hosts.yolov5_tree import applied_version

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


def tree_version(tree):
    """'v7.0', 'master (after v7.0)' or a git description of a YOLOv5 checkout."""
    if (tree / '.git').exists():
        try:
            described = subprocess.run(['git', '-C', str(tree), 'describe', '--tags', '--always', '--dirty'],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
            if described:
                return f'git {described}'
        except (OSError, subprocess.SubprocessError):
            pass
    general = tree / 'utils' / 'general.py'
    if general.is_file() and 'import ultralytics' in general.read_text(errors='replace'):
        return 'master (after v7.0: utils/general.py imports the ultralytics package)'
    return 'v7.0 (no .git; utils/general.py does not import the ultralytics package)'


def hook_state(tree):
    """Whether models/yolo.py carries the plugin's hook, and which plugin version wrote it."""
    version = applied_version((tree / 'models' / 'yolo.py').read_text(errors='replace'))
    if version is None:
        return 'not patched (checkpoints still load: the plugin registers itself when one is unpickled)'
    configs = len(list((tree / 'models' / 'mnv4').glob('*.yaml')))
    return f'patched by yolov5-mnv4 {version}, {configs} configs in models/mnv4'


def report(tree=None):
    lines = [f'yolov5-mnv4   {__version__} ({Path(__file__).resolve().parent})',
             f'Python        {platform.python_version()} ({sys.executable})',
             f'platform      {platform.platform()}, {platform.machine()}',
             f'torch         {_torch()}',
             f'torchvision   {_version("torchvision", "torchvision") or "not installed (YOLOv5 needs it)"}']
    if tree is None:
        lines.append('YOLOv5 tree   none given (--yolov5 PATH, or run inside a checkout)')
    elif not (tree / 'models' / 'yolo.py').is_file():
        lines.append(f'YOLOv5 tree   {tree}: not a YOLOv5 checkout (no models/yolo.py)')
    else:
        lines.append(f'YOLOv5 tree   {tree}: {tree_version(tree)}; {hook_state(tree)}')
    for label, import_name, dist in RUNTIMES:
        lines.append(f'{label:<13} {_version(import_name, dist) or "not installed"}')
    return '\n'.join(lines)


def main(argv=None, prog='yolov5-mnv4 check'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('--yolov5', type=Path, help='the YOLOv5 tree (default: the current folder, if it is one)')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    tree = args.yolov5 or (Path.cwd() if (Path.cwd() / 'models' / 'yolo.py').is_file() else None)
    print(report(tree.resolve() if tree else None))
    return 0


if __name__ == '__main__':
    sys.exit(main())
