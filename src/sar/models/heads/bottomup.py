"""Bottom-up heads (docs/bottomup.md): forward-only 1x1 convolutions on the stride-4 neck output.

Init as the top-down SAR head (:class:`sar.models.heads.sar.SARHead`, docs/method.md [C]): weights
Normal(0, 0.001), biases 0, except the selector / focal-heatmap logits whose bias is the focal prior
``-log(99)`` (:data:`~sar.models.heads.sar.FOCAL_PRIOR_BIAS`; CID's init, docs/method.md "Multi-person", confirmed). The MSE heatmaps
of the ``ae`` and ``dekr`` baselines start at 0 (bias 0). Offset channels ``2k`` / ``2k + 1`` are the x / y of
keypoint ``k``; offsets are returned as (B,K,2,H,W). Raw tensors only; the codecs and losses do the rest.

| head | outputs |
|---|---|
| SARAEHead | ``logits`` (B,K,H,W), ``offsets`` (B,K,2,H,W) normalised units, ``tags`` (B,K,H,W), ``heatmap`` (B,K,H,W) |
| SARCenterHead | ``center_logits`` (B,1,H,W), ``offsets`` (B,K,2,H,W) normalised units, ``heatmap`` (B,K+1,H,W), optional ``local_offsets`` (B,K,2,H,W) units of ``local_radius`` cells |
| AEHead | ``heatmap`` (B,K,H,W), ``tags`` (B,K,H,W) |
| DEKRHead | ``heatmap`` (B,K+1,H,W), ``offsets`` (B,K,2,H,W) map cells |
"""

from __future__ import annotations

import torch
from torch import nn

from sar.models.heads.sar import FOCAL_PRIOR_BIAS

__all__ = ["AEHead", "DEKRHead", "SARAEHead", "SARCenterHead"]


def _conv(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    """1x1 conv, weights Normal(0, 0.001), constant bias."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.constant_(conv.bias, bias)
    return conv


def conv_tower(in_channels: int, channels: int, num_convs: int) -> nn.Module:
    """``num_convs`` x (3x3 conv, BN, ReLU) at ``channels`` (identity when 0): the optional offset branch of the
    SAR heads (docs/method.md "Multi-person", our choice; DEKR gives its offsets a branch of their own too)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers) if layers else nn.Identity()


def _offsets(x: torch.Tensor, k: int) -> torch.Tensor:
    b, _, h, w = x.shape
    return x.reshape(b, k, 2, h, w)


class SARAEHead(nn.Module):
    """B1 ``sar_ae`` (docs/method.md "Multi-person", our formulation): selector (K), offsets (2K), AE tags (K), auxiliary heatmap (K);
    ``with_heatmap=False`` drops the auxiliary branch."""

    def __init__(self, in_channels: int, num_keypoints: int, with_heatmap: bool = True) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.logit_conv = _conv(in_channels, num_keypoints, FOCAL_PRIOR_BIAS)
        self.offset_conv = _conv(in_channels, 2 * num_keypoints)
        self.tag_conv = _conv(in_channels, num_keypoints)
        self.heatmap_conv = _conv(in_channels, num_keypoints, FOCAL_PRIOR_BIAS) if with_heatmap else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"logits": self.logit_conv(x), "offsets": _offsets(self.offset_conv(x), self.num_keypoints),
               "tags": self.tag_conv(x)}
        if self.heatmap_conv is not None:
            out["heatmap"] = self.heatmap_conv(x)
        return out


