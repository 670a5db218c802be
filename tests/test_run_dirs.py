"""Run directories never collide (sar.uid suffix), and a sweep ends with a summary table of its jobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

import sar  # noqa: F401  (registers the sar.uid resolver)
from cli_runs import run_module
from sar.utils.config import compose_train_config
from sar.utils.sweep_summary import write_summary

STAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{8}"
TINY = [
    "dataset.synthetic.num_train=8", "dataset.synthetic.num_val=2", "dataset.num_workers=0",
    "dataset.batch_size=4", "dataset.val_batch_size=4", "input_size=[64,64]", "head.deconv.channels=32",
    "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=1",
    "optim.warmup_iters=1",
]


def test_dir_patterns_are_unique_per_launch_and_stable_within_one() -> None:
    a, b = (compose_train_config(return_hydra_config=True) for _ in range(2))  # two launches in the same second
    assert re.fullmatch(rf"outputs/topdown-synthetic-mobilenetv3-sar/{STAMP}", a.hydra.run.dir)
    assert re.fullmatch(rf"multirun/{STAMP}", a.hydra.sweep.dir)
    assert a.hydra.run.dir != b.hydra.run.dir and a.hydra.sweep.dir != b.hydra.sweep.dir
    assert a.hydra.run.dir == a.hydra.run.dir  # cached: every read of one launch agrees


def test_two_jobs_started_together_write_to_different_directories(tmp_path: Path) -> None:
    """Two `python -m sar.train` processes started at the same moment, with the default run dir pattern."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "sar.train", f"dataset.cache_dir={tmp_path / f'data{i}'}",
                          "final_eval=false", *TINY], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    runs = sorted((tmp_path / "outputs" / "topdown-synthetic-mobilenetv3-sar").iterdir())
    assert len(runs) == 2, runs
    for run in runs:
        assert re.fullmatch(STAMP, run.name)
        assert (run / "config.yaml").exists() and (run / "metrics.json").exists()
        assert (run / ".hydra" / "config.yaml").exists()
    # each process wrote its own directory (its cache dir override), none shared one
    overrides = sorted(str(yaml.safe_load((r / ".hydra" / "overrides.yaml").read_text())) for r in runs)
    assert "data0" in overrides[0] and "data1" in overrides[1]


def test_sweep_ends_with_a_summary_table(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_module("sar.train", "-m", "head=sar,heatmap", f"hydra.sweep.dir={sweep}",
                      f"dataset.cache_dir={tmp_path / 'data'}", *TINY, timeout=900, cwd=tmp_path)
    md = (sweep / "summary.md").read_text()
    assert "2 of 2 jobs finished" in md
    assert "| head=sar |" in md and "| head=heatmap |" in md
    csv_lines = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("table,Run,AP")
    assert "sweep summary:" in proc.stdout and "head=heatmap" in proc.stdout  # printed at the end


def test_summary_lists_jobs_without_metrics(tmp_path: Path) -> None:
    for num, name, metrics in ((0, "head=sar", {"AP": 0.5, "kpt_error_px": 3.0}), (1, "head=heatmap", None)):
        job = tmp_path / f"{num}_{name}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([name]))
        if metrics:
            (job / "metrics.json").write_text(json.dumps(metrics))
    md, csv_path = write_summary(tmp_path)
    text = md.read_text()
    assert "1 of 2 jobs finished" in text and "1_head=heatmap" in text and "50.0" in text
    assert csv_path.exists()
    assert write_summary(tmp_path / "0_head=sar" / ".hydra") is None  # nothing finished there
