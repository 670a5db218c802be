"""Crash-safe checkpoint files: a Lightning ``CheckpointIO`` that writes atomically in the target directory.

Lightning's default IO stages a checkpoint in ``$TMPDIR`` and moves it into place; when ``$TMPDIR`` is another
filesystem (node-local scratch, shared run directory: the usual cluster setup) that move is a copy, and a kill
during it leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` instead

1. refuses a checkpoint whose model or optimiser state holds a non-finite value (a diverged run never
   overwrites the last good checkpoint, see :mod:`sar.callbacks.finite`);
2. writes ``<dir>/.<name>.<pid>.tmp`` next to the target, flushes and ``fsync``s it;
3. moves it over the target with :func:`os.replace` (atomic within one filesystem) and ``fsync``s the
   directory, so a kill at any point leaves the old file or the complete new one.

Temp files of killed writes are removed by :func:`remove_stale_temp_files` (called by ``sar.train`` once it
holds the run directory's lock). :func:`newest_readable_checkpoint` picks the checkpoint a run resumes from
when ``last.ckpt`` cannot be read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

__all__ = [
    "AtomicCheckpointIO",
    "NonFiniteCheckpointError",
    "is_readable_checkpoint",
    "newest_readable_checkpoint",
    "remove_stale_temp_files",
]

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


class NonFiniteCheckpointError(RuntimeError):
    """A checkpoint about to be written holds NaN/inf weights or optimiser state."""


def named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted name, tensor)`` of every tensor nested in dicts / lists / tuples."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}[{i}]")


def first_nonfinite(checkpoint: Mapping[str, Any]) -> str | None:
    """Name of the first floating tensor with a NaN/inf in the checkpoint's weights or optimiser states."""
    for section in ("state_dict", "optimizer_states"):
        for name, tensor in named_tensors(checkpoint.get(section), section):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """The staging file of ``path``: a hidden sibling named after the target and this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with same-directory atomic writes and a finiteness check (module docstring)."""

    def __init__(self, check_finite: bool = True) -> None:
        super().__init__()
        self.check_finite = check_finite

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        if self.check_finite and (bad := first_nonfinite(checkpoint)) is not None:
            raise NonFiniteCheckpointError(
                f"refusing to write {path}: {bad} holds non-finite values (the previous checkpoint is kept)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as fh:
                self._write(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def _write(self, checkpoint: dict[str, Any], fh: Any) -> None:
        """Serialise into an open file (a seam for the kill-during-write tests)."""
        torch.save(checkpoint, fh)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise RuntimeError(f"checkpoint {path} is not readable ({type(err).__name__}: {err})") from err


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete staging files (``.<name>.<pid>.tmp``) left by killed checkpoint writes; returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for tmp in sorted(directory.glob(f".*{TEMP_SUFFIX}")):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    if removed:
        log.warning("removed %d partial checkpoint file(s) of interrupted writes in %s: %s", len(removed),
                    directory, ", ".join(p.name for p in removed))
    return removed


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """The ``global_step`` of a readable checkpoint file, None when it does not load as one. Memory-mapped: the
    file's structure is read (a truncated file fails), its tensor data is not."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - any failure means: not usable for a resume
        return None
    if not isinstance(data, Mapping) or "state_dict" not in data:
        return None
    return int(data.get("global_step", 0))


def is_readable_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` loads as a checkpoint dict (a truncated or corrupt file does not)."""
    return checkpoint_step(path) is not None


def newest_readable_checkpoint(directory: str | os.PathLike[str], exclude: Path | None = None) -> Path | None:
    """The readable ``*.ckpt`` in ``directory`` (other than ``exclude``) furthest into training (highest
    ``global_step``, the most recently written among equals), or None."""
    best: tuple[int, float, Path] | None = None
    for path in Path(directory).glob("*.ckpt"):
        if path == exclude or (step := checkpoint_step(path)) is None:
            continue
        key = (step, path.stat().st_mtime, path)
        best = key if best is None or key[:2] > best[:2] else best
    return best[2] if best else None
