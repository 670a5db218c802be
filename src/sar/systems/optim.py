"""Optimiser parameter groups: ViT layer-wise learning-rate decay (ViTPose / MMPose ``LayerDecayOptimWrapperConstructor``).

With ``depth`` transformer blocks, every parameter gets a layer id:

* ``0``: the embeddings (``patch_embed``, ``cls_token``, ``pos_embed``, ``mask_token``, ``reg_token``);
* ``i + 1``: transformer block ``i`` (``...blocks.<i>.`` or ``...layers.<i>.`` under ``backbone.``);
* ``depth + 1``: everything else (the backbone's final norm, neck, head and any loss parameters, e.g. RLE's flow).

Names are those of the PoseModel (``backbone.*``) or of the LightningModule holding it (``model.backbone.*``).

Its learning rate is ``lr * layer_decay ** (depth + 1 - layer_id)`` (the head keeps ``lr``). As in MMPose,
1-D parameters (norms, biases) and the position / class embeddings get no weight decay.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

__all__ = ["layer_decay_param_groups", "vit_layer_id"]

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
