"""Environment that switches off every YOLOv5 network touchpoint (fonts, default weights, dataset zips, pip).

    eval "$(yolov5-mnv4 offline)"     # then run train.py / val.py / detect.py / export.py

Covers: pip auto-install (v7.0 and ultralytics' checker), the Arial.ttf download (a local font is
put in YOLOV5_CONFIG_DIR), ultralytics' online probe and settings file, wandb, matplotlib's cache,
and torch>=2.6's weights_only load that v7.0's checkpoint loading trips over. Default weights and
dataset zips are avoided by the command lines themselves (--weights '' and local data YAMLs).
"""
import os
import shutil
from pathlib import Path

DEFAULT_STATE = Path(os.environ.get('YOLOV5_MNV4_STATE', Path.home() / '.cache' / 'yolov5-mnv4'))


def _local_font():
    import matplotlib
    return Path(matplotlib.get_data_path()) / 'fonts' / 'ttf' / 'DejaVuSans.ttf'


def offline_env(state_dir=DEFAULT_STATE, base=None):
    """A copy of `base` (default os.environ) with YOLOv5's network touchpoints switched off."""
    state = Path(state_dir).resolve()
    config = state / 'yolov5-config'
    config.mkdir(parents=True, exist_ok=True)
    for font in ('Arial.ttf', 'Arial.Unicode.ttf'):
        if not (config / font).exists():
            shutil.copyfile(_local_font(), config / font)
    env = dict(os.environ if base is None else base)
    env.update({
        'YOLOv5_AUTOINSTALL': 'false', 'YOLO_AUTOINSTALL': 'false', 'YOLO_OFFLINE': 'true',
        'YOLOV5_CONFIG_DIR': str(config), 'YOLO_CONFIG_DIR': str(state / 'ultralytics'),
        'MPLCONFIGDIR': str(state / 'matplotlib'), 'WANDB_MODE': 'disabled',
        'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1', 'GIT_TERMINAL_PROMPT': '0',
    })
    return env


def set_offline_defaults():
    """Switch YOLOv5's network touchpoints off in this process, where the user has not set them."""
    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
