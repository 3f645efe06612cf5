"""`yolov5-mnv4 yolo ...`: the Ultralytics package's `yolo` command with the plugin loaded, so that

    yolov5-mnv4 yolo train model=yolo11n-mnv4-conv-s.yaml data=coco8.yaml epochs=1

trains, validates, predicts and exports MobileNetV4 models with every option `yolo` has. A wrapper,
not a start-up hook: the plain `yolo` command runs the package untouched, and a Python script gets
the same by importing `yolov5_mnv4` before it builds a model.
"""
import importlib.util
import sys

from ..resources import install_hint


def main(argv=None, prog='yolov5-mnv4 yolo'):
    argv = sys.argv[1:] if argv is None else list(argv)
    if importlib.util.find_spec('ultralytics') is None:
        print(f'{prog}: the Ultralytics package is not installed ({install_hint("ultralytics")})',
              file=sys.stderr)
        return 1
    if 'ultralytics.utils' in sys.modules:  # it reads its command line (ARGV) once, on import
        print(f'{prog}: the Ultralytics package was imported before its command line was set', file=sys.stderr)
        return 2
    saved, sys.argv = sys.argv, ['yolo', *argv]
    try:
        from ultralytics.cfg import entrypoint

        import yolov5_mnv4  # noqa: F401 (arms the hook; it registers when ultralytics.nn.tasks is imported)
        entrypoint()
    finally:
        sys.argv = saved
    return 0


if __name__ == '__main__':
    sys.exit(main())
