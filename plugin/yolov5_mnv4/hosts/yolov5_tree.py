"""A YOLOv5 checkout, as the plugin patches it: what it is (`check_tree`, `applied_version`), the hook
block and configs that applying writes, and `apply` / `revert` (the command: yolov5_mnv4.cli.apply).

Applying adds one hook block to `models/yolo.py` (it calls `yolov5_mnv4.hosts.yolov5.register`) and
copies the configs to `models/mnv4/`, where `--cfg yolov5_mobilenetv4.yaml` finds them. It is
idempotent; `--revert` restores the tree byte for byte. Everything is checked before anything is
written, and a failed write rolls back, so a refusal leaves the tree as it was.

A config in `models/mnv4/` is overwritten (an upgrade) or deleted (`--revert`) only when its bytes
are a version the plugin shipped (shipped_configs.txt). One that differs (edited by the user, or the
user's own file under one of our names) is kept and named; `--force` replaces it on apply after
saving it as `<name>.bak` beside it.
"""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, resources

HOOK_BEGIN = '# yolov5-mnv4 begin'
HOOK = '''# yolov5-mnv4 begin: register the MobileNetV4 backbones (yolov5-mnv4 {version}; `yolov5-mnv4-apply --revert` removes this block)
try:
    from yolov5_mnv4.hosts import yolov5 as _mnv4
except ModuleNotFoundError as _mnv4_missing:
    if not (_mnv4_missing.name or '').startswith('yolov5_mnv4'):
        raise
    LOGGER.warning('yolov5-mnv4 0.3.0 or later is not installed here (pip install /path/to/yolov5-mnv4): MobileNetV4 configs will not build')
else:
    _mnv4.register(sys.modules[__name__])
# yolov5-mnv4 end
'''.format(version=__version__)
# Hook blocks that earlier versions wrote, by version: applying replaces them, --revert removes them.
# Verbatim, not derived from HOOK: they are the bytes those versions put into users' trees.
EARLIER_HOOKS = {'0.2.0': '''# yolov5-mnv4 begin: register the MobileNetV4 backbones (yolov5-mnv4 0.2.0; `yolov5-mnv4-apply --revert` removes this block)
try:
    from yolov5_mnv4 import integration as _mnv4
except ModuleNotFoundError as _mnv4_missing:
    if _mnv4_missing.name != 'yolov5_mnv4':
        raise
    LOGGER.warning('yolov5-mnv4 is not installed here (pip install yolov5-mnv4): MobileNetV4 configs will not build')
else:
    _mnv4.register(sys.modules[__name__])
# yolov5-mnv4 end
''', '0.1.0': '''# yolov5-mnv4 begin: register the MobileNetV4 backbones (`yolov5-mnv4-apply --revert` removes this block)
try:
    from yolov5_mnv4 import integration as _mnv4
except ModuleNotFoundError as _mnv4_missing:
    if _mnv4_missing.name != 'yolov5_mnv4':
        raise
    LOGGER.warning('yolov5-mnv4 is not installed here (pip install -e <yolov5-mnv4 repo>): MobileNetV4 configs will not build')
else:
    _mnv4.register(sys.modules[__name__])
# yolov5-mnv4 end
'''}
HOOK_BLOCK = HOOK + '\n\n'  # placed before the `if __name__ == '__main__':` line, after its two blank lines
CONFIG_DIR = Path('models', 'mnv4')
# Text that a models/yolo.py we can hook must contain (v7.0 and master both do).
REQUIRED = ('def parse_model(d, ch)', 'class BaseModel(', 'class DetectionModel(BaseModel)',
            'parse_model(deepcopy(self.yaml), ch=[ch])', 'LOGGER')


class ApplyError(RuntimeError):
    """The tree cannot be patched; nothing was changed."""


def plugin_configs():
    try:
        configs = resources.configs()
    except FileNotFoundError as err:
        raise ApplyError(str(err)) from None
    return {CONFIG_DIR / name: content for name, content in configs.items()}


