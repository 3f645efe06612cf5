"""What quantization-aware training needs from YOLOv5 (a tree on sys.path, `models.yolo` registered):
the trainable model of a checkpoint, its data loader, its loss and its box decoding.

The fine-tune itself is host-free (`yolov5_mnv4.export.qat`); it sees a detector through the
`QATHost` interface below: `model` returns, in train mode, Detect's raw per-level outputs (what
YOLOv5's loss takes), and `decoder` turns those into the (batch, anchors, 5 + classes) detections
that YOLOv5's Detect returns in eval mode, in float, outside the quantized graph (the boxes in
pixels and the scores in [0, 1] would share one int8 scale otherwise).
"""
from pathlib import Path

import torch
import torch.nn as nn


class NotADetector(ValueError):
    pass


class YOLOv5Decoder(nn.Module):
    """YOLOv5's Detect decoding of raw per-level outputs (bs, anchors, ny, nx, 5 + classes) at one
    image size: sigmoid, then xy = (2 s - 0.5 + cell) * stride, wh = (2 s)^2 * anchor. The grids are
    constants of the size, so exports carry no grid arithmetic."""

    def __init__(self, detect, imgsz):
        super().__init__()
        self.levels = []
        for i, stride in enumerate(detect.stride.tolist()):
            ny, nx = int(imgsz[0] // stride), int(imgsz[1] // stride)
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32), indexing='ij')
            shape = (1, detect.na, ny, nx, 2)
            self.register_buffer(f'grid{i}', (torch.stack((xv, yv), 2).expand(shape) - 0.5).contiguous())
            anchors = (detect.anchors[i].float() * stride).view(1, detect.na, 1, 1, 2).expand(shape).contiguous()
            self.register_buffer(f'anchor_grid{i}', anchors)
            self.levels.append(float(stride))

    def forward(self, raw):
        out = []
        for i, (y, stride) in enumerate(zip(raw, self.levels)):
            bs, na, ny, nx, no = y.shape
            xy, wh, conf = y.sigmoid().split((2, 2, no - 4), 4)
            xy = (xy * 2 + getattr(self, f'grid{i}')) * stride
            wh = wh * 2
            wh = wh * wh * getattr(self, f'anchor_grid{i}')  # (2 s)^2: LiteRT's int8 converter refuses pow
            out.append(torch.cat((xy, wh, conf), 4).reshape(bs, na * ny * nx, no))
        return torch.cat(out, 1)


class YOLOv5QATHost:
    """A YOLOv5 detection checkpoint (train.py's best.pt or last.pt; stock or MNv4) ready to fine-tune."""
    name = 'YOLOv5'

    def __init__(self, weights):
        try:
            ckpt = torch.load(str(weights), map_location='cpu', weights_only=False)
        except ModuleNotFoundError as err:
            raise NotADetector(f'{weights} needs the YOLOv5 code it was trained with ({err}): pass --yolov5 /path/to/yolov5') from None
        except Exception as err:  # noqa: BLE001 (a file torch cannot read: say which)
            raise NotADetector(f'{weights} is not a PyTorch checkpoint ({type(err).__name__}: {err})') from None
        model = (ckpt.get('ema') or ckpt.get('model')) if isinstance(ckpt, dict) else None
        head = type(model.model[-1]).__name__ if hasattr(model, 'model') and isinstance(model.model, nn.Sequential) else None
        if head != 'Detect':
            what = f'a {head} head' if head else f'no YOLOv5 model (keys: {", ".join(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__})'
            raise NotADetector(f'{weights} holds {what}; qat fine-tunes YOLOv5 detection checkpoints (Detect)')
        self.model = model.float()
        self.model.requires_grad_(True)
        self.detect = model.model[-1]
        self.detect.export = False
        self.names = model.names
        self.hyp = dict(getattr(model, 'hyp', None) or self._default_hyp())
        self.model.hyp = self.hyp  # ComputeLoss reads it from the model
        self.stride = int(self.detect.stride.max())
        self.weights = Path(weights)

    @staticmethod
    def _default_hyp():
        import yaml
        from utils.general import ROOT
        return yaml.safe_load((Path(ROOT) / 'data' / 'hyps' / 'hyp.scratch-low.yaml').read_text())

    @property
    def float_modules(self):
        """The Detect's output convs (nn_module_stack names): they stay float, as do its decoding."""
        index = len(self.model.model) - 1
        return tuple(f'model.{index}.m.{i}' for i in range(len(self.detect.m)))

    def decoder(self, imgsz):
        return YOLOv5Decoder(self.detect, imgsz)

    def loss_of(self, model):
        """YOLOv5's training loss of `model` (a copy of this host's), a function of (raw outputs,
        targets) returning the batch's loss."""
        from utils.loss import ComputeLoss
        compute = ComputeLoss(model)

        def loss(raw, targets):
            return compute(raw, targets)[0]
        return loss

    def loader(self, data, imgsz, batch, split='train', workers=0, shuffle=True):
        """Batches of (images NCHW float in [0, 1], targets (n, 6): image, class, x, y, w, h normalised)
        of the data YAML's split, letterboxed to `imgsz` (square), without augmentation."""
        from utils.dataloaders import create_dataloader
        from utils.general import check_dataset
        path = check_dataset(str(data))[split]
        loader, dataset = create_dataloader(path, imgsz[0], batch, self.stride, hyp=self.hyp, augment=False,
                                            workers=workers, prefix=f'{split}: ', shuffle=shuffle)
        return ((images.float() / 255, targets) for images, targets, *_ in loader), len(loader)

    def reference(self, model=None):
        """The eval-mode eager model (default this host's) returning YOLOv5's detections, (bs,
        anchors, 5 + classes)."""
        from ..export.qat import Detections
        return Detections(model or self.model).eval()
