"""Necks between the backbone and the head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DECONV_TARGET_STRIDE", "DeconvNeck", "FPNNeck", "resolve_deconv_layers"]

# The neck contract (conf/neck/*.yaml): a ``_target_`` called with the backbone's returned levels,
# ``in_channels`` and ``in_strides`` (finest first), plus its config's keys; the module it returns takes the list
# of maps and exposes ``out_channels`` and ``out_stride`` (the stride of the one map the head reads).

_DECONV_CFG: dict[int, tuple[int, int]] = {
    4: (1, 0),
    3: (1, 1),
    2: (0, 0),
}  # kernel -> (padding, output_padding)


class DeconvNeck(nn.Module):
    """SimpleBaseline deconvolution stack: ``num_layers`` x (ConvTranspose2d stride 2, no bias, BN, ReLU).

    Each layer doubles the resolution. Weights Normal(0, 0.001), BN weight 1 and bias 0 (the released SAR / SimpleBaseline init; docs/method.md).
    ``num_layers=0`` is the identity (``out_channels == in_channels``). The input may be a tensor or a list of
    feature maps (the last one is used).
    """

    def __init__(self, in_channels: int, num_layers: int = 3, channels: int = 256, kernel: int = 4) -> None:
        super().__init__()
        if kernel not in _DECONV_CFG:
            raise ValueError(f"deconv kernel must be one of {sorted(_DECONV_CFG)}, got {kernel}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        padding, output_padding = _DECONV_CFG[kernel]
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(num_layers):
            layers += [
                nn.ConvTranspose2d(
                    c_in,
                    channels,
                    kernel,
                    stride=2,
                    padding=padding,
                    output_padding=output_padding,
                    bias=False,
                ),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        self.layers = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = c_in
        self.num_layers = num_layers
        self.out_stride: int | None = None  # set by `on_backbone` (the input stride is not known here)
        self.reset_parameters()

    @classmethod
    def on_backbone(cls, in_channels: list[int] | tuple[int, ...], in_strides: list[int] | tuple[int, ...], *,
                    num_layers: Any, channels: int) -> DeconvNeck:
        """The neck contract (conf/neck/deconv.yaml): ``num_layers`` deconvolutions (``auto``: down to stride 4,
        `resolve_deconv_layers`) of ``channels`` channels on the last returned level."""
        stride_in = int(in_strides[-1])
        layers = resolve_deconv_layers(num_layers, stride_in)
        if stride_in % (2**layers):
            raise ValueError(f"backbone stride {stride_in} is not divisible by 2^{layers} deconvolutions")
        neck = cls(int(in_channels[-1]), num_layers=layers, channels=int(channels))
        neck.out_stride = stride_in // 2**layers
        return neck

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            x = x[-1]
        return self.layers(x)


class FPNNeck(nn.Module):
    """Top-down feature pyramid fused to the finest returned level (for models trained from scratch).

    Takes the backbone's maps (finest first, each level half the resolution of the previous one): a 1x1
    conv + BN per level to ``channels``, top-down nearest x2 upsampling added into the next finer level,
    then one 3x3 conv + BN + ReLU on the finest level (``out_conv="separable"``: a depthwise 3x3 + BN and a
    pointwise 1x1 + BN + ReLU, ~1/8 of the multiply-adds, for CPU budgets). The head reads that map (stride of
    the first level).
    Not a paper component: the random-init CPU default uses it because the stride-4 skip gives the head
    fine spatial detail that three deconvolutions from stride 32 take many more steps to learn
    (docs/backbones.md).
    """

    def __init__(self, in_channels: list[int] | tuple[int, ...], channels: int = 128, out_conv: str = "full") -> None:
        super().__init__()
        if out_conv not in ("full", "separable"):
            raise ValueError(f"FPNNeck out_conv must be 'full' or 'separable', got {out_conv!r}")
        if len(in_channels) < 2:
            raise ValueError(f"FPNNeck needs at least two backbone levels (backbone.out_indices), got {in_channels}")
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), nn.BatchNorm2d(channels)) for c in in_channels
        )
        if out_conv == "full":
            smooth: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
        else:
            smooth = [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                      nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 1, bias=False)]
        self.out = nn.Sequential(*smooth, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.in_channels = list(in_channels)
        self.out_channels = channels
        self.num_layers = 0
        self.out_stride: int | None = None  # set by `on_backbone`

    @classmethod
    def on_backbone(cls, in_channels: list[int] | tuple[int, ...], in_strides: list[int] | tuple[int, ...], *,
                    channels: int, out_conv: str) -> FPNNeck:
        """The neck contract (conf/neck/fpn.yaml): an FPN over every returned level, read at the finest one."""
        neck = cls(list(in_channels), channels=int(channels), out_conv=str(out_conv))
        neck.out_stride = int(in_strides[0])
        return neck

    def forward(self, x: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(x) != len(self.lateral):
            raise ValueError(f"FPNNeck built for {len(self.lateral)} levels, got {len(x)}")
        y = self.lateral[-1](x[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(x[:-1])):
            y = lateral(feat) + nn.functional.interpolate(y, size=feat.shape[-2:], mode="nearest")
        return self.out(y)


DECONV_TARGET_STRIDE = 4  # `deconv.num_layers: auto` upsamples the backbone map to this output stride


def resolve_deconv_layers(
    num_layers: Any, backbone_stride: int, target_stride: int = DECONV_TARGET_STRIDE
) -> int:
    """Number of stride-2 deconvolutions for a head config's ``deconv.num_layers``.

    ``"auto"`` (or None): as many as bring ``backbone_stride`` down to ``target_stride`` (3 for stride-32
    ResNets, 2 for ViT/16 = ViTPose's classic decoder, 0 for the stride-4 HRNet branch). An integer forces the
    count (0 = no deconvolution: the head sits on the backbone map).
    """
    if num_layers is None or (isinstance(num_layers, str) and num_layers.strip().lower() == "auto"):
        if backbone_stride <= target_stride:
            return 0
        ratio = backbone_stride // target_stride
        if backbone_stride % target_stride or ratio & (ratio - 1):
            raise ValueError(
                f"deconv.num_layers=auto: backbone stride {backbone_stride} is not a power-of-two multiple of "
                f"{target_stride}; set head.deconv.num_layers to an integer"
            )
        return ratio.bit_length() - 1
    layers = -1
    if isinstance(num_layers, int) and not isinstance(num_layers, bool):
        layers = num_layers
    elif isinstance(num_layers, str) and num_layers.strip().isdigit():
        layers = int(num_layers)
    if layers < 0:
        raise ValueError(f"deconv.num_layers must be 'auto' or an integer >= 0, got {num_layers!r}")
    return layers