def config_digest(content):
    return hashlib.sha256(content).hexdigest()


def shipped_configs():
    """{(sha256, file name)} of every config version the plugin has shipped."""
    lines = resources.shipped_configs_text().splitlines()
    return {tuple(line.split()) for line in lines if line.strip() and not line.startswith('#')}


@dataclass
class Plan:
    """What applying or reverting writes ({relative path: bytes, or None to delete}) and the user's
    configs it leaves alone (relative paths)."""
    changes: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)
    backups: list = field(default_factory=list)


def _backup_path(root, rel):
    candidate, n = rel.with_name(rel.name + '.bak'), 1
    while (root / candidate).exists():
        candidate, n = rel.with_name(f'{rel.name}.bak{n}'), n + 1
    return candidate


def _main_guard_index(lines):
    guards = [i for i, line in enumerate(lines) if line.startswith('if __name__ ==')]
    if len(guards) != 1:
        raise ApplyError("unsupported YOLOv5 version: models/yolo.py needs exactly one top-level "
                         "`if __name__ == '__main__':` line to place the hook before")
    return guards[0]


# The files that make a folder a YOLOv5 checkout (v7.0, master, and the PyPI package's tree alike)
TREE_FILES = ('train.py', 'models/yolo.py', 'models/common.py')


@dataclass(frozen=True)
class Tree:
    """A YOLOv5 checkout: its root, which YOLOv5 it is, and which plugin release patched it."""
    root: Path
    version: str  # 'git v7.0-3-g1234', 'v7.0 (...)', 'master (...)' (tree_version)
    applied: str = None  # the release whose hook block models/yolo.py carries, 'unknown' if edited, None
    pypi: bool = False  # the PyPI yolov5 package's tree: nothing to patch

    @property
    def yolo_py(self):
        return self.root / 'models' / 'yolo.py'


def is_tree(root):
    """Whether `root` holds a YOLOv5 checkout's files (TREE_FILES)."""
    return all((Path(root) / name).is_file() for name in TREE_FILES)


def find_tree(root=None):
    """The YOLOv5 checkout at `root` (default: the current folder) as a Tree; ApplyError, saying why,
    for anything else. The one test of "is this a YOLOv5 tree, which one, patched by whom" that
    apply, check, convert, demo, export and scripts/get_yolov5.py share."""
    root = Path(root).expanduser() if root is not None else Path.cwd()
    if not root.is_dir():
        raise ApplyError(f'{root} is not a folder')
    if not is_tree(root):
        raise ApplyError(f'{root} is not a YOLOv5 checkout (no {", ".join(TREE_FILES[:-1])} and {TREE_FILES[-1]})')
    text = (root / 'models' / 'yolo.py').read_text(errors='replace')
    return Tree(root.resolve(), tree_version(root), applied_version(text), 'from yolov5.models.common import' in text)


