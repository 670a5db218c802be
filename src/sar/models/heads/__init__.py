"""Heads: forward only, a dict of raw tensors out (no loss, no decoding). See docs/heads.md."""

from sar.models.heads.heatmap import HeatmapHead
from sar.models.heads.heatmap_offset import HeatmapOffsetHead
from sar.models.heads.regression import NormLinear, RegressionHead, RLEHead
from sar.models.heads.sar import FOCAL_PRIOR_BIAS, SARHead

__all__ = [
    "FOCAL_PRIOR_BIAS",
    "HeatmapHead",
    "HeatmapOffsetHead",
    "NormLinear",
    "RLEHead",
    "RegressionHead",
    "SARHead",
]
