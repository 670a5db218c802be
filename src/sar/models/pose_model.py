"""PoseModel: backbone -> neck -> head, forward only (raw head tensors out), so it exports cleanly.

`build_pose_model(cfg, num_keypoints)` builds the `backbone`, `neck` and `head.module` `_target_` configs for
`input_size` (docs/backbones.md) and also returns the output stride and map size, which the codec needs: the codec is
built from the very same numbers, so input size and map size cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sar.data.transforms import normalize_images
from sar.utils.config_keys import require
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
        """``images``: uint8 RGB ``(N, 3, H, W)`` as the datasets give them (ImageNet-normalised here, on their
        device: :func:`sar.data.transforms.normalize_images`), or float images already normalised (export)."""
        images = normalize_images(images)
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


def build_pose_model(cfg: Mapping[str, Any], num_keypoints: int) -> tuple[PoseModel, tuple[int, int]]:
    """Build the network; returns it with the output map size (W, H) for the configured input size.

    Three ``_target_`` configs, built in this order (docs/backbones.md): ``backbone`` (given ``input_size``),
    ``neck`` (given the backbone's returned levels, ``in_channels`` / ``in_strides``: the contract in
    `sar.models.necks`) and ``head.module`` (given the neck's ``out_channels`` and the spec's K). The neck's
    ``out_stride`` is the model's output stride; input width and height must be multiples of the backbone's
    coarsest stride. The backbone's ``channels_last`` selects the NHWC memory layout (see `PoseModel`).
    """
    w, h = (int(v) for v in require(cfg, "input_size"))
    backbone = build(require(cfg, "backbone"), "backbone", input_size=(w, h))
    neck = build(require(cfg, "neck"), "neck", in_channels=list(backbone.channels), in_strides=list(backbone.strides))
    coarsest, stride = int(backbone.strides[-1]), int(neck.out_stride)
    if w % coarsest or h % coarsest:
        raise ValueError(
            f"input_size {w}x{h} must be a multiple of the backbone stride {coarsest} (output stride {stride})"
        )
    head = build(head_module_config(require(cfg, "head")), "head.module", in_channels=neck.out_channels,
                 num_keypoints=num_keypoints)
    return PoseModel(backbone, neck, head, stride, bool(getattr(backbone, "channels_last", False))), (w // stride,
                                                                                                       h // stride)
