"""ViT layer-wise learning-rate decay parameter groups (`sar.systems.optim`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sar.systems.optim import layer_decay_param_groups, vit_layer_id


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)


class _ViT(nn.Module):  # the naming of timm's features_only ViT: body.model.*
    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.patch_embed = nn.Conv2d(3, 4, 2)
        self.blocks = nn.ModuleList(_Block() for _ in range(depth))
        self.norm = nn.LayerNorm(4)


def _model(depth: int = 3) -> nn.Module:
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.body = nn.Module()
    model.backbone.body.model = _ViT(depth)
    model.neck = nn.ConvTranspose2d(4, 4, 4)
    model.head = nn.Conv2d(4, 2, 1)
    return model


def test_layer_ids() -> None:
    assert vit_layer_id("backbone.body.model.pos_embed", 12) == 0
    assert vit_layer_id("model.backbone.body.model.patch_embed.proj.weight", 12) == 0
    assert vit_layer_id("backbone.body.model.blocks.0.fc.weight", 12) == 1
    assert vit_layer_id("model.backbone.body.model.blocks.11.fc.weight", 12) == 12
    assert vit_layer_id("backbone.body.model.norm.weight", 12) == 13
    assert vit_layer_id("head.weight", 12) == 13
    assert vit_layer_id("loss.flow.blocks.0.weight", 12) == 13  # not under backbone


def test_param_groups_lr_and_weight_decay() -> None:
    model = _model(depth=3)
    groups = layer_decay_param_groups(model, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    vit = model.backbone.body.model
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    def lr(p: nn.Parameter) -> float:
        return by_param[id(p)]["lr"]

    def wd(p: nn.Parameter) -> float:
        return by_param[id(p)]["weight_decay"]

    assert lr(vit.pos_embed) == pytest.approx(0.5**4) and wd(vit.pos_embed) == 0.0
    assert lr(vit.patch_embed.weight) == pytest.approx(0.5**4) and wd(vit.patch_embed.weight) == 0.1
    assert lr(vit.blocks[0].fc.weight) == pytest.approx(0.5**3)
    assert lr(vit.blocks[2].fc.weight) == pytest.approx(0.5)
    assert wd(vit.blocks[2].fc.bias) == 0.0 and wd(vit.blocks[2].norm1.weight) == 0.0
    assert lr(vit.norm.weight) == 1.0 and lr(model.head.weight) == 1.0 and wd(model.head.weight) == 0.1
    torch.optim.AdamW(groups, lr=1.0)  # accepted as optimiser groups


def test_layer_decay_needs_blocks() -> None:
    model = nn.Module()
    model.backbone = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="transformer"):
        layer_decay_param_groups(model, 1.0, 0.1, 0.8)
