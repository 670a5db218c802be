"""Optimiser parts: the warm-up + decay learning-rate schedule (``warmup_schedule``, built from
``optim.lr_scheduler``), and ViT layer-wise learning-rate decay (ViTPose / MMPose ``LayerDecayOptimWrapperConstructor``).

With ``depth`` transformer blocks, every parameter gets a layer id:

* ``0``: the embeddings (``patch_embed``, ``cls_token``, ``pos_embed``, ``mask_token``, ``reg_token``);
* ``i + 1``: transformer block ``i`` (``...blocks.<i>.`` or ``...layers.<i>.`` under ``backbone.``);
* ``depth + 1``: everything else (the backbone's final norm, neck, head and any loss parameters, e.g. RLE's flow).

Names are those of the PoseModel (``backbone.*``) or of the LightningModule holding it (``model.backbone.*``).

Its learning rate is ``lr * layer_decay ** (depth + 1 - layer_id)`` (the head keeps ``lr``). As in MMPose,
1-D parameters (norms, biases) and the position / class embeddings get no weight decay.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["layer_decay_param_groups", "lr_factor", "vit_layer_id", "warmup_schedule"]

_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers)\.(\d+)\.")
_EMBED = ("patch_embed", "cls_token", "pos_embed", "mask_token", "reg_token")
_NO_DECAY = ("pos_embed", "cls_token", "mask_token", "reg_token")


def _in_backbone(name: str) -> bool:
    return name.startswith(("backbone.", "model.backbone."))


def vit_layer_id(name: str, depth: int) -> int:
    """Layer id of a parameter name (see the module doc)."""
    if not _in_backbone(name):
        return depth + 1
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(part in name for part in _EMBED):
        return 0
    return depth + 1


def layer_decay_param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay; raises ``ValueError`` for a backbone without blocks."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    blocks = {int(m.group(1)) for n, _ in named if _in_backbone(n) and (m := _BLOCK.search(n))}
    if not blocks:
        raise ValueError("optim.layer_decay needs a transformer backbone (parameters named backbone.*.blocks.<i>.*)")
    depth = max(blocks) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in named:
        layer = vit_layer_id(name, depth)
        no_decay = param.ndim == 1 or name.endswith(".bias") or any(k in name for k in _NO_DECAY)
        group = groups.setdefault((layer, no_decay), {
            "params": [],
            "lr": lr * layer_decay ** (depth + 1 - layer),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "layer_id": layer,
        })
        group["params"].append(param)
    return [groups[k] for k in sorted(groups)]


# -- learning-rate schedule -----------------------------------------------------------------------------------------
def lr_factor(step: int, warmup_iters: int, warmup_ratio: float, total_steps: int, scheduler: str,
              milestone_steps: list[int], gamma: float) -> float:
    """Learning-rate multiplier at an optimiser step: linear warm-up, then cosine or step decay."""
    factor = 1.0
    if scheduler == "cosine":
        progress = min(max(step, 0) / max(total_steps, 1), 1.0)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif scheduler == "multistep":
        factor = gamma ** sum(step >= m for m in milestone_steps)
    elif scheduler != "none":
        raise ValueError(f"unknown scheduler '{scheduler}' (cosine, multistep, none)")
    if warmup_iters > 0 and step < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * step / warmup_iters
    return factor


def warmup_schedule(optimizer: torch.optim.Optimizer, schedule_length: Callable[[], tuple[int, int]], *,
                    warmup_iters: int, warmup_ratio: float, decay: str, milestones: list[int],
                    gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of ``optim.lr_scheduler`` (conf/optim/*.yaml): linear warm-up over ``warmup_iters``
    steps from ``warmup_ratio`` x lr, then ``decay`` (cosine to 0 over the run | multistep: x ``gamma`` at each
    of the ``milestones`` epochs | none).

    ``schedule_length()`` gives (total optimiser steps, steps per epoch); it is asked lazily, at the first step:
    asking the trainer before fitting starts would build the train loader's iterator before a resumed run
    restores the loader's position (sar.data.sampler)."""
    known: dict[str, Any] = {}

    def fn(step: int) -> float:
        if not known and step > 0:
            total, per_epoch = schedule_length()
            known.update(total=total, milestones=[int(m) * per_epoch for m in milestones])
        return lr_factor(step, int(warmup_iters), float(warmup_ratio), known.get("total", 1), str(decay),
                         known.get("milestones", [1 << 62] * len(milestones)), float(gamma))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
