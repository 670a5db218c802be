"""timm backbones wrapped to return a list of feature maps with their channel counts and strides.

``build_backbone("resnet50")`` returns the last stage (stride 32 for ResNets, 16 for ViT-S/16) by default;
``out_indices`` selects other timm feature levels (e.g. ``(1,)`` with ``feature_location=""`` for the
stride-4 HRNet branch) and extra keyword arguments go to ``timm.create_model``.

``pretrained``:

* ``False`` / ``None``: random initialisation;
* ``True``: timm's pretrained weights (downloads, needs internet);
* a path: a local state dict file (``torch.save`` of a plain state dict, or of ``{"state_dict": ...}`` /
  ``{"model": ...}`` as written by Lightning / timm training scripts). Prefixes ``module.``, ``backbone.``,
  ``body.`` and ``model.`` are stripped, from the file's keys and from this module's keys alike, so a
  torchvision/timm classification checkpoint, a saved ``TimmBackbone`` and a Lightning checkpoint of a whole
  model all load. Missing, unexpected and shape-mismatched keys are logged; a file with no matching key
  raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

__all__ = ["TimmBackbone", "build_backbone", "load_backbone_weights"]

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "backbone.", "body.", "model.")


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model: ``forward(x) -> list[Tensor]``, with ``channels`` and ``strides``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        info = body.feature_info
        self.channels: list[int] = [int(c) for c in info.channels()]
        self.strides: list[int] = [int(r) for r in info.reduction()]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


def _strip(key: str) -> str:
    """Remove the wrapper prefixes (``module.``, ``backbone.``, ``body.``, ``model.``) from a key."""
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a plain state dict or one nested under ``state_dict`` / ``model``."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # re-raised with the file name
        raise ValueError(f"cannot read backbone weights from {path}: {err}") from err
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            nested = next(
                (obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), Mapping)), None
            )
            if nested is not None:
                obj = nested
                continue
        break
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ValueError(f"no state dict found in backbone weights file {path}")


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local state dict file into ``module`` by prefix-insensitive key matching (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    source = _read_state_dict(path)
    target = module.state_dict()
    by_name = {_strip(k): k for k in target}
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in source.items():
        name = by_name.get(_strip(key))
        if name is None:
            unexpected.append(key)
        elif tuple(target[name].shape) != tuple(value.shape):
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target[name].shape)}")
        else:
            matched[name] = value
    if not matched:
        raise ValueError(
            f"no parameter of backbone weights file {path} matches the model "
            f"({len(source)} keys in the file, e.g. {sorted(source)[:3]}; "
            f"model keys e.g. {sorted(target)[:3]})"
        )
    module.load_state_dict(matched, strict=False)
    missing = [k for k in target if k not in matched]
    log.info("loaded %d/%d backbone tensors from %s", len(matched), len(target), path)
    if missing:
        log.warning("%d backbone keys missing from %s: %s", len(missing), path, missing[:10])
    if unexpected:
        log.info("%d unexpected keys in %s ignored: %s", len(unexpected), path, unexpected[:10])
    if mismatched:
        log.warning("%d keys of %s skipped for shape mismatch: %s", len(mismatched), path, mismatched[:10])


def build_backbone(
    name: str,
    pretrained: bool | str | Path | None = False,
    out_indices: Sequence[int] | None = None,
    **timm_kwargs: Any,
) -> TimmBackbone:
    """Build a timm backbone returning its feature maps (default: the last stage only)."""
    indices = tuple(out_indices) if out_indices is not None else (-1,)
    download = pretrained is True
    body = timm.create_model(
        name, pretrained=download, features_only=True, out_indices=indices, **timm_kwargs
    )
    backbone = TimmBackbone(body)
    if isinstance(pretrained, (str, Path)) and str(pretrained).strip():
        load_backbone_weights(backbone, pretrained)
    elif pretrained not in (False, None, True, ""):
        raise ValueError(f"pretrained must be False, True or a file path, got {pretrained!r}")
    return backbone
