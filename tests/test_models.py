"""Heads, neck and timm backbone wrapper (shapes, initialisation, local pretrained weights)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch

from sar.models import DeconvNeck, HeatmapHead, SARHead, build_backbone
from sar.models.backbones import PretrainedWeightsError


def test_sar_head_outputs_and_init() -> None:
    head = SARHead(8, 3)
    x = torch.randn(2, 8, 6, 5)
    out = head(x)
    assert set(out) == {"logits", "offsets", "heatmap"}
    assert out["logits"].shape == (2, 3, 6, 5)
    assert out["offsets"].shape == (2, 3, 2, 6, 5)
    assert out["heatmap"].shape == (2, 3, 6, 5)
    # offset channel 2k is x and 2k+1 is y of keypoint k
    raw = head.offset_conv(x)
    assert torch.equal(out["offsets"][:, 1, 0], raw[:, 2]) and torch.equal(out["offsets"][:, 1, 1], raw[:, 3])

    prior = -math.log(0.99 / 0.01)
    assert prior == pytest.approx(-4.595, abs=1e-3)
    assert torch.allclose(head.logit_conv.bias, torch.full((3,), prior))
    assert torch.allclose(head.heatmap_conv.bias, torch.full((3,), prior))
    assert torch.all(head.offset_conv.bias == 0)
    for conv in (head.logit_conv, head.offset_conv, head.heatmap_conv):
        assert conv.weight.std().item() == pytest.approx(0.001, rel=0.5)

    no_hm = SARHead(8, 3, with_heatmap=False)(x)
    assert set(no_hm) == {"logits", "offsets"}


def test_heatmap_head() -> None:
    head = HeatmapHead(16, 17)
    out = head(torch.randn(1, 16, 8, 6))
    assert set(out) == {"heatmap"} and out["heatmap"].shape == (1, 17, 8, 6)
    assert torch.all(head.final_conv.bias == 0)


def test_resnet18_with_deconvs_gives_stride_4() -> None:
    backbone = build_backbone("resnet18")
    assert backbone.channels == [512] and backbone.strides == [32]
    neck = DeconvNeck(backbone.channels[-1], num_layers=3, channels=64)
    assert neck.out_channels == 64
    feats = backbone(torch.randn(2, 3, 128, 96))
    assert isinstance(feats, list) and feats[-1].shape == (2, 512, 4, 3)
    out = neck(feats)
    assert out.shape == (2, 64, 32, 24)  # 128x96 / 4
    head_out = SARHead(neck.out_channels, 17)(out)
    assert head_out["offsets"].shape == (2, 17, 2, 32, 24)


def test_deconv_neck_identity() -> None:
    neck = DeconvNeck(32, num_layers=0)
    x = torch.randn(1, 32, 4, 4)
    assert neck.out_channels == 32 and torch.equal(neck(x), x)
    with pytest.raises(ValueError):
        DeconvNeck(32, kernel=5)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_pretrained_from_local_file(tmp_path: Path) -> None:
    source = build_backbone("resnet18")
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone("resnet18", pretrained=str(path))
    _assert_same_weights(source, loaded)

    # a classification checkpoint in a {"state_dict": {"module.<name>": ...}} wrapper, with an fc head
    classifier = timm.create_model("resnet18", pretrained=False)
    wrapped = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in classifier.state_dict().items()}}, wrapped)
    loaded = build_backbone("resnet18", pretrained=wrapped)
    conv = dict(loaded.named_parameters())["body.conv1.weight"]
    assert torch.equal(conv, classifier.conv1.weight)


def test_pretrained_file_without_matching_keys(tmp_path: Path) -> None:
    path = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="unrelated.pth"):
        build_backbone("resnet18", pretrained=str(path))
    with pytest.raises(PretrainedWeightsError, match="missing.pth"):
        build_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
