"""timm backbones wrapped to return a list of feature maps with their channel counts and strides.

``build_backbone("resnet50")`` returns the last stage (stride 32 for ResNets, 16 for ViT-S/16) by default;
``out_indices`` selects other timm feature levels (e.g. ``(1,)`` with ``feature_location=""`` for the
stride-4 HRNet branch) and extra keyword arguments go to ``timm.create_model`` (``img_size``,
``drop_path_rate``, ``feature_location``, ...). The config side (which keys a ``conf/backbone/*.yaml`` carries)
is documented in ``docs/backbones.md``.

Two ways to get feature maps out of timm:

* default: ``features_only=True`` (timm's own feature wrapper: ``FeatureListNet`` for CNNs,
  ``HighResolutionNetFeatures`` for HRNet, ``FeatureGetterNet`` for ViTs);
* ``feature_norm=True``: the plain model wrapped in timm's ``FeatureGetterNet`` with ``norm=True``, so the
  model's final norm is applied to the output map, as ViTPose / mmpretrain's ``final_norm`` does (timm's
  ``features_only`` ViT returns the last block's tokens *before* the final LayerNorm).

HRNet: with ``feature_location=""`` and ``out_indices=(1,)`` timm returns the raw 32/48-channel, stride-4
branch of the final stage, i.e. the HRNet pose backbone's output. timm builds the last stage module with
``multi_scale_output=True`` (fuse layers for all four output branches), whereas the pose HRNet (and MMPose)
keep only the fuse into branch 1. The fuse layers producing branches nobody reads are removed here
(``_prune_hrnet_outputs``), which makes the parameter set equal to the pose HRNet's (28.5M for W32) and leaves
no unused parameters (DDP needs none of ``find_unused_parameters``). Branch 1 itself is computed identically.

``pretrained``:

* ``False`` / ``None``: random initialisation;
* ``True``: timm's pretrained weights (downloads, needs internet);
* a path: a local state dict file (``torch.save`` of a plain state dict, or of ``{"state_dict": ...}`` /
  ``{"model": ...}`` as written by Lightning / timm training scripts). Prefixes ``module.``, ``backbone.``,
  ``body.`` and ``model.`` are stripped, from the file's keys and from this module's keys alike, so a
  torchvision/timm classification checkpoint, a saved ``TimmBackbone`` and a Lightning checkpoint of a whole
  model all load. Missing, unexpected and shape-mismatched keys are logged; a file with no matching key
  raises ``ValueError`` naming the file. A ViT ``pos_embed`` from a square grid (e.g. a 224x224 classification
  or MAE checkpoint, 14x14 patches) is resampled to the model's grid (16x12 at 256x192), as timm does for
  its own weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models._features import FeatureGetterNet
from timm.models.hrnet import HighResolutionNetFeatures
from torch import nn

from sar.utils.errors import UserFacingError

__all__ = ["PretrainedWeightsError", "TimmBackbone", "build_backbone", "load_backbone_weights", "timm_backbone",
           "weights_source"]

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
        self.channels_last = False  # the memory layout PoseModel runs in (timm_backbone sets the config's)

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


def _resample_pos_embed(
    module: nn.Module, name: str, value: torch.Tensor, target_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """A square-grid ViT ``pos_embed`` resampled to the model's patch grid, or None when not applicable."""
    if not name.endswith("pos_embed") or value.ndim != 3 or len(target_shape) != 3:
        return None
    owner = module.get_submodule(name.rpartition(".")[0])
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    if grid is None or value.shape[-1] != target_shape[-1]:
        return None
    prefix = 0 if getattr(owner, "no_embed_class", False) else int(getattr(owner, "num_prefix_tokens", 0))
    side = math.isqrt(max(value.shape[1] - prefix, 0))
    if side * side != value.shape[1] - prefix or target_shape[1] != prefix + int(grid[0]) * int(grid[1]):
        return None
    return resample_abs_pos_embed(
        value.float(), new_size=[int(grid[0]), int(grid[1])], old_size=[side, side], num_prefix_tokens=prefix
    ).to(value.dtype)


def _prune_hrnet_outputs(body: nn.Module) -> None:
    """Drop the final HRNet module's fuse layers for output branches that no requested feature reads."""
    if not isinstance(body, HighResolutionNetFeatures):
        return
    needed = max(int(f["index"]) for f in body.feature_info.get_dicts())  # index i>0 is branch i-1
    last = body.stage4[-1]
    if needed == 0 or not isinstance(last.fuse_layers, nn.ModuleList) or len(last.fuse_layers) <= needed:
        return
    last.fuse_layers = last.fuse_layers[:needed]
    last.multi_scale_output = needed > 1


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local state dict file into ``module`` by prefix-insensitive key matching (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"backbone.pretrained: weights file not found: {path} (absolute: {path.absolute()}). Put the state dict "
            "there (docs/backbones.md, 'Pretrained weights', says where each paper row's weights come from), pass "
            "backbone.pretrained=/path/to/weights.pth, or backbone.pretrained=false to train from random weights."
        )
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
            resampled = _resample_pos_embed(module, name, value, tuple(target[name].shape))
            if resampled is not None:
                log.info("resampled %s from %s to %s", key, tuple(value.shape), tuple(resampled.shape))
                matched[name] = resampled
            else:
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


