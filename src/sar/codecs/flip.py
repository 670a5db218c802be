"""Flip-test mechanics shared by the codecs (docs/design.md, "Flip test lives in the codec").

Every codec brings the pass on the mirrored image back the same way: left/right partners are swapped
(:func:`swap_pairs`) and x is mirrored. What differs is *when* the two passes are merged, which stays each
codec's own rule:

* :class:`CoordinateFlip` (SAR, heatmap+offset, regression, RLE): both passes are decoded to input pixels first,
  then the mirrored one is mirrored back (``x -> w - 1 - x``) and coordinates and scores are averaged
  (:func:`merge_flip`);
* the MSRA heatmap codec averages the flipped-back *heatmaps* and decodes once
  (:meth:`sar.codecs.heatmap.MSRAHeatmapCodec.decode_flip`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch

__all__ = ["CoordinateFlip", "FlipIndices", "HeadOutputs", "merge_flip", "swap_pairs"]

#: Head outputs as a codec decodes them (name -> batched tensor).
HeadOutputs: TypeAlias = dict[str, torch.Tensor]
#: A keypoint permutation: ``flip_indices[k]`` is the mirror partner of keypoint ``k`` (``k`` itself if none).
FlipIndices: TypeAlias = Sequence[int] | torch.Tensor


def swap_pairs(values: torch.Tensor, flip_indices: FlipIndices) -> torch.Tensor:
    """``values`` (B,K,...) with left/right partners swapped: keypoint ``k`` takes
    ``values[:, flip_indices[k]]``."""
    index = torch.as_tensor(flip_indices, dtype=torch.long, device=values.device)
    return values.index_select(1, index)


def merge_flip(
    coords: torch.Tensor,
    scores: torch.Tensor,
    f_coords: torch.Tensor,
    f_scores: torch.Tensor,
    flip_indices: FlipIndices,
    input_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a pass with a mirrored pass (both decoded to input px): mirror x, swap pairs, average."""
    f_coords = swap_pairs(f_coords, flip_indices)
    f_scores = swap_pairs(f_scores, flip_indices)
    f_coords = torch.stack([(input_width - 1) - f_coords[..., 0], f_coords[..., 1]], dim=-1)
    return 0.5 * (coords + f_coords), 0.5 * (scores + f_scores)


class CoordinateFlip:
    """``decode_flip`` for codecs that merge the two passes as decoded coordinates (:func:`merge_flip`).

    The codec provides ``decode(outputs) -> (coords (B,K,2) input px, scores (B,K))`` and ``input_size``.
    """

    input_size: tuple[int, int]

    def decode(self, outputs: HeadOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def decode_flip(self, outputs: HeadOutputs, flipped_outputs: HeadOutputs,
                    flip_indices: FlipIndices) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip test at coordinate level: both passes are decoded independently, the mirrored pass's x (input
        pixels) is mapped back with ``x -> w - 1 - x``, keypoints are permuted with ``flip_indices`` (keypoint
        ``k`` takes the mirrored pass's ``flip_indices[k]``), and coordinates and scores are averaged."""
        coords, scores = self.decode(outputs)
        f_coords, f_scores = self.decode(flipped_outputs)
        return merge_flip(coords, scores, f_coords, f_scores, flip_indices, self.input_size[0])