class SARCenterHead(nn.Module):
    """B2 ``sar_center`` (docs/method.md "Multi-person", our formulation): centre selector (1), pose offsets (2K), auxiliary focal heatmaps
    (K keypoints + the centre); ``with_heatmap=False`` drops the auxiliary branch. ``offset_convs`` > 0 puts
    :func:`conv_tower` (``offset_channels`` wide) before the offset conv (0: a 1x1 conv on the features, as the
    other outputs); ``heatmap_convs`` likewise for the K auxiliary keypoint heatmaps (``heatmap_channels``
    wide; the centre map stays a 1x1 on the features).
    ``local_offsets=True`` adds PersonLab's short-range offsets (2K, a 1x1 conv; units of the
    codec's ``local_radius``), which the codec's ``refine: local`` moves the regressed keypoints with.
    ``aux_loss``: ``focal`` (logits, the focal prior bias) | ``mse`` (the K keypoint maps raw, DEKR's, bias 0;
    the centre map stays a focal logit)."""

    def __init__(self, in_channels: int, num_keypoints: int, with_heatmap: bool = True, offset_convs: int = 0,
                 offset_channels: int = 128, local_offsets: bool = False, aux_loss: str = "focal",
                 heatmap_convs: int = 0, heatmap_channels: int = 64) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.center_conv = _conv(in_channels, 1, FOCAL_PRIOR_BIAS)
        self.offset_tower = conv_tower(in_channels, offset_channels, offset_convs)
        self.offset_conv = _conv(offset_channels if offset_convs else in_channels, 2 * num_keypoints)
        if aux_loss not in ("focal", "mse"):
            raise ValueError(f"aux_loss must be 'focal' or 'mse', got {aux_loss!r}")
        # with a tower, only the K keypoint maps go through it; the centre map stays a 1x1 on the shared features
        # (trained there, it is what teaches them to find people: through the tower the selector found 130 of 352)
        towered = bool(heatmap_convs) and with_heatmap
        self.heatmap_tower = conv_tower(in_channels, heatmap_channels, heatmap_convs if towered else 0)
        self.centre_heatmap_conv = _conv(in_channels, 1, FOCAL_PRIOR_BIAS) if towered else None
        k_maps = num_keypoints if towered else num_keypoints + 1
        self.heatmap_conv = (_conv(heatmap_channels if towered else in_channels, k_maps, FOCAL_PRIOR_BIAS)
                             if with_heatmap else None)
        if self.heatmap_conv is not None and aux_loss == "mse":  # raw keypoint maps start at 0, the centre focal
            nn.init.zeros_(self.heatmap_conv.bias.data[:num_keypoints])
        self.local_conv = _conv(in_channels, 2 * num_keypoints) if local_offsets else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"center_logits": self.center_conv(x),
               "offsets": _offsets(self.offset_conv(self.offset_tower(x)), self.num_keypoints)}
        if self.heatmap_conv is not None:
            maps = self.heatmap_conv(self.heatmap_tower(x))
            if self.centre_heatmap_conv is not None:
                maps = torch.cat([maps, self.centre_heatmap_conv(x)], 1)
            out["heatmap"] = maps
        if self.local_conv is not None:
            out["local_offsets"] = _offsets(self.local_conv(x), self.num_keypoints)
        return out


class AEHead(nn.Module):
    """``ae`` baseline (HigherHRNet's stride-4 output, docs/method.md "Multi-person", confirmed; the 1/2-resolution branch is not
    built): heatmaps (K) and associative-embedding tags (K)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.heatmap_conv = _conv(in_channels, num_keypoints)
        self.tag_conv = _conv(in_channels, num_keypoints)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap_conv(x), "tags": self.tag_conv(x)}


class DEKRHead(nn.Module):
    """``dekr`` baseline (docs/method.md "Multi-person", confirmed): heatmaps (K keypoints + centre) by a 1x1 conv, and per-keypoint
    offsets by a small branch per keypoint: ``offset_channels`` features shared by all keypoints (1x1 conv +
    BN + ReLU), then one grouped 3x3 conv + ReLU and a grouped 1x1 conv to (x, y) per keypoint (DEKR's
    per-keypoint branches; its adaptive convolutions are not built)."""

    def __init__(self, in_channels: int, num_keypoints: int, offset_channels: int = 15) -> None:
        super().__init__()
        k = num_keypoints
        self.num_keypoints = k
        self.heatmap_conv = _conv(in_channels, k + 1)
        self.offset_feat = nn.Sequential(
            nn.Conv2d(in_channels, k * offset_channels, 1, bias=False),
            nn.BatchNorm2d(k * offset_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(k * offset_channels, k * offset_channels, 3, padding=1, groups=k, bias=False),
            nn.BatchNorm2d(k * offset_channels),
            nn.ReLU(inplace=True),
        )
        self.offset_conv = nn.Conv2d(k * offset_channels, 2 * k, 1, groups=k)
        for m in self.offset_feat.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
        nn.init.normal_(self.offset_conv.weight, std=0.001)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap_conv(x),
                "offsets": _offsets(self.offset_conv(self.offset_feat(x)), self.num_keypoints)}
