"""One MobileNetV4 stage as a host's layer: what a YOLOv5 or an Ultralytics-package stage shares.
Each host module subclasses it with the little its own model code needs (see yolov5.py and
ultralytics.py beside it); this module knows no host."""
import torch.nn as nn

from ..model import build_stage, to_channels_last
from ..pretrained import load_stage_weights
from ..specs import get_variant


class BackboneStage(nn.Sequential):
    """Stage `index` of `variant` (0 stem, 1-4 the /4../32 stages), built for the (c1, c2) a host's
    parse_model computed, which must be the spec's; `weights` names a pretrained source (timm)."""

    def __init__(self, c1, c2, variant, index, weights=None):
        spec = get_variant(variant)
        widths = spec.stage_out_channels()
        if index > 0 and c1 != widths[index - 1]:
            raise ValueError(f'MobileNetV4 {spec.name} stage {index} expects {widths[index - 1]} input '
                             f'channels, parse_model gave {c1}: its row must follow stage {index - 1}')
        if c2 != widths[index]:
            raise ValueError(f'MobileNetV4 {spec.name} stage {index} has {widths[index]} output channels but '
                             f'parse_model made it {c2}: width_multiple/channel_multiple must keep multiples '
                             f'of 8 unchanged')
        super().__init__(*build_stage(spec, index, c1))
        self.variant, self.index, self.pretrained = spec.name, index, weights
        if weights:
            load_stage_weights(self, weights)

    def forward(self, x):
        return super().forward(to_channels_last(x) if self.index == 0 else x)

    @property
    def conv(self):
        """The stage's first convolution. Where YOLOv5's ClassificationModel(model=<detection model>,
        cutoff=k) (classify/train.py --model best.pt --cutoff k) cuts, it sizes the Classify head that
        replaces the last kept layer from `layer.conv.in_channels` (or `.cv1.conv`)."""
        return next(m for m in self.modules() if isinstance(m, nn.Conv2d))

    def train(self, mode=True):
        """A stage whose parameters are all frozen (train.py --freeze, the package's freeze=) stays in
        eval mode: its BatchNorm statistics keep the values its weights were trained with, as a frozen
        pretrained backbone needs (in train mode they would drift towards the new data's every batch)."""
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.parameters()):
            super().train(False)
        return self


def load_pretrained_backbones(model, log):
    """Reload every stage that names a weights source (after a host's initialize_weights reset their
    BatchNorms), log one line per backbone, then forget the source, on the stages and in the model's
    yaml (which checkpoints keep: a checkpoint rebuilt from it takes its weights from itself)."""
    from .rows import without_pretrained

    loaded = {}
    for m in model.modules():
        if isinstance(m, BackboneStage) and m.pretrained:
            key = (m.variant, str(m.pretrained))
            loaded[key] = loaded.get(key, 0) + load_stage_weights(m, m.pretrained)
            m.pretrained = None
    for (variant, source), count in loaded.items():
        log.info(f'MobileNetV4 {variant} backbone: {count} pretrained tensors loaded from {source}')
    if loaded and isinstance(getattr(model, 'yaml', None), dict):
        model.yaml = without_pretrained(model.yaml)
