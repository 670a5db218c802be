"""Heatmap + offset head (docs/heads.md): SAR's output layout, trained with separate losses."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HeatmapOffsetHead"]


class HeatmapOffsetHead(nn.Module):
    """Two 1x1 convolutions on the (deconv) feature map (B,C,H,W).

    ``forward`` returns ``{"heatmap": (B,K,H,W), "offsets": (B,K,2,H,W)}``. The heatmap is a plain regression
    output (trained with MSE against the MSRA Gaussian, no sigmoid); the offsets use SAR's convention:
    normalised units (fractions of W and H), offset channel ``2k`` is the x and ``2k + 1`` the y of keypoint
    ``k``, and the keypoint read at cell ``p = (j/W, i/H)`` is ``p - offset``. Init: weights Normal(0, 0.001),
    biases 0 (so the heatmap starts at 0 and every cell's hypothesis sits on the cell itself).
    """

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.heatmap_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.offset_conv = nn.Conv2d(in_channels, 2 * num_keypoints, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.heatmap_conv, self.offset_conv):
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        return {
            "heatmap": self.heatmap_conv(x),
            "offsets": self.offset_conv(x).reshape(b, self.num_keypoints, 2, h, w),
        }
