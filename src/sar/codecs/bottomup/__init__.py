"""Bottom-up (multi-person) codecs, one per head of docs/bottomup.md: ``encode`` a PersonSet to fixed-shape
targets, ``decode`` the head's raw outputs to per-image poses (M,K,3) and instance scores (M,)."""

from sar.codecs.bottomup.center import DEKRCodec, SARCenterCodec
from sar.codecs.bottomup.grouping import AECodec, SARAECodec

__all__ = ["AECodec", "DEKRCodec", "SARAECodec", "SARCenterCodec"]
