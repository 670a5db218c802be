"""The entry points run as a user runs them, ``python -m sar.<module> ...`` in a subprocess (end-to-end tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_module(module: str, *args: str, check: bool = True, timeout: float = 600,
               **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` with its output captured as text (``kwargs``: ``env``, ``cwd``, ...); with
    ``check`` it must exit 0 (else the assertion shows the ends of its stdout and stderr)."""
    proc = subprocess.run([sys.executable, "-m", module, *args], check=False, capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def train(run_dir: Path, *overrides: str, **kwargs: Any) -> dict[str, Any]:
    """``python -m sar.train hydra.run.dir=<run_dir> <overrides>``, which must succeed; its metrics.json."""
    run_module("sar.train", f"hydra.run.dir={run_dir}", *overrides, **kwargs)
    return read_json(run_dir / "metrics.json")
