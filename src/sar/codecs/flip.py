"""Coordinate-level flip-test merge shared by the codecs that decode each pass to coordinates first
(SAR, heatmap+offset, regression, RLE)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["merge_flip"]


def merge_flip(
    coords: torch.Tensor,
    scores: torch.Tensor,
    f_coords: torch.Tensor,
    f_scores: torch.Tensor,
    flip_indices: Sequence[int] | torch.Tensor,
    input_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a pass with a mirrored pass (both decoded to input px): mirror x, swap pairs, average."""
    index = torch.as_tensor(flip_indices, dtype=torch.long, device=coords.device)
    f_coords = f_coords.index_select(1, index)
    f_scores = f_scores.index_select(1, index)
    f_coords = torch.stack([(input_width - 1) - f_coords[..., 0], f_coords[..., 1]], dim=-1)
    return 0.5 * (coords + f_coords), 0.5 * (scores + f_scores)
