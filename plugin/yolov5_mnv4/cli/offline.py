"""`yolov5-mnv4 offline`: shell exports that switch off YOLOv5's network touchpoints."""
import argparse
import sys

from .. import __version__
from ..hosts.offline import offline_env


def main(argv=None, prog='yolov5-mnv4 offline'):
    parser = argparse.ArgumentParser(prog=prog, description='Print shell exports that switch off YOLOv5\'s network '
                                     'touchpoints: eval "$(yolov5-mnv4 offline)"')
    parser.add_argument('--version', action='version', version=f'yolov5-mnv4 {__version__}')
    parser.parse_args(argv)
    env = offline_env()
    for key in ('YOLOv5_AUTOINSTALL', 'YOLO_AUTOINSTALL', 'YOLO_OFFLINE', 'YOLOV5_CONFIG_DIR', 'YOLO_CONFIG_DIR',
                'MPLCONFIGDIR', 'WANDB_MODE', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', 'GIT_TERMINAL_PROMPT'):
        print(f"export {key}='{env[key]}'")


if __name__ == '__main__':
    sys.exit(main())
