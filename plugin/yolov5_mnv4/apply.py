"""Register the plugin in a YOLOv5 checkout, or take it out again (`--revert`).

    yolov5-mnv4-apply /path/to/yolov5            # or: python scripts/apply.py /path/to/yolov5
    yolov5-mnv4-apply /path/to/yolov5 --revert

Applying adds one hook block to `models/yolo.py` (it calls `yolov5_mnv4.integration.register`) and
copies the configs to `models/mnv4/`, where `--cfg yolov5_mobilenetv4.yaml` finds them. It is
idempotent; `--revert` restores the tree byte for byte. Everything is checked before anything is
written, and a failed write rolls back, so a refusal leaves the tree as it was.
"""
import argparse
import sys
from pathlib import Path

HOOK = '''# yolov5-mnv4 begin: register the MobileNetV4 backbones (`yolov5-mnv4-apply --revert` removes this block)
try:
    from yolov5_mnv4 import integration as _mnv4
except ModuleNotFoundError as _mnv4_missing:
    if _mnv4_missing.name != 'yolov5_mnv4':
        raise
    LOGGER.warning('yolov5-mnv4 is not installed here (pip install -e <yolov5-mnv4 repo>): MobileNetV4 configs will not build')
else:
    _mnv4.register(sys.modules[__name__])
# yolov5-mnv4 end
'''
HOOK_BLOCK = HOOK + '\n\n'  # placed before the `if __name__ == '__main__':` line, after its two blank lines
CONFIG_DIR = Path('models', 'mnv4')
CONFIG_SOURCE = Path(__file__).resolve().parents[2] / 'models'
# Text that a models/yolo.py we can hook must contain (v7.0 and master both do).
REQUIRED = ('def parse_model(d, ch)', 'class BaseModel(', 'class DetectionModel(BaseModel)',
            'parse_model(deepcopy(self.yaml), ch=[ch])', 'LOGGER')


class ApplyError(RuntimeError):
    """The tree cannot be patched; nothing was changed."""


def plugin_configs():
    configs = sorted(CONFIG_SOURCE.glob('*.yaml'))
    if not configs:
        raise ApplyError(f'no configs found in {CONFIG_SOURCE}: install yolov5-mnv4 from its repository '
                         f'(pip install -e .) so that its models/ folder is next to the package')
    return {CONFIG_DIR / p.name: p.read_bytes() for p in configs}


def _main_guard_index(lines):
    guards = [i for i, line in enumerate(lines) if line.startswith('if __name__ ==')]
    if len(guards) != 1:
        raise ApplyError("unsupported YOLOv5 version: models/yolo.py needs exactly one top-level "
                         "`if __name__ == '__main__':` line to place the hook before")
    return guards[0]


def check_tree(root):
    """Raise ApplyError unless `root` is a YOLOv5 checkout we can patch; return models/yolo.py's text."""
    yolo_py = root / 'models' / 'yolo.py'
    if not root.is_dir():
        raise ApplyError(f'{root} is not a folder')
    if not (yolo_py.is_file() and (root / 'models' / 'common.py').is_file() and (root / 'train.py').is_file()):
        raise ApplyError(f'{root} is not a YOLOv5 checkout (no train.py, models/yolo.py and models/common.py)')
    text = yolo_py.read_text()
    if 'from yolov5.models.common import' in text:
        raise ApplyError(f'{root} is the PyPI yolov5 package: there is nothing to patch, '
                         f'`import yolov5_mnv4` registers the backbones into it')
    missing = [snippet for snippet in REQUIRED if snippet not in text]
    if missing:
        raise ApplyError(f'unsupported YOLOv5 version in {root}: models/yolo.py lacks {missing}; '
                         f'yolov5-mnv4 supports v7.0 and master')
    return text


def hooked(text):
    if HOOK_BLOCK in text:
        return text
    if '# yolov5-mnv4 begin' in text:
        raise ApplyError('models/yolo.py has an edited yolov5-mnv4 hook block; revert it by hand first')
    lines = text.splitlines(keepends=True)
    i = _main_guard_index(lines)
    return ''.join(lines[:i]) + HOOK_BLOCK + ''.join(lines[i:])


def unhooked(text):
    if HOOK_BLOCK not in text:
        if '# yolov5-mnv4 begin' in text:
            raise ApplyError('models/yolo.py has an edited yolov5-mnv4 hook block; remove it by hand')
        return text
    return text.replace(HOOK_BLOCK, '', 1)


def planned_changes(root, revert=False):
    """{relative path: new bytes, or None to delete} that applying (or reverting) would write."""
    root = Path(root)
    text = check_tree(root)
    configs = plugin_configs()
    changes = {Path('models', 'yolo.py'): (unhooked(text) if revert else hooked(text)).encode()}
    for rel, content in configs.items():
        changes[rel] = None if revert else content
    current = {rel: (root / rel).read_bytes() if (root / rel).is_file() else None for rel in changes}
    return {rel: new for rel, new in changes.items() if current[rel] != new}


def write_changes(root, changes):
    """Write all changes or none: on any error, restore what was already written."""
    root, done = Path(root), []
    try:
        for rel, new in changes.items():
            path = root / rel
            done.append((path, path.read_bytes() if path.is_file() else None))
            if new is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(new)
    except OSError:
        for path, old in reversed(done):
            if old is not None:
                path.write_bytes(old)
            elif path.exists():
                path.unlink()
        raise
    finally:
        config_dir = root / CONFIG_DIR
        if config_dir.is_dir() and not any(config_dir.iterdir()):
            config_dir.rmdir()


def apply(root, revert=False):
    """Apply (or revert) the plugin in a YOLOv5 checkout; returns the list of changed paths."""
    changes = planned_changes(root, revert)
    write_changes(root, changes)
    return sorted(str(p) for p in changes)


def patch_for(root):
    """The unified diff (git format) that applying makes to a copy of the YOLOv5 tree at `root`."""
    import shutil
    import subprocess
    import tempfile

    def git(*args, cwd):
        return subprocess.run(['git', '-c', 'user.name=mnv4', '-c', 'user.email=mnv4@localhost', *args],
                              cwd=cwd, check=True, capture_output=True, text=True).stdout

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / 'yolov5'
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns('.git', '__pycache__'))
        git('init', '-q', cwd=copy)
        git('add', '-A', cwd=copy)
        git('commit', '-q', '-m', 'base', cwd=copy)
        apply(copy)
        git('add', '-A', cwd=copy)
        return git('diff', '--cached', cwd=copy)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='yolov5-mnv4-apply', description=__doc__.split('\n')[0])
    parser.add_argument('yolov5', type=Path, help='path to a YOLOv5 checkout (v7.0 or master)')
    parser.add_argument('--revert', action='store_true', help='remove the plugin, restoring the tree')
    args = parser.parse_args(argv)
    try:
        changed = apply(args.yolov5, args.revert)
    except ApplyError as err:
        print(f'yolov5-mnv4-apply: {err}; nothing was changed', file=sys.stderr)
        return 2
    action = 'reverted' if args.revert else 'applied'
    if changed:
        print(f'yolov5-mnv4 {action} in {args.yolov5}: ' + ', '.join(changed))
    else:
        print(f'yolov5-mnv4 already {action} in {args.yolov5}: nothing to change')
    return 0


if __name__ == '__main__':
    sys.exit(main())

