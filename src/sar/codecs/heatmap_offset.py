"""Heatmap + offset codec (the SAR ablation counterpart; docs/heads.md).

Targets are exactly the SAR codec's: ``keypoints_norm`` (K,2) = keypoints / input_size, ``heatmap`` (K,H,W)
MSRA Gaussian (sigma from the config, centred on the integer cell ``int(x / stride + 0.5)``, 3-sigma window)
and ``keypoint_weights`` (K,).

Decoding: per keypoint the heatmap argmax cell ``t* = (i, j)``; the keypoint is the regressed hypothesis at
that cell, ``p_t* - o_t*`` with ``p = (j / W, i / H)`` (SAR's convention), in input pixels; the score is the
heatmap maximum. Flip test (inherited from :class:`SARCodec`): decode both passes, mirror the flipped one
with ``x -> w - 1 - x``, swap left/right keypoints, average coordinates and scores.
"""

from __future__ import annotations

import torch

from sar.codecs.flip import HeadOutputs
from sar.codecs.sar import SARCodec, hypothesis_at

__all__ = ["HeatmapOffsetCodec", "hypothesis_at"]


class HeatmapOffsetCodec(SARCodec):
    """Heatmap + offset codec; same constructor, targets and flip test as :class:`SARCodec`."""

    @torch.no_grad()
    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (B,K,2) input px, scores (B,K) from ``heatmap`` (B,K,H,W) and ``offsets`` (B,K,2,H,W)."""
        heatmap = outputs["heatmap"].float()
        h, w = heatmap.shape[-2:]
        scores, idx = heatmap.flatten(2).max(dim=-1)
        norm = hypothesis_at(outputs["offsets"].float(), idx, w, h)
        return norm * norm.new_tensor(self.input_size), scores
