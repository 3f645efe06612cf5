"""What quantization-aware training needs from the Ultralytics package: the trainable model of a
checkpoint (`yolo train`'s best.pt; MNv4 or stock), its loss and its box decoding; the same interface
as hosts/yolov5_qat.py (see yolov5_mnv4.export.qat).

The package's Detect returns, in train mode, {'boxes', 'scores', 'feats'} (the raw per-level outputs
its loss takes); `decoder` is the Detect's own decoding (DFL, anchors, sigmoid), run in float after
the quantized graph. Its last box and class convs and the DFL conv stay float, as the package's own
`quantize=8` and NVIDIA's recipes keep them. Data: letterboxed, unaugmented batches of a YOLO data
YAML (export.qat.letterboxed_batches), since the package's loaders need a trainer.
"""
from pathlib import Path

import torch
import torch.nn as nn

from .yolov5_qat import NotADetector


def is_ultralytics_checkpoint(path):
    """Whether a .pt file pickles the Ultralytics package's models (read without unpickling)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next((n for n in archive.namelist() if n.endswith('data.pkl')), None)
            return pickled is not None and b'ultralytics.nn.tasks' in archive.read(pickled)
    except (zipfile.BadZipFile, OSError):
        return False


def yolov5_layout(y):
    """The package's detections (batch, 4 + classes, anchors) as YOLOv5 lays them out: (batch,
    anchors, 4 + 1 + classes) with an objectness of 1."""
    return torch.cat((y[:, :4], torch.ones_like(y[:, :1]), y[:, 4:]), 1).transpose(1, 2)


class UltralyticsDecoder(nn.Module):
    """The package's Detect decoding of its raw outputs, as YOLOv5 lays detections out:
    (batch, anchors, 4 + 1 + classes), xywh in pixels, an objectness of 1, class scores."""

    def __init__(self, detect):
        super().__init__()
        self.detect = detect

    def forward(self, raw):
        return yolov5_layout(self.detect._inference(raw))


class UltralyticsQATHost:
    name = 'Ultralytics'

    def __init__(self, weights):
        from ultralytics.cfg import get_cfg
        try:
            ckpt = torch.load(str(weights), map_location='cpu', weights_only=False)
        except Exception as err:  # noqa: BLE001 (a file torch cannot read: say which)
            raise NotADetector(f'{weights} is not a PyTorch checkpoint ({type(err).__name__}: {err})') from None
        model = (ckpt.get('ema') or ckpt.get('model')) if isinstance(ckpt, dict) else None
        head = model.model[-1] if model is not None and hasattr(model, 'model') else None
        if type(head).__name__ != 'Detect':
            raise NotADetector(f'{weights} holds a {type(head).__name__} head; qat fine-tunes detection checkpoints (Detect)')
        if getattr(head, 'one2one_cv2', None) is not None:
            raise NotADetector(f'{weights} has an end-to-end head (one-to-one branch, as YOLO26 and YOLOv10): '
                               'qat fine-tunes the one-to-many Detect of YOLOv5u, YOLOv8 and YOLO11 configs')
        self.model = model.float()
        self.model.requires_grad_(True)
        self.model.args = get_cfg(overrides={k: v for k, v in (ckpt.get('train_args') or {}).items()
                                             if k in ('box', 'cls', 'dfl')})
        self.detect = head
        self.names = model.names
        self.weights = Path(weights)
        self.index = len(model.model) - 1

    @property
    def float_modules(self):
        last = [f'model.{self.index}.{branch}.{i}.{len(seq) - 1}' for branch in ('cv2', 'cv3')
                for i, seq in enumerate(getattr(self.detect, branch))]
        return tuple(last) + (f'model.{self.index}.dfl.conv',)

    def decoder(self, imgsz):
        return UltralyticsDecoder(self.detect)

    def loss_of(self, model):
        criterion = model.init_criterion()

        def loss(raw, targets):
            batch = {'batch_idx': targets[:, 0], 'cls': targets[:, 1:2], 'bboxes': targets[:, 2:6]}
            return criterion(raw, batch)[0].sum()
        return loss

    def loader(self, data, imgsz, batch):
        from ..export.qat import letterboxed_batches
        return letterboxed_batches(data, imgsz, batch)

    def reference(self, model=None):
        """The eval-mode eager model (default this host's) returning its detections in the decoder's layout."""
        from ..export.qat import Detections
        return Detections(model or self.model, yolov5_layout).eval()
