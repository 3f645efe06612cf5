#!/usr/bin/env python3
"""The `yolov5-mnv4-convert` command (yolov5_mnv4.convert), for a checkout without the plugin's
console scripts on PATH: turns a timm MobileNetV4 checkpoint into a YOLOv5 weights file."""
import sys

from yolov5_mnv4.convert import main

if __name__ == '__main__':
    sys.exit(main())
