"""Rebuild a trained model from a checkpoint file alone (used by `sar.evaluate`, `sar.predict`, `sar.export`).

A checkpoint written by `python -m sar.train` carries the resolved run config in
``hyper_parameters["cfg"]`` (see :class:`sar.systems.topdown.TopDownSystem`), hence the network, the codec and
the keypoint spec (``cfg["dataset"]["spec"]``). Nothing else (no config file, no dataset) is needed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["checkpoint_config", "inference_config", "load_system", "read_checkpoint"]


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict, on the CPU. Only open checkpoints you trust (Lightning files are pickles)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - Lightning may store objects the safe unpickler refuses
        return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_config(ckpt: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A deep copy of the resolved run config stored in a checkpoint (``hyper_parameters["cfg"]``)."""
    source = ckpt if isinstance(ckpt, (str, os.PathLike)) else "<checkpoint>"
    data = read_checkpoint(ckpt) if isinstance(ckpt, (str, os.PathLike)) else ckpt
    cfg = (data.get("hyper_parameters") or {}).get("cfg")
    if not isinstance(cfg, Mapping):
        raise ValueError(  # noqa: TRY004 - a bad file, not a bad argument type
            f"{source}: no run config in hyper_parameters['cfg']; only checkpoints written by `python -m sar.train` "
            "(TopDownSystem) can be used"
        )
    return copy.deepcopy(dict(cfg))


def inference_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` made safe to rebuild the network offline: the backbone's pretrained weights are not fetched
    (the checkpoint's state dict replaces them anyway)."""
    cfg = copy.deepcopy(dict(cfg))
    cfg["backbone"] = dict(cfg["backbone"], pretrained=False)
    return cfg


def load_system(
    path: str | os.PathLike[str],
    cfg: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
):
    """:class:`TopDownSystem` with the checkpoint's weights, in eval mode.

    ``cfg`` replaces the checkpoint's config (e.g. with evaluation knobs changed); it must describe the same
    network, which ``load_state_dict(strict=True)`` checks.
    """
    from sar.systems.topdown import TopDownSystem

    data = read_checkpoint(path)
    cfg = inference_config(cfg if cfg is not None else checkpoint_config(data))
    system = TopDownSystem(cfg)
    system.load_state_dict(data["state_dict"], strict=True)
    return system.to(map_location).eval()
