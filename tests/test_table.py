"""`python -m sar.table`: gathering a multirun directory into generic and paper-layout tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from rich.console import Console

from sar.table import build_tables, collect_runs, load_paper_results, main, print_tables, to_markdown

HEADS = ("sar", "heatmap", "heatmap_offset", "regression", "rle")
COMMON = ["trainer.max_epochs=1", "dataset.batch_size=2"]


def _write_run(root: Path, num: int, overrides: list[str], metrics: dict, config: dict | None = None) -> Path:
    run_dir = root / f"{num}_{','.join(overrides)}"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if config is not None:
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _sweep(root: Path) -> None:
    for i, head in enumerate(HEADS):
        metrics = {"AP": 0.5 + 0.01 * i, "AP50": 0.8, "AP75": 0.4 + 0.02 * i, "kpt_error_px": 3.0 + i,
                   "PCK@0.05": 0.25 + 0.1 * i, "train_seconds": 10.0 * (i + 1), "table": None}
        if head == "rle":
            del metrics["PCK@0.05"]  # missing metric -> "—"
        if head == "regression":
            metrics["AP75"] = float("nan")
        _write_run(root, i, [f"head={head}", *COMMON], metrics)


def test_generic_table_five_runs(tmp_path: Path) -> None:
    root = tmp_path / "multirun" / "2024-01-01_00-00-00"
    _sweep(root)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    runs = collect_runs(root)
    assert [r.overrides[0] for r in runs] == [f"head={h}" for h in HEADS]
    tables = build_tables(runs)
    assert len(tables) == 1
    table = tables[0]
    assert table.columns == ["Run", "AP", "AP50", "AP75", "Kpt err (px)", "PCK@0.05", "Train (s)"]
    cells = table.formatted()
    assert [row[0] for row in cells] == [f"head={h}" for h in HEADS]  # labelled by the varying override
    assert cells[0] == ["head=sar", "50.0", "80.0", "40.0", "3.00", "25.0", "10"]
    assert cells[1][1] == "51.0" and cells[1][5] == "35.0"
    assert cells[3][3] == "—"  # NaN
    assert cells[4][5] == "—"  # missing
    assert any("common overrides: dataset.batch_size=2 trainer.max_epochs=1" in n for n in table.notes)

    assert main([str(root)]) == 0
    md = (root / "table.md").read_text()
    assert md.count("| head=") == 5 and "| head=rle | 54.0 | 80.0 | 48.0 | 7.00 | — | 50 |" in md
    rows = list(csv.DictReader((root / "table.csv").open()))
    assert len(rows) == 5
    assert rows[2]["Run"] == "head=heatmap_offset" and float(rows[2]["AP"]) == 52.0
    assert rows[4]["PCK@0.05"] == ""


def test_out_dir_and_empty(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    _sweep(root)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    assert (out / "table.md").exists() and (out / "table.csv").exists()
    assert not (root / "table.md").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1


def _tagged(root: Path) -> None:
    rows = {"table2_vits_sar_deconv": "SAR, with deconvs", "table2_vits_heatmap": "Heatmap"}
    for i, (experiment, row) in enumerate(rows.items()):
        metrics = {"AP": 0.70 + 0.01 * i, "AP50": 0.9, "AP75": 0.8, "kpt_error_px": 2.5,
                   "PCK@0.05": 0.6, "table": {"name": "table2_vits", "row": row}}
        _write_run(root, i, [f"experiment={experiment}"], metrics)
    # an older run without `table` in metrics.json: the tag comes from .hydra/config.yaml
    _write_run(root, 2, ["experiment=table2_vits_rle"], {"AP": 0.6},
               config={"table": {"name": "table2_vits", "row": "RLE"}})
    # an untagged run in the same directory ends up in the generic table
    _write_run(root, 3, ["head=sar"], {"AP": 0.1})


def test_paper_table_side_by_side(tmp_path: Path) -> None:
    root = tmp_path / "tagged"
    _tagged(root)
    tables = build_tables(collect_runs(root))
    assert [t.name for t in tables] == ["table2_vits", "runs"]
    table = tables[0]
    assert table.columns[:4] == ["Method", "Input size", "GFLOPs", "Deconvs"]
    assert table.columns[4:8] == ["AP (ours)", "AP (paper)", "AP ref. (not paper)", "AP50 (ours)"]
    cells = {(row[0], row[3]): row for row in table.formatted()}
    assert len(table.rows) == 6  # every paper row, with or without a run, in the paper's order
    assert [row[0] for row in table.rows] == ["Regression", "RLE", "Heatmap", "Heatmap+Offset", "SAR", "SAR"]
    sar = cells[("SAR", "✓")]
    assert sar[4:6] == ["70.0", "74.0"] and sar[-1] == "experiment=table2_vits_sar_deconv"
    heatmap = cells[("Heatmap", "✓")]
    assert heatmap[4:7] == ["71.0", "72.4", "73.9"]  # ours, paper, MMPose reference
    rle = cells[("RLE", "")]
    assert rle[4:6] == ["60.0", "71.6"] and rle[7] == "—"  # AP50 missing
    regression = cells[("Regression", "")]
    assert regression[4] == "—" and regression[5] == "58.0" and regression[-1] == "—"
    assert any("not paper" in n or "vitpose" in n for n in table.notes)

    md = to_markdown(tables)
    assert "## Supplementary Table 2" in md and "| 74.0 |" in md
    console = Console(record=True, width=250)
    print_tables(tables, console)
    text = console.export_text()
    assert "74.0" in text and "72.4" in text and "head=sar" in text

    only = build_tables(collect_runs(root), only="table2_vits")
    assert [t.name for t in only] == ["table2_vits"]


def test_paper_table_without_runs(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    root.mkdir()
    tables = build_tables([], only="table1_mpii")
    assert len(tables) == 1 and len(tables[0].rows) == 6
    first = tables[0].formatted()[0]
    assert first[:7] == ["Direct Regression", "ResNet-50", "256x256", "—", "83.8", "82.6", "—"]
    assert main([str(root), "--table", "table1_mpii"]) == 0


def test_paper_results_rows_match_experiment_files() -> None:
    """Each row of every task's layouts names an experiment file whose `table` tag points back at that row."""
    from sar.systems.bottomup import BottomUpSystem
    from sar.systems.pose3d import Pose3DSystem

    conf = Path(__file__).resolve().parents[1] / "conf" / "experiment"
    layouts = {**load_paper_results(), **BottomUpSystem.table_layouts(), **Pose3DSystem.table_layouts()}
    assert {"bottomup_coco", "bottomup_crowdpose", "coco_released", "h36m_r50"} <= set(layouts)
    for name, spec in layouts.items():
        for row in spec["rows"]:
            text = (conf / f"{row['experiment']}.yaml").read_text()
            tag = yaml.safe_load(text)["table"]
            assert tag == {"name": name, "row": row["row"]}, row["experiment"]


