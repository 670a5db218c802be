"""PoseModel: backbone -> neck -> head, forward only (raw head tensors out), so it exports cleanly.

`build_pose_model(cfg, num_keypoints)` reads the `backbone`, `head` and `input_size` config groups (keys:
docs/backbones.md) and also returns the output stride and map size, which the codec needs: the codec is
built from the very same numbers, so input size and map size cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sar.models.backbones import build_backbone_from_cfg
from sar.models.necks import DeconvNeck, FPNNeck, resolve_deconv_layers
from sar.utils.config_keys import require, with_stored_defaults
from sar.utils.instantiate import build


class PoseModel(nn.Module):
    """``channels_last``: run backbone, neck and head in NHWC memory layout (faster depthwise convolutions on
    CPU, tensor-core friendly on GPU); the head's outputs are returned contiguous (NCHW strides), so decoders,
    losses and ONNX export see the same tensors either way."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, stride: int,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.stride = stride
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.channels_last:
            return self.head(self.neck(self.backbone(images)))
        outputs = self.head(self.neck(self.backbone(images.contiguous(memory_format=torch.channels_last))))
        return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in outputs.items()}


#: Head modules of configs written before heads were built by ``_target_`` (old checkpoints), by head name.
LEGACY_HEADS: dict[str, str] = {
    "sar": "sar.models.heads.sar.SARHead",
    "heatmap": "sar.models.heads.heatmap.HeatmapHead",
    "heatmap_offset": "sar.models.heads.heatmap_offset.HeatmapOffsetHead",
    "regression": "sar.models.heads.regression.RegressionHead",
    "rle": "sar.models.heads.regression.RLEHead",
}


def head_module_config(head_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``head.module``: the network module's ``_target_`` config (translated for an old config without one)."""
    if "module" in head_cfg:
        return dict(head_cfg["module"])
    # An old config: its fallbacks stay (they translate configs stored before head.module existed, whose SAR
    # heads had the heatmap branch unless they said otherwise).
    name = head_cfg.get("name")
    if name not in LEGACY_HEADS:
        raise ValueError(f"head config {name!r} has no `module` (the head's _target_ config)")
    extra = {"with_heatmap": bool(head_cfg.get("with_heatmap", True))} if name == "sar" else {}
    return {"_target_": LEGACY_HEADS[name], **extra}


def _build_head(head_cfg: Mapping[str, Any], in_channels: int, num_keypoints: int) -> nn.Module:
    """The head module from ``head.module`` (its ``_target_``), given the neck's channels and the spec's K."""
    return build(head_module_config(head_cfg), "head.module", in_channels=in_channels, num_keypoints=num_keypoints)


def build_pose_model(cfg: Mapping[str, Any], num_keypoints: int) -> tuple[PoseModel, tuple[int, int]]:
    """Build the network; returns it with the output map size (W, H) for the configured input size.

    Neck: ``head.deconv.num_layers`` deconvolutions (``auto``: up to stride 4, see `resolve_deconv_layers`;
    ``head.deconv: null``: none) on the backbone's last returned map. The backbone config decides which map that
    is (docs/backbones.md); no name is special-cased. ``backbone.neck: fpn`` (the CPU default) replaces the
    deconvolutions of the heads that have a ``deconv`` block (all of conf/heads/topdown, regression and RLE
    included) with an FPN over all returned levels (``backbone.deconv_channels`` wide, output conv
    ``backbone.fpn_out_conv``); a head with ``deconv: null`` reads the last map. ``backbone.channels_last``
    selects the NHWC memory layout (see `PoseModel`). Every key is read from the config (conf/backbone,
    conf/heads); a config stored by an older checkpoint gets the keys it predates from
    :data:`sar.utils.config_keys.STORED_CONFIG_DEFAULTS`.
    """
    cfg = with_stored_defaults(cfg)
    bcfg, hcfg = require(cfg, "backbone"), require(cfg, "head")
    w, h = (int(v) for v in require(cfg, "input_size"))
    neck_kind = require(bcfg, "neck", "backbone")
    if neck_kind not in ("deconv", "fpn"):
        raise ValueError(f"backbone.neck must be 'deconv' or 'fpn', got {neck_kind!r}")
    deconv = require(hcfg, "deconv", "head")  # null: no deconvolution block (the head reads the last map)
    backbone = build_backbone_from_cfg(bcfg, (w, h))
    cl = bool(require(bcfg, "channels_last", "backbone"))
    if neck_kind == "fpn" and deconv:  # any head with a deconv block (even num_layers 0) gets the FPN
        neck = FPNNeck(backbone.channels, channels=int(require(bcfg, "deconv_channels", "backbone")),
                       out_conv=str(require(bcfg, "fpn_out_conv", "backbone")))
        stride = int(backbone.strides[0])
        if w % int(backbone.strides[-1]) or h % int(backbone.strides[-1]):
            raise ValueError(f"input_size {w}x{h} must be a multiple of the backbone stride {backbone.strides[-1]}")
        head = _build_head(hcfg, neck.out_channels, num_keypoints)
        return PoseModel(backbone, neck, head, stride, cl), (w // stride, h // stride)
    stride_in = int(backbone.strides[-1])
    if deconv:
        num_layers = resolve_deconv_layers(require(deconv, "num_layers", "head.deconv"), stride_in)
        neck = DeconvNeck(backbone.channels[-1], num_layers=num_layers,
                          channels=int(require(deconv, "channels", "head.deconv")))
    else:
        num_layers = 0
        neck = DeconvNeck(backbone.channels[-1], num_layers=0)  # the identity
    if stride_in % (2**num_layers):
        raise ValueError(f"backbone stride {stride_in} is not divisible by 2^{num_layers} deconvolutions")
    stride = stride_in // (2**num_layers)
    if w % stride or h % stride or w % stride_in or h % stride_in:
        raise ValueError(
            f"input_size {w}x{h} must be a multiple of the backbone stride {stride_in} (output stride {stride})"
        )
    head = _build_head(hcfg, neck.out_channels, num_keypoints)
    return PoseModel(backbone, neck, head, stride, cl), (w // stride, h // stride)
