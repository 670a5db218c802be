"""Global-pooling regression heads: direct coordinate regression (DeepPose-style) and RLE.

Both pool the feature map (B,C,H,W) globally (mean over H and W) and read the keypoints with fully
connected layers; they are meant to sit on the backbone's last map (``deconv.num_layers: 0``), but work on
any map. docs/heads.md, `regression` and `rle`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NormLinear", "RLEHead", "RegressionHead"]


class NormLinear(nn.Module):
    """Linear layer on an L2-normalised input: ``y = x W^T / ||x|| + b`` (RLE's coordinate layer).

    With ``norm=False`` it is a plain linear layer (RLE's sigma layer). The weight starts at
    ``xavier_uniform(gain)`` (0.01 in RLE); the bias keeps PyTorch's default init. The input norm is clamped
    at 1e-12 so an all-zero feature gives ``b`` instead of NaN.
    """

    def __init__(self, in_features: int, out_features: int, norm: bool = True, gain: float = 0.01) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = norm
        self.gain = gain
        nn.init.xavier_uniform_(self.linear.weight, gain=gain)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.linear.weight.t()
        if self.norm:
            y = y / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return y + self.linear.bias


class RegressionHead(nn.Module):
    """GAP + one FC layer -> ``{"coords": (B,K,2)}`` normalised to the crop input, ``(x / w, y / h)``.

    Init: weight Normal(0, 0.001), bias 0.5, so every keypoint starts at the crop centre.
    """

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.fc = nn.Linear(in_channels, 2 * num_keypoints)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.constant_(self.fc.bias, 0.5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = x.mean(dim=(2, 3))
        return {"coords": self.fc(feat).reshape(x.shape[0], self.num_keypoints, 2)}


class RLEHead(nn.Module):
    """RLE head: GAP, then a :class:`NormLinear` coordinate layer and a sigmoid sigma layer.

    ``forward`` returns ``{"coords": (B,K,2), "sigma": (B,K,2)}``. ``coords`` are in the RLE frame, normalised
    coordinates minus 0.5 (``x / w - 0.5``, the crop centre is 0); ``sigma`` in (0, 1) is the per-axis scale
    in the same units. The normalising flow is not here: it belongs to the loss (``RLELoss``) and is dropped
    at inference.
    """

    #: coordinates per keypoint (2: x, y; the 3D head :class:`sar.models.heads.pose3d.RLE3DHead` sets 3)
    dims = 2

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_keypoints = num_keypoints
        self.fc_coord = NormLinear(in_channels, self.dims * num_keypoints, norm=True, gain=0.01)
        self.fc_sigma = NormLinear(in_channels, self.dims * num_keypoints, norm=False, gain=0.01)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        feat = x.mean(dim=(2, 3))
        coords = self.fc_coord(feat).reshape(b, self.num_keypoints, self.dims)
        sigma = torch.sigmoid(self.fc_sigma(feat)).reshape(b, self.num_keypoints, self.dims)
        return {"coords": coords, "sigma": sigma}
