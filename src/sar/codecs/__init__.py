"""Codecs: one configured object encodes training targets (data workers) and decodes head outputs.

``build_codec(cfg)`` reads ``type`` ("sar" | "msra_heatmap" | "heatmap_offset" | "regression" | "rle"),
``input_size`` ``[w, h]``, ``heatmap_size`` ``[W, H]`` (ignored by the coordinate codecs) and the per-codec
keys: ``sigma`` (sar, heatmap_offset and msra_heatmap; default 3 for SAR and heatmap_offset as in the
released SAR configs, 2 for the heatmap codec), ``unbiased`` and ``blur_kernel`` (heatmap codec only),
``drop_outside`` (regression, default false; rle, default true). Unknown keys raise ``ValueError``.
See docs/contracts.md for the interface and docs/heads.md for each head/codec pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

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

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_flip(
        self,
        outputs: dict[str, torch.Tensor],
        flipped_outputs: dict[str, torch.Tensor],
        flip_indices: Sequence[int] | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


_KEYS: dict[str, set[str]] = {
    "sar": {"sigma", "score"},
    "msra_heatmap": {"sigma", "unbiased", "blur_kernel"},
    "heatmap_offset": {"sigma"},
    "regression": {"drop_outside"},
    "rle": {"drop_outside"},
}


def build_codec(cfg: Mapping[str, Any]) -> Codec:
    """Build a codec from a config mapping (see module docstring)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in _KEYS:
        raise ValueError(f"unknown codec type {kind!r} (known: {', '.join(sorted(_KEYS))})")
    try:
        input_size = [int(v) for v in cfg.pop("input_size")]
        heatmap_size = [int(v) for v in cfg.pop("heatmap_size")]
    except KeyError as err:
        raise ValueError(f"codec config needs {err.args[0]!r}") from err
    unknown = set(cfg) - _KEYS[kind]
    if unknown:
        raise ValueError(
            f"unknown keys for codec {kind!r}: {sorted(unknown)} (allowed: {sorted(_KEYS[kind])})"
        )
    if kind == "sar":
        return SARCodec(input_size, heatmap_size, sigma=float(cfg.get("sigma", 3.0)),
                        score=str(cfg.get("score", "selector")))
    if kind == "heatmap_offset":
        return HeatmapOffsetCodec(input_size, heatmap_size, sigma=float(cfg.get("sigma", 3.0)))
    if kind == "regression":
        return RegressionCodec(input_size, heatmap_size, drop_outside=bool(cfg.get("drop_outside", False)))
    if kind == "rle":
        return RLECodec(input_size, heatmap_size, drop_outside=bool(cfg.get("drop_outside", True)))
    blur = cfg.get("blur_kernel")
    return MSRAHeatmapCodec(
        input_size,
        heatmap_size,
        sigma=float(cfg.get("sigma", 2.0)),
        unbiased=bool(cfg.get("unbiased", True)),
        blur_kernel=None if blur is None else int(blur),
    )
