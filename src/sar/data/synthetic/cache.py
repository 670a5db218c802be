"""Writing a synthetic dataset in any format (:func:`generate_format`) and the on-disk cache keyed by config hash
(:func:`ensure_synthetic`): ``<cache_dir>/<fmt>_<hash>``, complete when its marker matches the config."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sar.data.synthetic.coco import generate, is_complete
from sar.data.synthetic.config import SyntheticConfig, config_hash
from sar.data.synthetic.formats import WRITERS
from sar.utils.run_lock import pid_alive

__all__ = ["FORMATS", "ensure_synthetic", "generate_format"]

#: Output formats of :func:`ensure_synthetic` (``coco``: :func:`~sar.data.synthetic.coco.generate`; the others:
#: :data:`~sar.data.synthetic.formats.WRITERS`, each in the real benchmark's layout).
FORMATS: tuple[str, ...] = ("coco", *WRITERS)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r} (known: {', '.join(FORMATS)})")


def generate_format(cfg: SyntheticConfig | Mapping[str, Any], root: Path | str, fmt: str = "coco",
                    num_workers: int | None = None) -> Path:
    """Write the synthetic dataset in format ``fmt`` (one of :data:`FORMATS`) into ``root``, marker last."""
    if fmt == "coco":
        return generate(cfg, root, num_workers=num_workers)
    _check_format(fmt)
    cfg = SyntheticConfig.from_any(cfg)
    if cfg.crowd > 0:
        raise ValueError(f"dataset.synthetic.crowd={cfg.crowd}: crowd regions are written by the COCO writer only "
                         f"(format {fmt!r} has no such annotation); set it to 0")
    return WRITERS[fmt](cfg, Path(root), num_workers)


def ensure_synthetic(cfg: SyntheticConfig | Mapping[str, Any], cache_dir: Path | str,
                     num_workers: int | None = None, fmt: str = "coco") -> Path:
    """Return ``cache_dir/<fmt>_<hash>``, generating it first if missing or incomplete.

    ``fmt`` picks the written format (:data:`FORMATS`); the hash covers the config and the format.
    Generation goes to a temporary sibling directory which is renamed into place after the marker is
    written, so an interrupted run never leaves a directory that looks complete. Stale temporaries of dead
    processes are removed.
    """
    cfg = SyntheticConfig.from_any(cfg)
    _check_format(fmt)
    cache_dir = Path(cache_dir)
    key = config_hash(cfg, fmt)
    root = cache_dir / f"{fmt}_{key}"
    if is_complete(root, cfg, fmt):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f".{fmt}_{key}.tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = cache_dir / f".{fmt}_{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_format(cfg, tmp, fmt, num_workers=num_workers)
        if root.exists():
            if is_complete(root, cfg, fmt):  # finished concurrently by another process
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
