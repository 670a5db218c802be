"""Heads: forward only, a dict of raw tensors out (no loss, no decoding)."""

from sar.models.heads.heatmap import HeatmapHead
from sar.models.heads.sar import FOCAL_PRIOR_BIAS, SARHead

__all__ = ["FOCAL_PRIOR_BIAS", "HeatmapHead", "SARHead"]
