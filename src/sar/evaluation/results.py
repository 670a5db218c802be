"""Crash-safe writing of evaluation artefacts (result json files, ``metrics.json``).

Every file is written to a temporary sibling in the same directory, flushed and fsync'ed, and then moved over
the destination with :func:`os.replace` (atomic on POSIX). A crash at any point therefore leaves either the old
file or the complete new one, never a truncated file.

The files are **strict JSON**: a non-finite float (``nan``, ``inf``, ``-inf``; Python or numpy, at any depth of
dicts, lists, tuples and arrays) is written as ``null``, and the encoder runs with ``allow_nan=False``, so no
``NaN`` / ``Infinity`` token can reach a file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS_FILENAME", "report_metrics", "results_path", "write_json_atomic", "write_metrics", "write_results",
]

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


def _finite_or_null(obj: Any) -> Any:
    """``obj`` as plain JSON values with every non-finite float replaced by ``None`` (recursively)."""
    if isinstance(obj, float):  # numpy float64 included
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int):  # bool is an int
        return obj
    if isinstance(obj, dict):
        return {key: _finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_null(value) for value in obj]
    if isinstance(obj, np.floating):
        return _finite_or_null(float(obj))
    return _finite_or_null(_json_default(obj))  # arrays, numpy ints, paths, tensors; TypeError for the rest


def _dumps_strict(obj: Any, indent: int | None) -> str:
    """Strict JSON text of ``obj``: non-finite floats become ``null`` (the common, all-finite case is encoded
    once, without the extra walk)."""
    try:
        return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rewrite it as null, then encode again
        return json.dumps(_finite_or_null(obj), indent=indent, default=_json_default, allow_nan=False)


def write_json_atomic(obj: Any, path: str | os.PathLike[str], indent: int | None = None) -> Path:
    """Serialise ``obj`` as strict JSON to ``path`` atomically and return the path.

    numpy scalars and arrays are converted to plain Python values; non-finite floats (``nan``, ``+-inf``) are
    written as ``null`` (``allow_nan=False``: nothing non-standard is written). Parent directories are created. If
    serialisation fails, the destination is left untouched and the temporary file is removed.
    """
    path = Path(path)
    text = _dumps_strict(obj, indent)  # before any file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
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


def results_path(out_dir: str | os.PathLike[str], prefix: str = "results") -> Path:
    """Where an evaluator writes the predictions it evaluated: ``<out_dir>/<prefix>_keypoints.json``."""
    return Path(out_dir) / f"{prefix}_keypoints.json"


def write_results(results: Any, out_dir: str | os.PathLike[str] | None, prefix: str = "results") -> Path | None:
    """Write an evaluator's results list to :func:`results_path` (atomically, strict JSON); nothing when
    ``out_dir`` is None. Returns the written path (or None)."""
    if out_dir is None:
        return None
    return write_json_atomic(results, results_path(out_dir, prefix))


def write_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``metrics`` to ``<run_dir>/metrics.json`` atomically, overwriting any existing file (strict JSON: a
    ``nan`` metric is written as ``null``).

    Existing content is *not* merged: the file always holds exactly ``metrics``. Returns the written path.
    """
    return write_json_atomic(dict(metrics), Path(run_dir) / METRICS_FILENAME, indent=2)


def report_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike[str], log: logging.Logger) -> Path:
    """`write_metrics`, then log the path and the float-valued metrics (the end of a train/evaluate run)."""
    path = write_metrics(metrics, run_dir)
    log.info("metrics written to %s: %s", path, {k: v for k, v in metrics.items() if isinstance(v, float)})
    return path
