"""`yolov5-mnv4 apply`: register the plugin in a YOLOv5 checkout, or take it out again (`--revert`).

    yolov5-mnv4 apply /path/to/yolov5            # also: yolov5-mnv4-apply /path/to/yolov5
    yolov5-mnv4 apply /path/to/yolov5 --revert
    yolov5-mnv4 apply /path/to/yolov5 --force    # also replace configs you edited, saving a .bak copy

What applying changes, and what it never touches: yolov5_mnv4.hosts.yolov5_tree.
"""
import argparse
import sys
from pathlib import Path

from .. import __version__
from ..hosts.yolov5_tree import ApplyError, apply, numpy_conflict


def main(argv=None, prog='yolov5-mnv4-apply'):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split('\n')[0])
    parser.add_argument('yolov5', type=Path, help='path to a YOLOv5 checkout (v7.0 or master)')
    parser.add_argument('--revert', action='store_true', help='remove the plugin, restoring the tree')
    parser.add_argument('--force', action='store_true',
                        help='also replace configs in models/mnv4 that you edited, after saving each as <name>.bak')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    args = parser.parse_args(argv)
    if args.force and args.revert:
        parser.error('--force applies only when applying: --revert never deletes a config you edited')
    try:
        outcome = apply(args.yolov5, args.revert, args.force)
    except ApplyError as err:
        print(f'{prog}: {err}; nothing was changed', file=sys.stderr)
        return 2
    action = 'reverted' if args.revert else 'applied'
    if outcome.changed:
        print(f'yolov5-mnv4 {action} in {args.yolov5}: ' + ', '.join(outcome.changed))
    else:
        print(f'yolov5-mnv4 already {action} in {args.yolov5}: nothing to change')
    conflict = None if args.revert else numpy_conflict(args.yolov5)
    if conflict:
        print(f'{prog}: warning: {conflict}', file=sys.stderr)
    for backup in outcome.backups:
        print(f'{prog}: saved your version of {backup[:-len(Path(backup).suffix)]} as {backup}')
    for rel in outcome.kept:
        what = 'left in place' if args.revert else 'not replaced'
        hint = '' if args.revert else '; --force replaces it after saving a copy as .bak'
        print(f'{prog}: kept {rel}: it differs from every version yolov5-mnv4 shipped (your edits?), '
              f'so it was {what}{hint}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())

