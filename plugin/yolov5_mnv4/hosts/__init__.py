"""The hosts: what ties the MobileNetV4 core to YOLOv5 (`yolov5`, its TensorFlow export's Keras copies
in `yolov5_keras`, the tree it patches in `yolov5_tree`) and to the Ultralytics package
(`ultralytics`), and what both share (`rows`: the backbone row; `stage`: a stage as a host's layer;
`import_hook`: registration when a host is imported; `offline`: their network switches). Importing
this package imports nothing heavy."""
