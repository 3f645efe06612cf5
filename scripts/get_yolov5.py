#!/usr/bin/env python3
"""Get a YOLOv5 tree for this project: `git clone` at a ref (default v7.0) when the network allows,
else the same v7.0 code rebuilt from the PyPI `yolov5==7.0.14` wheel with its `yolov5.`-prefixed
imports turned back into a clone's bare imports.

    python scripts/get_yolov5.py --dest .cache/yolov5-v7.0 [--ref v7.0|master] [--from pypi|git]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from yolov5_mnv4.hosts.yolov5_tree import is_tree

REPO = 'https://github.com/ultralytics/yolov5'
PYPI_PIN = 'yolov5==7.0.14'  # fcakyon/yolov5-pip: YOLOv5 v7.0 with prefixed imports


def clone(ref, dest):
    print(f'get_yolov5: git clone --depth 1 --branch {ref} {REPO} {dest}', flush=True)
    try:
        subprocess.run(['git', 'clone', '--quiet', '--depth', '1', '--branch', ref, REPO, str(dest)],
                       check=True, timeout=300, env={**os.environ, 'GIT_TERMINAL_PROMPT': '0'})
        return True
    except (subprocess.SubprocessError, OSError) as err:
        print(f'get_yolov5: clone failed ({err.__class__.__name__})', flush=True)
        shutil.rmtree(dest, ignore_errors=True)
        return False


def unprefix(source):
    """`from yolov5.x import y` -> `from x import y`, `import yolov5.x as y` -> `import x as y`."""
    source = re.sub(r'^(\s*)from yolov5 import __version__ as (\w+)', r"\1\2 = '7.0.14'", source, flags=re.M)
    source = re.sub(r'^(\s*)from yolov5 import __version__', r"\1__version__ = '7.0.14'", source, flags=re.M)
    source = re.sub(r'\bfrom yolov5\.', 'from ', source)
    return re.sub(r'\bimport yolov5\.', 'import ', source)


def from_pypi(dest):
    with tempfile.TemporaryDirectory() as tmp:
        print(f'get_yolov5: building the tree from PyPI {PYPI_PIN}', flush=True)
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', PYPI_PIN, '-d', tmp],
                       check=True)
        wheel = next(Path(tmp).glob('yolov5-*.whl'))
        staging = Path(tmp) / 'tree'
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith('yolov5/') and not name.endswith('/'):
                    zf.extract(name, staging)
        root = staging / 'yolov5'
        (root / '__init__.py').unlink()  # a clone's root is not a package
        for py in root.rglob('*.py'):
            py.write_text(unprefix(py.read_text()))
        shutil.move(str(root), str(dest))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dest', type=Path, required=True, help='folder to create')
    parser.add_argument('--ref', default='v7.0', help='git tag or branch (v7.0 or master)')
    parser.add_argument('--source', choices=('auto', 'git', 'pypi'), default='auto',
                        help='auto: git clone, falling back to PyPI for v7.0')
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    if is_tree(dest):
        print(f'get_yolov5: {dest} already holds a YOLOv5 tree')
        return 0
    if dest.exists() and any(dest.iterdir()):
        print(f'get_yolov5: {dest} exists and is not a YOLOv5 tree; remove it or pick another --dest',
              file=sys.stderr)
        return 2
    dest.parent.mkdir(parents=True, exist_ok=True)
    if args.source in ('auto', 'git') and clone(args.ref, dest):
        print(f'get_yolov5: cloned {args.ref} into {dest}')
        return 0
    if args.source == 'git' or args.ref != 'v7.0':
        print(f'get_yolov5: cannot clone {args.ref}, and only v7.0 can be rebuilt from PyPI', file=sys.stderr)
        return 1
    from_pypi(dest)
    print(f'get_yolov5: {dest} holds YOLOv5 v7.0 from {PYPI_PIN}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
