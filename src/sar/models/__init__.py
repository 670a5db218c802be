"""Models: timm backbones, necks, forward-only heads and losses."""

from sar.models.backbones import TimmBackbone, build_backbone, load_backbone_weights
from sar.models.flow import RealNVP
from sar.models.heads import HeatmapHead, HeatmapOffsetHead, RegressionHead, RLEHead, SARHead
from sar.models.losses import (
    HeatmapMSELoss,
    HeatmapOffsetLoss,
    L1CoordLoss,
    RLELoss,
    SARLoss,
    build_loss,
)
from sar.models.necks import DeconvNeck

__all__ = [
    "DeconvNeck",
    "HeatmapHead",
    "HeatmapMSELoss",
    "HeatmapOffsetHead",
    "HeatmapOffsetLoss",
    "L1CoordLoss",
    "RLEHead",
    "RLELoss",
    "RealNVP",
    "RegressionHead",
    "SARHead",
    "SARLoss",
    "TimmBackbone",
    "build_backbone",
    "build_loss",
    "load_backbone_weights",
]
