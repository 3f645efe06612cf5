"""The runtimes that YOLOv5's export.py does not know, in one place for the commands and the tests:
the table and runner protocol (formats), and each format's converter and runner (ncnn, mnn,
executorch; onnx, which MNN converts from)."""
from .executorch import ExecuTorchModel, export_executorch, quantize_pt2e  # noqa: F401
from .formats import EXTRA, FORMATS, PACKAGES, TABLE, Format, MissingRuntime, Runner, load, require  # noqa: F401
from .images import write_pngs  # noqa: F401
from .mnn import MNN_FEATURE_METHOD, MNNModel, export_mnn, mnn_quant_config  # noqa: F401
from .ncnn import NCNN_FILES, NCNNModel, export_ncnn, trace  # noqa: F401
from .onnx import onnx_file  # noqa: F401
