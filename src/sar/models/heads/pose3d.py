"""Heads of the monocular 3D task (task=pose3d; docs/pose3d.md): SAR-3D (2.5D), RLE-3D and direct 3D regression.

Forward only (raw tensors out, no loss, no decoding). Coordinates are RLE's normalised frame (u, v, d), see
:mod:`sar.codecs.pose3d`.
"""

from __future__ import annotations

import torch
from torch import nn

from sar.models.heads.regression import RLEHead
from sar.models.heads.sar import FOCAL_PRIOR_BIAS

__all__ = ["IntegralHead", "RLE3DHead", "Regression3DHead", "SAR3DHead"]


class SAR3DHead(nn.Module):
    """SAR-3D: four 1x1 convolutions on the (deconv) map (B, C, H, W): ``logits`` (B, K, H, W), ``offsets``
    (B, K, 2, H, W, normalised units as the top-down SAR head), ``depth`` (B, K, H, W: the cell's d hypothesis, no
    grid prior along depth) and, with ``with_heatmap``, the auxiliary ``heatmap`` (B, K, H, W). Init as the
    top-down head; the depth conv starts at weights Normal(0, 0.001), bias 0 (every cell says "root depth")."""

    def __init__(self, in_channels: int, num_keypoints: int, with_heatmap: bool = True) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.logit_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.offset_conv = nn.Conv2d(in_channels, 2 * num_keypoints, 1)
        self.depth_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.heatmap_conv = nn.Conv2d(in_channels, num_keypoints, 1) if with_heatmap else None
        for conv in (self.logit_conv, self.offset_conv, self.depth_conv, self.heatmap_conv):
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.001)
                nn.init.zeros_(conv.bias)
        nn.init.constant_(self.logit_conv.bias, FOCAL_PRIOR_BIAS)
        if self.heatmap_conv is not None:
            nn.init.constant_(self.heatmap_conv.bias, FOCAL_PRIOR_BIAS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = {"logits": self.logit_conv(x),
               "offsets": self.offset_conv(x).reshape(b, self.num_keypoints, 2, h, w),
               "depth": self.depth_conv(x)}
        if self.heatmap_conv is not None:
            out["heatmap"] = self.heatmap_conv(x)
        return out


class Regression3DHead(nn.Module):
    """Direct 3D regression: GAP + one FC layer -> ``{"coords": (B, K, 3)}`` (u, v, d); init weights
    Normal(0, 0.001), bias 0 (every joint starts at the crop centre, root depth)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.fc = nn.Linear(in_channels, 3 * num_keypoints)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"coords": self.fc(x.mean(dim=(2, 3))).reshape(x.shape[0], self.num_keypoints, 3)}


class RLE3DHead(RLEHead):
    """RLE-3D [C, RLE ``regression_nf_3d``]: the 2D RLE head (:class:`sar.models.heads.regression.RLEHead`: GAP, an
    L2-normalised-input FC to the coordinates and a sigmoid FC to the sigmas) with three coordinates (u, v, d):
    ``{"coords": (B, K, 3), "sigma": (B, K, 3)}``. The flows belong to the loss."""

    dims = 3


class IntegralHead(nn.Module):
    """Integral pose regression (Sun et al. 2018; RLE's Table 8 "Integral pose"): a 1x1 conv to K x D volumetric
    heatmap logits on the (deconv) map, a softmax over each joint's D x H x W volume and its expectation (soft-argmax):
    ``u = E[j / W] - 0.5``, ``v = E[i / H] - 0.5`` (the SAR grid convention) and ``d = E[(z + 0.5) / D] - 0.5``
    (depth bins spanning [-0.5, 0.5] of RLE's frame). ``{"coords": (B, K, 3)}``: trained with the direct 3D L1 loss
    and decoded as direct regression. ``depth_bins``: D (64 in Sun et al.)."""

    def __init__(self, in_channels: int, num_keypoints: int, depth_bins: int = 64) -> None:
        super().__init__()
        self.num_keypoints, self.depth_bins = num_keypoints, int(depth_bins)
        self.conv = nn.Conv2d(in_channels, num_keypoints * self.depth_bins, 1)
        nn.init.normal_(self.conv.weight, std=0.001)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        k, d = self.num_keypoints, self.depth_bins
        prob = torch.softmax(self.conv(x).reshape(b, k, d * h * w), dim=-1).reshape(b, k, d, h, w)
        zs = (torch.arange(d, device=x.device, dtype=prob.dtype) + 0.5) / d - 0.5
        ys = torch.arange(h, device=x.device, dtype=prob.dtype) / h - 0.5
        xs = torch.arange(w, device=x.device, dtype=prob.dtype) / w - 0.5
        u = (prob.sum(dim=(2, 3)) * xs).sum(-1)
        v = (prob.sum(dim=(2, 4)) * ys).sum(-1)
        dd = (prob.sum(dim=(3, 4)) * zs).sum(-1)
        return {"coords": torch.stack([u, v, dd], dim=-1)}
