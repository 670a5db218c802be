"""Heatmap head (SimpleBaseline / HRNet): one 1x1 convolution to K heatmaps."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HeatmapHead"]


class HeatmapHead(nn.Module):
    """``forward(x (B,C,H,W)) -> {"heatmap": (B,K,H,W)}``; weights Normal(0, 0.001), bias 0."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.final_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.final_conv.weight, std=0.001)
        nn.init.zeros_(self.final_conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.final_conv(x)}