def test_nested_run_dirs_and_dataset_note(tmp_path: Path) -> None:
    """Override values with '/' nest Hydra's job dirs; runs sort by job number; off-dataset runs are flagged."""
    root = tmp_path / "nested"
    for num in (10, 2):
        run_dir = root / f"{num}_dataset.cache_dir=" / "tmp" / f"data,experiment=coco_r50_sar,seed={num}"
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump(["dataset.cache_dir=/tmp/data", "experiment=coco_r50_sar", f"seed={num}"]))
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"dataset": {"name": "synthetic"}}))
        (run_dir / "metrics.json").write_text(json.dumps(
            {"AP": num / 100, "table": {"name": "coco_256x192", "row": "SAR, ResNet-50"}}))
    runs = collect_runs(root)
    assert [r.name.split("_")[0] for r in runs] == ["2", "10"]
    assert runs[0].dataset == "synthetic"
    (table,) = build_tables(runs)
    sar = [row for row in table.formatted() if row[-1] != "—"]
    assert [(row[0], row[1], row[3], row[-1]) for row in sar] == [
        ("SAR", "ResNet-50", "2.0", "seed=2"), ("SAR", "ResNet-50", "10.0", "seed=10")]
    assert any(n.startswith("not on coco") and "seed=2 (synthetic)" in n for n in table.notes)


def test_the_released_and_ablation_tables_place_their_runs(tmp_path: Path) -> None:
    """A run of each new row lands in its table, in its row, with its metrics (whole-body part APs included)."""
    rows = {"coco_released": ("SAR, HRNet-W48", {"AP": 0.75}), "coco_ablation_r50": ("SAR", {"AP": 0.7}),
            "wholebody_released": ("SAR, HRNet-W48", {"AP_wholebody": 0.61, "AP_body": 0.7, "AP_foot": 0.65,
                                                      "AP_face": 0.8, "AP_left_hand": 0.5, "AP_right_hand": 0.52})}
    for name, (row, metrics) in rows.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "metrics.json").write_text(json.dumps({**metrics, "table": {"name": name, "row": row}}))
    tables = {t.name: t for t in build_tables(collect_runs(tmp_path))}
    assert set(tables) == set(rows)
    whole = next(r for r in tables["wholebody_released"].formatted() if r[0] == "SAR")
    assert whole[3:6] == ["61.0", "—", "66.1"] and "50.0" in whole and "52.0" in whole  # ours | paper | ref.
    released = [r for r in tables["coco_released"].formatted() if "75.0" in r]
    assert len(released) == 1 and released[0][1] == "HRNet-W48"
    assert main([str(tmp_path), "--table", "coco_ablation_r50"]) == 0


def test_a_bottomup_run_lands_in_the_multi_person_table_with_its_anchor(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"dataset": {"name": "crowdpose"}, "task": {"system": {"_target_": "sar.systems.bottomup.BottomUpSystem"}}}))
    (run_dir / "metrics.json").write_text(json.dumps({"AP": 0.5, "AP_easy": 0.6, "AP_medium": 0.5, "AP_hard": 0.4,
                                                      "table": {"name": "bottomup_crowdpose", "row": "DEKR"}}))
    (table,) = build_tables(collect_runs(tmp_path))
    dekr = next(r for r in table.formatted() if r[0] == "DEKR")
    assert table.name == "bottomup_crowdpose" and dekr[3:6] == ["50.0", "—", "65.7"]  # ours | paper | anchor
