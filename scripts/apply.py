#!/usr/bin/env python3
"""Apply (or `--revert`) yolov5-mnv4 in a YOLOv5 checkout; the same as the `yolov5-mnv4-apply` command."""
import sys

from yolov5_mnv4.apply import main

if __name__ == '__main__':
    sys.exit(main())
