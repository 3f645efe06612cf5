"""The `yolov5-mnv4` commands: one module per command, each with `main(argv, prog)`; `main` dispatches."""
