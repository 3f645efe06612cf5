"""MobileNetV4 backbones for Ultralytics YOLOv5."""
from .model import MobileNetV4, build_stages, fuse_blocks
from .specs import VARIANTS, get_variant
from .integration import watch_pip_yolov5

watch_pip_yolov5()

__all__ = ['MobileNetV4', 'VARIANTS', 'build_stages', 'fuse_blocks', 'get_variant']
