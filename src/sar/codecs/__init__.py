"""Codecs: one configured object encodes training targets (data workers) and decodes head outputs.

``build_codec(cfg)`` instantiates a codec config: ``_target_`` (the codec class), ``input_size`` ``[w, h]``,
``heatmap_size`` ``[W, H]`` (ignored by the coordinate codecs) and the class's own keys, whose values live in
the head's YAML (conf/heads/<family>/<head>.yaml). Configs of the old ``type:`` form (checkpoints written before
the ``_target_`` composition) are translated, with the values code used to fill in (:data:`LEGACY_DEFAULTS`).
See docs/contracts.md for the interface and docs/heads.md for each head/codec pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from sar.codecs.flip import FlipIndices, HeadOutputs
from sar.codecs.heatmap import MSRAHeatmapCodec
from sar.codecs.heatmap_offset import HeatmapOffsetCodec
from sar.codecs.regression import RegressionCodec, RLECodec
from sar.codecs.sar import SARCodec

__all__ = [
    "Codec",
    "HeatmapOffsetCodec",
    "MSRAHeatmapCodec",
    "RLECodec",
    "RegressionCodec",
    "SARCodec",
    "build_codec",
]


@runtime_checkable
class Codec(Protocol):
    """Structural interface every codec implements (docs/contracts.md)."""

    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]: ...

    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_flip(self, outputs: HeadOutputs, flipped_outputs: HeadOutputs,
                    flip_indices: FlipIndices) -> tuple[torch.Tensor, torch.Tensor]: ...


#: Codec ``type`` names of configs written before codecs were built by ``_target_`` (old checkpoints).
LEGACY_TYPES: dict[str, str] = {
    "sar": "sar.codecs.sar.SARCodec",
    "msra_heatmap": "sar.codecs.heatmap.MSRAHeatmapCodec",
    "heatmap_offset": "sar.codecs.heatmap_offset.HeatmapOffsetCodec",
    "regression": "sar.codecs.regression.RegressionCodec",
    "rle": "sar.codecs.regression.RLECodec",
}
#: The values those old configs got from code when their file did not set them.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sar": {"sigma": 3.0, "score": "selector"},
    "msra_heatmap": {"sigma": 2.0, "unbiased": True, "blur_kernel": None},
    "heatmap_offset": {"sigma": 3.0},
    "regression": {"drop_outside": False},
    "rle": {"drop_outside": True},
}


def translate_legacy(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A codec config of the old ``type:`` form as a ``_target_`` config (others are returned as they are)."""
    from sar.utils.instantiate import from_legacy_type

    return from_legacy_type(cfg, LEGACY_TYPES, "codec", LEGACY_DEFAULTS)


def build_codec(cfg: Mapping[str, Any], **sizes: Any) -> Codec:
    """Instantiate a codec config (``_target_`` + its keys; ``input_size`` / ``heatmap_size`` may come in the
    config or as keyword arguments). The codec's class validates its keys: a misspelt one is an error naming it."""
    from sar.utils.instantiate import build

    cfg = {**translate_legacy(cfg), **sizes}
    for key in ("input_size", "heatmap_size"):
        if key not in cfg:
            raise ValueError(f"codec config needs {key!r}")
    return build(cfg, "head.codec")