class PretrainedWeightsError(UserFacingError, RuntimeError):
    """The pretrained weights a config asks for cannot be had (offline, missing file): never a silent random init."""


def weights_source(name: str) -> str:
    """Where timm fetches the pretrained weights of ``name`` (``model.tag``) from, for messages."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (KeyError, RuntimeError, ValueError):  # an unknown name: timm's own error comes first
        cfg = None
    hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub:
        return f"https://huggingface.co/{hub}"
    url = getattr(cfg, "url", None) if cfg is not None else None
    return str(url) if url else "timm's default location"


def _weights_message(name: str, err: BaseException) -> str:
    return (
        f"backbone.pretrained=true: cannot get the pretrained weights of timm model {name!r} from "
        f"{weights_source(name)} ({type(err).__name__}: {err}). Offline? Fetch them once where there is internet "
        "(timm caches them in the Hugging Face cache, HF_HOME), or pass a local state dict file: "
        "backbone.pretrained=/path/to/weights.pth (docs/backbones.md, 'Pretrained weights'); "
        "backbone.pretrained=false trains from random weights."
    )


def build_backbone(
    name: str,
    pretrained: bool | str | Path | None = False,
    out_indices: Sequence[int] | None = None,
    feature_norm: bool = False,
    **timm_kwargs: Any,
) -> TimmBackbone:
    """Build a timm backbone returning its feature maps (default: the last stage only).

    ``feature_norm=True`` applies the model's final norm to the returned maps (ViT; see the module doc).
    """
    indices = tuple(int(i) for i in out_indices) if out_indices is not None else (-1,)
    download = pretrained is True
    try:
        if feature_norm:
            model = timm.create_model(name, pretrained=download, **timm_kwargs)
            if not hasattr(model, "forward_intermediates"):
                raise ValueError(f"feature_norm needs a timm model with forward_intermediates; {name} has none")
            body: nn.Module = FeatureGetterNet(model, out_indices=indices, norm=True)
        else:
            body = timm.create_model(name, pretrained=download, features_only=True, out_indices=indices,
                                     **timm_kwargs)
    except Exception as err:
        if download and not isinstance(err, ValueError | TypeError):  # the weights, not the model, failed
            raise PretrainedWeightsError(_weights_message(name, err)) from err
        raise
    if not feature_norm:
        _prune_hrnet_outputs(body)
    backbone = TimmBackbone(body)
    if isinstance(pretrained, (str, Path)) and str(pretrained).strip():
        load_backbone_weights(backbone, pretrained)
    elif pretrained not in (False, None, True, ""):
        raise ValueError(f"pretrained must be False, True or a file path, got {pretrained!r}")
    return backbone


def timm_backbone(
    *,
    input_size: Sequence[int],
    name: str,
    timm_name: str,
    pretrained: bool | str | None,
    out_indices: Sequence[int] | None,
    feature_norm: bool,
    timm_kwargs: Mapping[str, Any] | None,
    set_img_size: bool,
    input_multiple: int | None,
    channels: int | None,
    stride: int | None,
    channels_last: bool,
) -> TimmBackbone:
    """The ``_target_`` of conf/backbone/*.yaml: a timm backbone for ``input_size`` (w, h), given by the model
    builder (keys documented in docs/backbones.md; every one is required, the YAML states them all).

    ``name`` labels the config in messages; ``timm_kwargs`` go to ``timm.create_model`` (null: none);
    ``set_img_size`` passes ``img_size=(h, w)`` (a ViT's position embedding is built for the configured input);
    ``input_multiple``: input width and height must be multiples of it (e.g. 32 for HRNet, whose lowest branch has
    stride 32 although the head reads the stride-4 one; null: no rule); ``channels`` / ``stride`` document the map
    the head reads and are checked when not null; ``channels_last``: the NHWC memory layout the model runs in
    (`sar.models.pose_model.PoseModel`).
    """
    w, h = (int(v) for v in input_size)
    if input_multiple is not None and (w % int(input_multiple) or h % int(input_multiple)):
        raise ValueError(
            f"input_size {w}x{h} must be a multiple of {input_multiple} for backbone {name} "
            f"({timm_name}; backbone.input_multiple)"
        )
    kwargs = dict(timm_kwargs or {})
    if set_img_size:
        kwargs["img_size"] = (h, w)
    backbone = build_backbone(timm_name, pretrained=pretrained, out_indices=out_indices,
                              feature_norm=bool(feature_norm), **kwargs)
    for key, documented, actual in (("channels", channels, backbone.channels[-1]),
                                    ("stride", stride, backbone.strides[-1])):
        if documented is not None and int(documented) != int(actual):
            raise ValueError(
                f"the backbone config {name} documents {key}={documented} but timm model {timm_name} gives "
                f"{actual}; fix it (or set backbone.{key}=null)"
            )
    backbone.channels_last = bool(channels_last)
    return backbone