def tree_version(root):
    """'git v7.0-3-g...', 'master (...)' or 'v7.0 (...)' for a YOLOv5 checkout."""
    import subprocess
    if (root / '.git').exists():
        try:
            described = subprocess.run(['git', '-C', str(root), 'describe', '--tags', '--always', '--dirty'],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
            if described:
                return f'git {described}'
        except (OSError, subprocess.SubprocessError):
            pass
    general = root / 'utils' / 'general.py'
    if general.is_file() and 'import ultralytics' in general.read_text(errors='replace'):
        return 'master (after v7.0: utils/general.py imports the ultralytics package)'
    return 'v7.0 (no .git; utils/general.py does not import the ultralytics package)'


def numpy_conflict(root):
    """A one-line warning with the fix when the YOLOv5 code at `root` calls `np.trapz` and the numpy
    installed here no longer has it (removed in numpy 2.4): val.py, and so train.py's first validation
    with a detection, would stop with an AttributeError. None when they agree."""
    import importlib.util
    metrics = Path(root) / 'utils' / 'metrics.py'
    if not metrics.is_file() or 'np.trapz(' not in metrics.read_text(errors='replace'):
        return None
    if importlib.util.find_spec('numpy') is None:
        return None
    import numpy
    if hasattr(numpy, 'trapz'):
        return None
    return (f'the YOLOv5 code in {root} calls np.trapz, which numpy {numpy.__version__} no longer has (removed in '
            f"2.4): val.py and train.py's validation stop at the first detection; pip install 'numpy<2.4'")


def check_tree(root):
    """Raise ApplyError unless `root` is a YOLOv5 checkout we can patch; return models/yolo.py's text."""
    tree = find_tree(root)
    if tree.pypi:
        raise ApplyError(f'{root} is the PyPI yolov5 package: there is nothing to patch, '
                         f'`import yolov5_mnv4` registers the backbones into it')
    text = tree.yolo_py.read_text()
    missing = [snippet for snippet in REQUIRED if snippet not in text]
    if missing:
        raise ApplyError(f'unsupported YOLOv5 version in {root}: models/yolo.py lacks {missing}; '
                         f'yolov5-mnv4 supports v7.0 and master')
    return text


def _without_earlier_hook(text):
    for earlier in EARLIER_HOOKS.values():
        if earlier + '\n\n' in text:
            return text.replace(earlier + '\n\n', '', 1)
    return text


def applied_version(text):
    """The plugin version whose hook block the models/yolo.py `text` carries, 'unknown' for an edited
    block, None for none."""
    if HOOK_BLOCK in text:
        return __version__
    found = [version for version, earlier in EARLIER_HOOKS.items() if earlier + '\n\n' in text]
    return found[0] if found else 'unknown' if HOOK_BEGIN in text else None


def hooked(text):
    if HOOK_BLOCK in text:
        return text
    text = _without_earlier_hook(text)
    if HOOK_BEGIN in text:
        raise ApplyError('models/yolo.py has an edited yolov5-mnv4 hook block; revert it by hand first')
    lines = text.splitlines(keepends=True)
    i = _main_guard_index(lines)
    return ''.join(lines[:i]) + HOOK_BLOCK + ''.join(lines[i:])


def unhooked(text):
    text = _without_earlier_hook(text)
    if HOOK_BLOCK not in text:
        if HOOK_BEGIN in text:
            raise ApplyError('models/yolo.py has an edited yolov5-mnv4 hook block; remove it by hand')
        return text
    return text.replace(HOOK_BLOCK, '', 1)


def planned_changes(root, revert=False, force=False):
    """The Plan of applying (or reverting): checks everything, writes nothing."""
    root = Path(root)
    text = check_tree(root)
    plan, shipped = Plan(), shipped_configs()
    yolo_py = Path('models', 'yolo.py')
    new_text = (unhooked(text) if revert else hooked(text)).encode()
    if new_text != text.encode():
        plan.changes[yolo_py] = new_text
    for rel, content in plugin_configs().items():
        path = root / rel
        current = path.read_bytes() if path.is_file() else None
        if current == (None if revert else content):
            continue
        if current is not None and (config_digest(current), rel.name) not in shipped:  # the user's bytes
            if revert or not force:
                plan.kept.append(rel)
                continue
            backup = _backup_path(root, rel)
            plan.changes[backup] = current
            plan.backups.append(backup)
        plan.changes[rel] = None if revert else content
    return plan


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


@dataclass
class Outcome:
    changed: list  # relative paths written or deleted (backups included)
    kept: list  # the user's configs left as they were
    backups: list  # copies of the user's configs that --force saved before replacing them


def apply(root, revert=False, force=False):
    """Apply (or revert) the plugin in a YOLOv5 checkout; returns an Outcome (paths as strings)."""
    plan = planned_changes(root, revert, force)
    write_changes(root, plan.changes)
    return Outcome(sorted(str(p) for p in plan.changes), [str(p) for p in plan.kept], [str(p) for p in plan.backups])


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
