"""Coordinate codecs for the global-pooling heads: direct regression and RLE (docs/heads.md).

Both work in normalised crop coordinates ``(x / w, y / h)`` (input pixels divided by the input size, the
same frame as SAR's ``keypoints_norm``); the RLE codec shifts them by -0.5 (the RLE frame: crop centre 0,
crop edges -0.5 and 0.5, as in the official code). ``heatmap_size`` is accepted for interface uniformity
and ignored.

Keypoint weights (``outside`` rule):

* regression (default ``drop_outside=False``): 1 for every visible, finite keypoint, *including* keypoints
  outside the crop; their targets simply lie outside [0, 1] and the L1 loss still pulls towards them.
* RLE (default ``drop_outside=True``, the official ``target_weight`` rule): additionally 0 when the keypoint
  lies outside the crop, i.e. its RLE coordinate is outside [-0.5, 0.5] on either axis.

Decoding converts back to input pixels. Regression scores are 1; RLE scores are ``1 - mean(sigma)`` over
the two axes. Flip test: decode both passes, mirror the flipped pass with ``x -> w - 1 - x`` (input pixels;
``-x - 1/w`` in the RLE frame), permute keypoints with ``flip_indices``, average coordinates and scores
(for RLE averaging the scores is averaging the sigmas).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sar.codecs.base import size_pair
from sar.codecs.flip import CoordinateFlip, HeadOutputs, merge_flip

__all__ = ["RLECodec", "RegressionCodec", "merge_flip"]


class RegressionCodec(CoordinateFlip):
    """Direct-regression codec.

    ``encode`` -> ``keypoints_norm`` (K,2) = keypoints / input_size (0 where the weight is 0) and
    ``keypoint_weights`` (K,). ``decode({"coords": (B,K,2) normalised})`` -> input px, scores 1.

    Args:
        input_size: crop-input size ``(w, h)`` pixels.
        heatmap_size: ignored (kept for the common codec interface).
        drop_outside: give weight 0 to keypoints outside the crop (see module docstring).
    """

    offset: float = 0.0  # frame shift: target = keypoints / input_size - offset
    target_key: str = "keypoints_norm"

    def __init__(
        self, input_size: Sequence[int], heatmap_size: Sequence[int], drop_outside: bool = False
    ) -> None:
        self.input_size = size_pair(input_size)
        self.heatmap_size = size_pair(heatmap_size)
        if min(self.input_size) <= 0:
            raise ValueError(f"input size must be positive: {self.input_size}")
        self.drop_outside = bool(drop_outside)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.input_size}, drop_outside={self.drop_outside})"

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
        finite = np.isfinite(kp).all(axis=1)
        norm = np.where(finite[:, None], kp, 0.0) / np.asarray(self.input_size, dtype=np.float64)
        weights = (np.asarray(visible).reshape(-1) > 0) & finite
        if self.drop_outside:
            weights &= ((norm >= 0.0) & (norm <= 1.0)).all(axis=1)
        target = np.where(weights[:, None], norm - self.offset, 0.0)
        return {self.target_key: target.astype(np.float32), "keypoint_weights": weights.astype(np.float32)}

    def _to_pixels(self, coords: torch.Tensor) -> torch.Tensor:
        return (coords.float() + self.offset) * coords.new_tensor(self.input_size, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self._to_pixels(outputs["coords"])
        return coords, torch.ones(coords.shape[:2], dtype=coords.dtype, device=coords.device)


class RLECodec(RegressionCodec):
    """RLE codec: targets ``keypoints_rle`` (K,2) = keypoints / input_size - 0.5 and ``keypoint_weights``.

    ``decode({"coords": (B,K,2) RLE frame, "sigma": (B,K,2)})`` -> input px and scores ``1 - mean(sigma)``.
    ``drop_outside`` defaults to True (official RLE weight rule).
    """

    offset = 0.5
    target_key = "keypoints_rle"

    def __init__(
        self, input_size: Sequence[int], heatmap_size: Sequence[int], drop_outside: bool = True
    ) -> None:
        super().__init__(input_size, heatmap_size, drop_outside=drop_outside)

    @torch.no_grad()
    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self._to_pixels(outputs["coords"])
        return coords, 1.0 - outputs["sigma"].float().mean(dim=-1)
