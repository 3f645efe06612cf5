"""`python -m yolov5_mnv4`: the `yolov5-mnv4` command (yolov5_mnv4.cli.main)."""
import sys

from .cli.main import main

if __name__ == '__main__':
    sys.exit(main())
