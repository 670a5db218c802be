"""Hydra callback: at the end of a sweep (``python -m sar.train -m ...``) gather its jobs into a table.

Configured under ``hydra.callbacks`` in ``conf/train.yaml``. After the last job, ``on_multirun_end`` reads
every ``metrics.json`` below the sweep directory through :mod:`sar.table` (paper tables for tagged runs, a
generic one-row-per-job table otherwise), prints it, and writes ``summary.md`` and ``summary.csv`` into the
sweep directory. Jobs without a ``metrics.json`` (failed, or still running under a remote launcher) are
listed below the table. A failure here only logs a warning: the sweep's results are never lost over it.
The same table can be rebuilt at any time with ``python -m sar.table <sweep dir>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["SweepSummary", "write_summary"]

log = logging.getLogger("sar.sweep")


def write_summary(sweep_dir: str | Path, name: str = "summary", console: Any = None) -> tuple[Path, Path] | None:
    """Print the sweep's table and write ``<name>.md`` / ``<name>.csv`` into ``sweep_dir``.

    Returns the two paths, or None when no job of the sweep wrote a ``metrics.json``."""
    from rich.console import Console

    from sar.table import build_tables, collect_runs, print_tables, to_markdown, write_csv

    sweep_dir = Path(sweep_dir)
    console = console or Console()
    runs = collect_runs(sweep_dir)
    finished = {r.run_dir.resolve() for r in runs}
    jobs = sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml"))
    missing = [str(j.relative_to(sweep_dir)) for j in jobs if j.resolve() not in finished]
    if not runs:
        console.print(f"sweep {sweep_dir}: no job wrote metrics.json ({len(jobs)} job directories)")
        return None
    tables = build_tables(runs)
    markdown = to_markdown(tables)
    if missing:
        markdown += f"\nJobs without metrics.json (failed or unfinished): {', '.join(missing)}\n"
    md, csv_path = sweep_dir / f"{name}.md", sweep_dir / f"{name}.csv"
    md.write_text(f"# Sweep {sweep_dir.name}: {len(runs)} of {len(jobs) or len(runs)} jobs finished\n\n{markdown}",
                  encoding="utf-8")
    write_csv(tables, csv_path)
    print_tables(tables, console)
    if missing:
        console.print(f"jobs without metrics.json: {', '.join(missing)}")
    console.print(f"sweep summary: {md} and {csv_path}")
    return md, csv_path


class SweepSummary(Callback):
    """``hydra.callbacks.sweep_summary``: ``enabled`` (bool) and ``name`` (file stem, default ``summary``)."""

    def __init__(self, enabled: bool = True, name: str = "summary") -> None:
        self.enabled = bool(enabled)
        self.name = str(name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            write_summary(Path(str(config.hydra.sweep.dir)), self.name)
        except Exception:  # a summary failure must not fail a finished sweep
            log.warning("could not write the sweep summary", exc_info=True)
