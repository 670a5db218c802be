"""SAR head: selector logits, normalised offsets and auxiliary heatmap logits (docs/method.md, "Head")."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FOCAL_PRIOR_BIAS", "SARHead"]

FOCAL_PRIOR_BIAS: float = -math.log((1.0 - 0.01) / 0.01)  # about -4.595, sigmoid = 0.01


class SARHead(nn.Module):
    """Three 1x1 convolutions on the (deconv) feature map (B,C,H,W).

    ``forward`` returns ``{"logits": (B,K,H,W), "offsets": (B,K,2,H,W), "heatmap": (B,K,H,W)}`` (no
    ``heatmap`` when ``with_heatmap=False``). Offsets are in normalised units (fractions of W and H); offset
    channel ``2k`` is the x and ``2k + 1`` the y of keypoint ``k``. The keypoint hypothesis of a cell is
    ``grid - offset``. Init: weights Normal(0, 0.001); logit and heatmap biases at the focal prior
    ``-log(0.99 / 0.01)``; offset bias 0, so every hypothesis starts on its own cell with uniform weights.
    """

    def __init__(self, in_channels: int, num_keypoints: int, with_heatmap: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.with_heatmap = with_heatmap
        self.logit_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.offset_conv = nn.Conv2d(in_channels, 2 * num_keypoints, 1)
        self.heatmap_conv = nn.Conv2d(in_channels, num_keypoints, 1) if with_heatmap else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.logit_conv, self.offset_conv, self.heatmap_conv):
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.001)
        nn.init.constant_(self.logit_conv.bias, FOCAL_PRIOR_BIAS)
        nn.init.zeros_(self.offset_conv.bias)
        if self.heatmap_conv is not None:
            nn.init.constant_(self.heatmap_conv.bias, FOCAL_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = {
            "logits": self.logit_conv(x),
            "offsets": self.offset_conv(x).reshape(b, self.num_keypoints, 2, h, w),
        }
        if self.heatmap_conv is not None:
            out["heatmap"] = self.heatmap_conv(x)
        return out
