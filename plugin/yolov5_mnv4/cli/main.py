"""yolov5-mnv4: one command line for the plugin (also `python -m yolov5_mnv4`).

    yolov5-mnv4 apply /path/to/yolov5          register the plugin in a YOLOv5 checkout (--revert removes it)
    yolov5-mnv4 convert --cfg ... --timm ...   a YOLOv5 weights file whose backbone comes from timm
    yolov5-mnv4 export --weights best.pt ...   int8 TFLite with float attention; NCNN, MNN, ExecuTorch
    yolov5-mnv4 qat --weights best.pt --data data.yaml ...   quantization-aware training into int8 ExecuTorch, ONNX, LiteRT
    yolov5-mnv4 demo --yolov5 /path/to/yolov5  train, validate, detect and export on the embedded data
    yolov5-mnv4 offline                        shell exports that switch off YOLOv5's network access
    yolov5-mnv4 check [--yolov5 PATH]          the environment, for a bug report
    yolov5-mnv4 yolo train model=yolo11n-mnv4-conv-s.yaml ...   the Ultralytics package's `yolo` with the plugin
    yolov5-mnv4 benchmark [--quick]            latency of the MNv4 detectors beside yolov5n/s on this device
"""
import importlib
import sys

from .. import __version__

# command: (module, one-line summary); each module has main(argv) and imports torch only if it needs it
COMMANDS = {
    'apply': ('apply', 'register the plugin in a YOLOv5 checkout, or --revert it'),
    'convert': ('convert', 'write a YOLOv5 weights file whose MobileNetV4 backbone comes from timm'),
    'export': ('export', 'int8 TFLite with float attention; NCNN, MNN and ExecuTorch, checked against PyTorch'),
    'qat': ('qat', 'quantization-aware training of a detector, then int8 ExecuTorch, ONNX and LiteRT exports'),
    'demo': ('demo', 'train, validate, detect and export an MNv4 detector on the embedded data'),
    'offline': ('offline', "print shell exports that switch off YOLOv5's network touchpoints"),
    'check': ('check', 'print the plugin, torch, YOLOv5 and runtime versions, for a bug report'),
    'yolo': ('yolo', "the Ultralytics package's yolo command with the MobileNetV4 configs and layers"),
    'benchmark': ('benchmark', 'time MobileNetV4 detectors beside their stock twins in every runtime installed here'),
}


def usage():
    lines = [f'usage: yolov5-mnv4 <command> [options]   (yolov5-mnv4 {__version__})', '', 'commands:']
    lines += [f'  {name:<9} {summary}' for name, (_, summary) in COMMANDS.items()]
    lines += ['', 'yolov5-mnv4 <command> --help shows the options of one command.']
    return '\n'.join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(usage())
        return 0
    if argv[0] == '--version':
        print(f'yolov5-mnv4 {__version__}')
        return 0
    if argv[0] not in COMMANDS:
        print(f'yolov5-mnv4: unknown command {argv[0]!r}\n\n{usage()}', file=sys.stderr)
        return 2
    module = importlib.import_module(f'.{COMMANDS[argv[0]][0]}', __package__)
    return module.main(argv[1:], prog=f'yolov5-mnv4 {argv[0]}')


if __name__ == '__main__':
    sys.exit(main())
