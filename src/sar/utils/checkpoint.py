"""Rebuild a trained model from a checkpoint file alone (used by `sar.evaluate`, `sar.predict`, `sar.export`).

A checkpoint written by `python -m sar.train` carries the resolved run config in
``hyper_parameters["cfg"]``, hence the task's LightningModule (``task.system``), the network, the codec and the
keypoint spec (``cfg["dataset"]["spec"]``). Nothing else (no config file, no dataset) is needed. Configs stored
before the ``_target_`` composition are translated on load (:func:`sar.stored_config.upgrade_config`).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sar.stored_config import upgrade_config

__all__ = ["CheckpointError", "checkpoint_config", "inference_config", "load_system", "read_checkpoint"]


class CheckpointError(ValueError):
    """A file given as a checkpoint is not a readable checkpoint (corrupt, truncated, or something else)."""


def _is_weights_only_error(err: BaseException) -> bool:
    """torch's weights-only unpickler refusing an object (a Lightning checkpoint may store such objects): a
    ``pickle.UnpicklingError`` whose message names ``weights_only``. Any other failure means a bad file."""
    return isinstance(err, pickle.UnpicklingError) and "weights_only" in str(err)


def _not_readable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable checkpoint ({reason}); give a .ckpt file written by "
                           "`python -m sar.train`")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict, on the CPU. Only open checkpoints you trust (Lightning files are pickles).

    Loads with ``weights_only=True`` first; the unsafe ``weights_only=False`` load is tried only when the
    weights-only unpickler refused an object (see :func:`_is_weights_only_error`). A file that is not a readable
    checkpoint (corrupt, truncated, empty, text, a bare tensor or state dict) raises :class:`CheckpointError`
    naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not _is_weights_only_error(err):
                raise
            data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # whatever torch.load raises, the file is the problem: name it
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise _not_readable(path, f"{type(err).__name__}: {first}" if first else type(err).__name__) from err
    if not isinstance(data, Mapping):
        raise _not_readable(path, f"it holds a {type(data).__name__}, not a checkpoint dict")
    if not isinstance(data.get("state_dict"), Mapping):
        keys = ", ".join(repr(k) for k in list(data)[:5])
        raise _not_readable(path, f"no 'state_dict' entry (keys {keys}{', ...' if len(data) > 5 else ''}; a bare "
                                  "state dict?)")
    return data


def checkpoint_config(ckpt: Mapping[str, Any] | str | os.PathLike[str], source: str | None = None) -> dict[str, Any]:
    """A deep copy of the resolved run config stored in a checkpoint (``hyper_parameters["cfg"]``); ``source``
    names the file in errors when ``ckpt`` is an already loaded dict."""
    if isinstance(ckpt, (str, os.PathLike)):
        source, data = str(Path(ckpt).expanduser()), read_checkpoint(ckpt)
    else:
        source, data = source or "<checkpoint>", ckpt
    hparams = data.get("hyper_parameters")
    cfg = hparams.get("cfg") if isinstance(hparams, Mapping) else None
    if not isinstance(cfg, Mapping):
        raise CheckpointError(
            f"{source}: not a readable sar checkpoint: no run config in hyper_parameters['cfg']; only checkpoints "
            "written by `python -m sar.train` can be used"
        )
    return upgrade_config(copy.deepcopy(dict(cfg)))


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
    """The task's LightningModule (``task.system`` of the stored config, :func:`sar.build.build_system`) with the
    checkpoint's weights, in eval mode.

    ``cfg`` replaces the checkpoint's config (e.g. with evaluation knobs changed); it must describe the same
    network, which ``load_state_dict(strict=True)`` checks.
    """
    from sar.build import build_system

    data = read_checkpoint(path)
    cfg = inference_config(cfg if cfg is not None else checkpoint_config(data, source=str(path)))
    system = build_system(cfg)
    system.load_state_dict(data["state_dict"], strict=True)
    return system.to(map_location).eval()
