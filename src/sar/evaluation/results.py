"""Crash-safe writing of evaluation artefacts (result json files, ``metrics.json``).

Every file is written to a temporary sibling in the same directory, flushed and fsync'ed, and then moved over
the destination with :func:`os.replace` (atomic on POSIX). A crash at any point therefore leaves either the old
file or the complete new one, never a truncated file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS_FILENAME", "report_metrics", "write_json_atomic", "write_metrics"]

METRICS_FILENAME = "metrics.json"


def _json_default(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tensors-like objects to JSON-serialisable values."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)  # e.g. torch tensors, without importing torch here
    if callable(tolist):
        return tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> Path:
    """Serialise ``obj`` as JSON to ``path`` atomically and return the path.

    numpy scalars and arrays are converted to plain Python values. Parent directories are created. If
    serialisation fails, the destination is left untouched and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def write_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``metrics`` to ``<run_dir>/metrics.json`` atomically, overwriting any existing file.

    Existing content is *not* merged: the file always holds exactly ``metrics``. Returns the written path.
    """
    return write_json_atomic(dict(metrics), Path(run_dir) / METRICS_FILENAME, indent=2)


def report_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike[str], log: logging.Logger) -> Path:
    """`write_metrics`, then log the path and the float-valued metrics (the end of a train/evaluate run)."""
    path = write_metrics(metrics, run_dir)
    log.info("metrics written to %s: %s", path, {k: v for k, v in metrics.items() if isinstance(v, float)})
    return path
