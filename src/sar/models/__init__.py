"""Models: timm backbones, necks, forward-only heads and losses."""

from sar.models.backbones import TimmBackbone, build_backbone, load_backbone_weights
from sar.models.heads import HeatmapHead, SARHead
from sar.models.losses import HeatmapMSELoss, SARLoss, build_loss
from sar.models.necks import DeconvNeck

__all__ = [
    "DeconvNeck",
    "HeatmapHead",
    "HeatmapMSELoss",
    "SARHead",
    "SARLoss",
    "TimmBackbone",
    "build_backbone",
    "build_loss",
    "load_backbone_weights",
]
