"""FPN neck: stride-4 output of the finest level, fed by every level (the CPU default's neck)."""

from __future__ import annotations

import pytest
import torch

from sar.models.necks import FPNNeck
from sar.models.pose_model import build_pose_model


def test_fpn_neck_fuses_all_levels_at_the_finest_stride() -> None:
    torch.manual_seed(0)
    neck = FPNNeck([8, 16, 32], channels=12).eval()
    feats = [torch.randn(2, 8, 16, 12), torch.randn(2, 16, 8, 6), torch.randn(2, 32, 4, 3)]
    out = neck(feats)
    assert out.shape == (2, 12, 16, 12)
    for level in range(3):  # changing any level changes the output: every level reaches the head
        changed = [f.clone() for f in feats]
        changed[level] += 1.0
        assert not torch.allclose(neck(changed), out)
    with pytest.raises(ValueError, match="at least two"):
        FPNNeck([8])
    with pytest.raises(ValueError, match="3 levels"):
        neck(feats[:2])


def test_default_backbone_uses_the_fpn_neck_at_stride_4() -> None:
    cfg = {"backbone": {"timm_name": "mobilenetv3_large_100", "out_indices": [1, 2, 3, 4], "neck": "fpn",
                        "deconv_channels": 32},
           "head": {"name": "sar", "deconv": {"num_layers": "auto", "channels": 32}}, "input_size": [96, 128]}
    model, size = build_pose_model(cfg, 17)
    assert isinstance(model.neck, FPNNeck) and size == (24, 32)
    out = model(torch.randn(1, 3, 128, 96))
    assert out["logits"].shape == (1, 17, 32, 24)
    cfg["backbone"]["neck"] = "unet"
    with pytest.raises(ValueError, match="deconv' or 'fpn"):
        build_pose_model(cfg, 17)


def test_heads_without_deconvs_read_the_last_map_under_the_fpn_backbone() -> None:
    cfg = {"backbone": {"timm_name": "mobilenetv3_large_100", "out_indices": [1, 2, 3, 4], "neck": "fpn"},
           "head": {"name": "regression"}, "input_size": [96, 128]}
    model, _ = build_pose_model(cfg, 17)
    assert not isinstance(model.neck, FPNNeck) and model.neck.num_layers == 0
    assert model.head(model.neck(model.backbone(torch.randn(1, 3, 128, 96))))["coords"].shape == (1, 17, 2)
