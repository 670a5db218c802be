"""FPN neck: stride-4 output of the finest level, fed by every level (the CPU default's neck)."""

from __future__ import annotations

import pytest
import torch

from sar.models.necks import DeconvNeck, FPNNeck
from sar.models.pose_model import build_pose_model
from sar.utils.config import compose_train_config, to_container


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


def network_config(*overrides: str) -> dict:
    return to_container(compose_train_config(*overrides))


def test_default_backbone_selects_the_fpn_neck_at_stride_4() -> None:
    cfg = network_config("neck.channels=32")
    assert cfg["neck"]["_target_"] == "sar.models.necks.FPNNeck.on_backbone"  # chosen by backbone=mobilenetv3
    model, size = build_pose_model(cfg, 17)
    assert isinstance(model.neck, FPNNeck) and model.neck.out_channels == 32 and size == (24, 32)
    assert model.stride == 4 and model.neck.out_stride == 4
    out = model(torch.randn(1, 3, 128, 96))
    assert out["logits"].shape == (1, 17, 32, 24)
    with pytest.raises(ValueError, match="at least two"):  # a one-level backbone cannot feed the FPN
        build_pose_model(network_config("backbone=resnet18", "neck=fpn"), 17)


def test_neck_choice_on_the_command_line_wins_over_the_backbones() -> None:
    """neck=deconv under the FPN backbone: the head's deconvolutions (its `deconv` block) on the last map."""
    cfg = network_config("neck=deconv", "backbone.out_indices=null", "head.deconv.channels=16")
    model, size = build_pose_model(cfg, 17)
    assert isinstance(model.neck, DeconvNeck) and model.neck.num_layers == 3 and model.neck.out_channels == 16
    assert size == (24, 32)
    cfg = network_config("neck=deconv", "backbone.out_indices=null", "head=rle")  # RLE: no deconvolutions
    model, _ = build_pose_model(cfg, 17)
    assert model.neck.num_layers == 0 and model.stride == 32
    assert model.head(model.neck(model.backbone(torch.randn(1, 3, 128, 96))))["coords"].shape == (1, 17, 2)


def test_separable_output_conv_is_depthwise_then_pointwise() -> None:
    full, sep = FPNNeck([8, 16], channels=12), FPNNeck([8, 16], channels=12, out_conv="separable")
    convs = [m for m in sep.out if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.groups) for c in convs] == [((3, 3), 12), ((1, 1), 1)]
    n_full = sum(p.numel() for p in full.out.parameters())
    n_sep = sum(p.numel() for p in sep.out.parameters())
    assert (n_full, n_sep) == (12 * 12 * 9 + 2 * 12, 12 * 9 + 2 * 12 + 12 * 12 + 2 * 12)
    out = sep([torch.randn(2, 8, 16, 12), torch.randn(2, 16, 8, 6)])
    assert out.shape == (2, 12, 16, 12) and bool((out >= 0).all())  # ends in ReLU
    with pytest.raises(ValueError, match="out_conv"):
        FPNNeck([8, 16], out_conv="dilated")


@pytest.mark.parametrize("head", ["sar", "heatmap_offset", "rle"])
def test_channels_last_model_gives_the_same_outputs(head: str) -> None:
    """backbone.channels_last only changes the memory layout: same weights give the same outputs (to float
    rounding), returned with contiguous NCHW strides, and gradients flow."""
    overrides = (f"head={head}", "neck.channels=16", "input_size=[64,64]")
    torch.manual_seed(0)
    ref, _ = build_pose_model(network_config(*overrides, "backbone.channels_last=false"), 5)
    nhwc, _ = build_pose_model(network_config(*overrides, "backbone.channels_last=true"), 5)
    nhwc.load_state_dict(ref.state_dict())
    conv = next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    a, b = ref.eval()(x), nhwc.eval()(x)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key].is_contiguous(), key
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    sum(v.sum() for v in nhwc.train()(x).values()).backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
