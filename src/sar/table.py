"""`python -m sar.table <multirun dir> [--table NAME] [--out DIR]`: gather runs into the paper's tables.

Every ``metrics.json`` below the directory is one run (see ``sar.train``); its Hydra overrides are read from
``<run>/.hydra/overrides.yaml``. Runs whose config carries a ``table: {name, row}`` key (the experiment files
in ``conf/experiment/``) are placed in that table, in the paper's row order, with the paper's own numbers
next to ours (``src/sar/paper_results.yaml``; MMPose zoo numbers appear as "ref. (not paper)"). Rows of a
paper table without a run show "—" for ours. Untagged runs (e.g. a plain ``-m head=sar,heatmap`` sweep) go
into a generic table: one row per run labelled by the overrides that differ between runs.

Percent metrics (AP, PCK) are stored as fractions in ``metrics.json`` and shown in %. Missing or NaN values
print as "—" (an empty cell in the CSV). The tables are printed with Rich and written as ``table.md`` and
``table.csv`` into the directory (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table as RichTable

__all__ = ["Run", "Table", "build_tables", "collect_runs", "load_paper_results", "main", "write_outputs"]

PAPER_RESULTS = Path(__file__).with_name("paper_results.yaml")
MISSING = "—"
GENERIC = "runs"

# Generic table columns: (metrics.json key, label, scale); scale 100 = fraction shown in %.
GENERIC_METRICS: tuple[tuple[str, str, float], ...] = (
    ("AP", "AP", 100.0),
    ("AP50", "AP50", 100.0),
    ("AP75", "AP75", 100.0),
    ("kpt_error_px", "Kpt err (px)", 1.0),
    ("PCK@0.05", "PCK@0.05", 100.0),
    ("train_seconds", "Train (s)", 1.0),
)
COLUMN_LABELS = {"method": "Method", "backbone": "Backbone", "input": "Input size", "gflops": "GFLOPs",
                 "deconvs": "Deconvs"}


@dataclass
class Run:
    """One finished run: its directory, metrics.json content, Hydra overrides and table tag (or None)."""

    run_dir: Path
    metrics: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    table: dict[str, Any] | None = None
    name: str = ""  # path relative to the gathered directory (override values with "/" nest Hydra dirs)
    dataset: str | None = None  # dataset.name of the run's config (.hydra/config.yaml), when readable
    system: str | None = None  # task.system._target_ of the run's config (None: a run from before the task seam)

    def __post_init__(self) -> None:
        self.name = self.name or self.run_dir.name


@dataclass
class Table:
    """A rendered table: column labels, one decimal count per column (None = text) and the cell values."""

    name: str
    title: str
    columns: list[str]
    decimals: list[int | None]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)

    def cell(self, value: Any, decimals: int | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return MISSING
        if decimals is None or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:.{decimals}f}"

    def formatted(self) -> list[list[str]]:
        return [[self.cell(v, d) for v, d in zip(row, self.decimals)] for row in self.rows]


# -- gathering ---------------------------------------------------------------------------------------------
def load_paper_results(path: str | Path | None = None) -> dict[str, Any]:
    """The ``tables`` mapping of ``paper_results.yaml``."""
    data = yaml.safe_load(Path(path or PAPER_RESULTS).read_text(encoding="utf-8")) or {}
    return dict(data.get("tables") or {})


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _job_key(run: Run) -> tuple[int, str]:
    """Sort by Hydra job number (``<num>_<overrides>`` sub-directories), then by path."""
    match = re.match(r"(\d+)(?:_|$)", Path(run.name).parts[0] if run.name else "")
    return (int(match.group(1)) if match else 1 << 30, str(run.run_dir))


def collect_runs(root: str | Path) -> list[Run]:
    """Every run below ``root`` that wrote a ``metrics.json`` (unreadable files are skipped)."""
    runs = []
    root = Path(root)
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(metrics, dict):
            continue
        run_dir = path.parent
        overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
        config = _read_yaml(run_dir / ".hydra" / "config.yaml")
        config = config if isinstance(config, dict) else {}
        table = metrics.get("table")
        if table is None:  # older runs: the resolved Hydra config still has it
            table = config.get("table")
        dataset_cfg = config.get("dataset")
        dataset = dataset_cfg.get("name") if isinstance(dataset_cfg, dict) else None
        task_cfg = config.get("task") if isinstance(config.get("task"), dict) else {}
        system = (task_cfg.get("system") or {}).get("_target_") if isinstance(task_cfg.get("system"), dict) else None
        runs.append(Run(run_dir, metrics, [str(o) for o in overrides or []],
                        table if isinstance(table, dict) and table.get("name") else None,
                        str(run_dir.relative_to(root)), dataset, system))
    return sorted(runs, key=_job_key)


def _value(metrics: dict[str, Any], key: str, scale: float) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) * scale


def run_labels(runs: list[Run]) -> dict[Path, str]:
    """Label each run by the overrides that differ between the runs (all of them for a single run)."""
    def relevant(run: Run) -> list[str]:
        return [o for o in run.overrides if not o.lstrip("+~").startswith("hydra.")]

    common = set.intersection(*(set(relevant(r)) for r in runs)) if len(runs) > 1 else set()
    labels = {}
    for run in runs:
        varying = [o for o in relevant(run) if o not in common]
        labels[run.run_dir] = ",".join(varying) or ",".join(relevant(run)) or run.name
    return labels


# -- building ----------------------------------------------------------------------------------------------
def paper_table(name: str, spec: dict[str, Any], runs: list[Run]) -> Table:
    """A paper table: info columns, then per metric ours | paper (| ref.), then ours-only extras and the run."""
    metrics = list(spec.get("metrics") or [])
    extra = list(spec.get("extra") or [])
    rows_spec = list(spec.get("rows") or [])
    has_ref = {m["key"]: any(m["key"] in (r.get("reference") or {}) for r in rows_spec) for m in metrics}
    info = list(spec.get("columns") or ["method"])

    columns = [COLUMN_LABELS.get(c, c) for c in info]
    decimals: list[int | None] = [None] * len(info)
    for m in metrics:
        columns += [f"{m['label']} (ours)", f"{m['label']} (paper)"]
        decimals += [1, 1]
        if has_ref[m["key"]]:
            columns.append(f"{m['label']} ref. (not paper)")
            decimals.append(1)
    for m in extra:
        columns.append(f"{m['label']} (ours)")
        decimals.append(2 if float(m.get("scale", 1)) == 1 else 1)
    columns.append("Run")
    decimals.append(None)

    labels = run_labels(runs) if runs else {}

    def line(row: dict[str, Any], run: Run | None) -> list[Any]:
        ours = run.metrics if run else {}
        paper = row.get("paper") or {}
        ref = row.get("reference") or {}
        cells: list[Any] = [row.get(c, "") for c in info]
        for m in metrics:
            cells += [_value(ours, m["key"], float(m.get("scale", 1))), paper.get(m["key"])]
            if has_ref[m["key"]]:
                cells.append(ref.get(m["key"]))
        cells += [_value(ours, m["key"], float(m.get("scale", 1))) for m in extra]
        cells.append(labels[run.run_dir] if run else None)
        return cells

    by_row: dict[str, list[Run]] = {}
    for run in runs:
        by_row.setdefault(str(run.table.get("row")), []).append(run)  # type: ignore[union-attr]
    rows: list[list[Any]] = []
    for row in rows_spec:
        for run in by_row.pop(str(row["row"]), None) or [None]:
            rows.append(line(row, run))
    for label, extra_runs in by_row.items():  # tagged with a row the paper table does not have
        for run in extra_runs:
            rows.append(line({"method": label, "row": label}, run))

    notes = [f"ref. (not paper): {r['row']}: {r['reference']['source']}" for r in rows_spec
             if (r.get("reference") or {}).get("source")]
    if by_row:
        notes.append(f"rows not in the paper's table: {', '.join(by_row)}")
    expected = spec.get("dataset")
    off = sorted({f"{labels[r.run_dir]} ({r.dataset})" for r in runs if expected and r.dataset not in (None, expected)})
    if off:
        notes.append(f"not on {expected}, so not comparable with the paper: {', '.join(off)}")
    return Table(name, str(spec.get("title", name)), columns, decimals, rows, notes)


def generic_table(runs: list[Run], name: str = GENERIC, title: str | None = None) -> Table:
    """One row per run, labelled by its overrides: AP, AP50, AP75, keypoint error, strict PCK, train time."""
    labels = run_labels(runs) if runs else {}
    columns = ["Run", *(label for _, label, _ in GENERIC_METRICS)]
    decimals: list[int | None] = [None, *(2 if key == "kpt_error_px" else (0 if key == "train_seconds" else 1)
                                          for key, _, _ in GENERIC_METRICS)]
    rows = [[labels[r.run_dir], *(_value(r.metrics, k, s) for k, _, s in GENERIC_METRICS)] for r in runs]
    notes = []
    common = sorted(set.intersection(*(set(r.overrides) for r in runs))) if len(runs) > 1 else []
    common = [o for o in common if not o.lstrip("+~").startswith("hydra.")]
    if common:
        notes.append("common overrides: " + " ".join(common))
    notes.append("AP on the dataset's evaluation boxes; Kpt err and PCK@0.05 (error <= 0.05 x max(w, h) of the "
                 "GT box) on GT boxes")
    return Table(name, title or f"{len(runs)} runs", columns, decimals, rows, notes)


DEFAULT_SYSTEM = "sar.systems.topdown.TopDownSystem"  # the task of runs written before the task seam


def task_layouts(runs: list[Run]) -> dict[str, Any]:
    """The table layouts of the tasks the runs belong to (``PoseSystem.table_layouts`` of each run's
    ``task.system``), merged in the order the tasks first appear."""
    from hydra.utils import get_object

    layouts: dict[str, Any] = {}
    for target in dict.fromkeys(run.system or DEFAULT_SYSTEM for run in runs) or [DEFAULT_SYSTEM]:
        layouts.update(get_object(target).table_layouts())
    return layouts


def build_tables(runs: list[Run], paper: dict[str, Any] | None = None, only: str | None = None) -> list[Table]:
    """Paper tables for tagged runs (in the layouts' order), then a generic table of the untagged runs. ``paper``:
    the layouts (default: those of the runs' tasks, :func:`task_layouts`)."""
    paper = task_layouts(runs) if paper is None else paper
    tagged: dict[str, list[Run]] = {}
    untagged: list[Run] = []
    for run in runs:
        if run.table:
            tagged.setdefault(str(run.table["name"]), []).append(run)
        else:
            untagged.append(run)
    names = [n for n in paper if n in tagged] + [n for n in tagged if n not in paper]
    if only is not None:
        names = [only] if (only in paper or only in tagged) else []
    tables = []
    for name in names:
        if name in paper:
            tables.append(paper_table(name, paper[name], tagged.get(name, [])))
        else:
            tables.append(generic_table(tagged[name], name, f"{name} (no paper numbers)"))
    if untagged and only in (None, GENERIC):
        tables.append(generic_table(untagged))
    return tables


# -- output ------------------------------------------------------------------------------------------------
def to_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out += [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.formatted()]
        out += [""] + [f"- {n}" for n in t.notes] + ([""] if t.notes else [])
    return "\n".join(out).rstrip() + "\n"


def write_csv(tables: list[Table], path: Path) -> None:
    """One CSV for all tables: a ``table`` column, then the union of the columns (numbers unformatted)."""
    header: list[str] = ["table"]
    for t in tables:
        header += [c for c in t.columns if c not in header]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for t in tables:
            for row in t.rows:
                record: dict[str, Any] = {"table": t.name}
                for column, value, dec in zip(t.columns, row, t.decimals):
                    if value is None or (isinstance(value, float) and math.isnan(value)):
                        value = ""
                    elif isinstance(value, float):
                        value = round(value, 4 if dec is None else dec + 2)
                    record[column] = value
                writer.writerow(record)


def print_tables(tables: list[Table], console: Console | None = None) -> None:
    """Rich tables; a non-terminal console (a pipe, a log file) is widened so that no cell wraps."""
    console = console or Console()
    for t in tables:
        headers = [c.replace(" (", "\n(", 1) for c in t.columns]
        cells = t.formatted()
        widths = [max([len(line) for line in h.split("\n")] + [len(r[i]) for r in cells])
                  for i, h in enumerate(headers)]
        if not console.is_terminal:
            console.width = max(console.width, sum(widths) + 3 * len(widths) + 1)
        rich = RichTable(title=t.title, caption="\n".join(t.notes) or None, caption_justify="left")
        for i, header in enumerate(headers):
            rich.add_column(header, justify="left" if t.decimals[i] is None else "right")
        for row in cells:
            rich.add_row(*row)
        console.print(rich)


def write_outputs(tables: list[Table], out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "table.md", out / "table.csv"
    md.write_text(to_markdown(tables), encoding="utf-8")
    write_csv(tables, csv_path)
    return md, csv_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sar.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="multirun (or any) directory holding */metrics.json")
    parser.add_argument("--table", default=None,
                        help=f"only this table (a paper_results.yaml name, or '{GENERIC}' for untagged runs)")
    parser.add_argument("--out", type=Path, default=None, help="where table.md / table.csv go (default: root)")
    parser.add_argument("--paper-results", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    runs = collect_runs(args.root)
    paper = load_paper_results(args.paper_results) if args.paper_results else task_layouts(runs)
    tables = build_tables(runs, paper, only=args.table)
    console = Console()
    if not tables:
        console.print(f"no runs with metrics.json under {args.root}" if not runs else f"no table '{args.table}'")
        return 1
    print_tables(tables, console)
    md, csv_path = write_outputs(tables, args.out or args.root)
    console.print(f"{len(runs)} runs; wrote {md} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
