"""sar.bench sections: convergence (run order, resumable run folders, table and plot) and gpu (crops/s, utilisation)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sar import bench_convergence as bc


def _convergence_metrics(over: dict[str, str]) -> dict:
    epochs = int(over["trainer.max_epochs"])
    ap = 0.5 + 0.01 * epochs + (0.002 * epochs if over["head"] == "sar" else 0.0)
    return {"AP": ap, "AP50": 0.9, "AP75": ap + 0.05, "AR": ap + 0.03, "kpt_error_px": 10.0 - 0.1 * epochs,
            "train_seconds": 1.0, "epochs": epochs}


def _fake_train(calls: list[list[str]], metrics=_convergence_metrics):
    """subprocess.run standing in for `python -m sar.train`: records the command and writes the run folder's
    metrics.json from ``metrics(overrides)``."""
    def run(cmd, check):
        calls.append(cmd)
        over = dict(a.split("=", 1) for a in cmd[3:])
        run_dir = Path(over["hydra.run.dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics(over)))
        return subprocess.CompletedProcess(cmd, 0)
    return run


def test_runs_shortest_budget_first_in_fixed_folders(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_train(calls))
    result = bc.bench_convergence(["dataset.batch_size=8"], budgets=[18, 6], root=tmp_path / "c")
    order = [(c[3], c[4]) for c in calls]
    assert order == [("head=sar", "trainer.max_epochs=6"), ("head=heatmap", "trainer.max_epochs=6"),
                     ("head=sar", "trainer.max_epochs=18"), ("head=heatmap", "trainer.max_epochs=18")]
    assert all("dataset.batch_size=8" in c for c in calls)
    assert calls[0][-1] == f"hydra.run.dir={tmp_path / 'c' / 'sar-6ep'}"
    assert result["runs"]["sar"][18]["AP"] == pytest.approx(0.5 + 0.18 + 0.036)
    # the run folder depends on the overrides, so other overrides never resume these runs
    assert bc.run_root(["a=1"]) != bc.run_root(["a=2"]) and bc.run_root(["a=1"]) == bc.run_root(["a=1"])


def test_table_gives_sar_lead_in_points_and_plot_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _fake_train([]))
    result = bc.bench_convergence([], budgets=[6, 36], root=tmp_path / "c")
    table = bc.convergence_table(result, "benchmarks/convergence.png")
    rows = [line for line in table.splitlines() if line.startswith(("| 6 |", "| 36 |"))]
    # SAR - heatmap = 0.002 * epochs: +1.2 points at 6 epochs, +7.2 at 36
    assert rows[0].endswith("| +1.2 |") and rows[1].endswith("| +7.2 |")
    assert "| 6 | 0.572 | 0.622 | 9.40 | 0.560 | 0.610 | 9.40 |" in rows[0]  # sar then heatmap: AP, AP75, kpt error
    assert "![SAR and heatmap against the training budget](benchmarks/convergence.png)" in table
    png = bc.convergence_plot(result, tmp_path / "out" / "convergence.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_section_reports_crops_per_second_and_utilisation(monkeypatch, tmp_path):
    """The gpu block (run on a lent GPU by scripts/gpu_check.sh) with CUDA, the runs and nvidia-smi stood in."""
    from sar import bench

    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda i: "Fake H200")
    monkeypatch.setattr(bench, "bench_step", lambda **kw: {"heatmap": 10.0, "sar": 9.0, "sar_overhead_pct": 11.1,
                                                            "batch": kw["batch"]})
    runs = []

    def fake_train(overrides, run_dir, extra, keys):
        runs.append(overrides)
        return {"command": " ".join(overrides), "wall_s": 1.0, "AP": 0.5, "AP50": 0.9, "AP75": 0.6, "AR": 0.6,
                "kpt_error_px": 7.0, "train_seconds": 10.0, "global_step": 100}

    class FakeSmi:
        def __init__(self, *a, **k):
            pass

        def terminate(self):
            pass

        def communicate(self, timeout):
            return "40\n60\n80\n", ""

    monkeypatch.setattr(bench, "timed_train", fake_train)
    monkeypatch.setattr(bench.subprocess, "Popen", FakeSmi)
    result = bench.bench_gpu([])
    assert len(runs) == len(bench.GPU_RUNS)
    # only the first (before) run is profiled, and every run is the 6-epoch trainer=gpu one
    assert any("SimpleProfiler" in o for o in runs[0]) and not any("profiler" in o for r in runs[1:] for o in r)
    assert all(r[0] == "trainer=gpu" and "trainer.max_epochs=6" in r for r in runs)
    big = result["runs"]["bf16, batch 64, 12 workers"]
    assert big["crops_per_s"] == 100 * 64 / 10.0 and big["gpu_util"] == 60.0
    assert "optim.warmup_iters=50" in runs[2] and "optim.warmup_iters=25" in runs[3]  # 1600 samples of warm-up
    assert result["runs"]["before: 16-mixed, batch 16, 8 workers"]["crops_per_s"] == 100 * 16 / 10.0
    table = bench._table("gpu", result)
    assert "| bf16, batch 64, 12 workers | 640.0 | 4.00x | 60.0 |" in table


def test_batch_section_scales_lr_and_warmup_and_reports_ap_change(tmp_path, monkeypatch):
    from sar import bench

    calls: list[list[str]] = []

    def metrics(over: dict[str, str]) -> dict:
        batch = int(over["dataset.batch_size"])
        return {"AP": 0.56 - 0.0001 * batch, "AP50": 0.9, "AP75": 0.6, "AR": 0.6, "kpt_error_px": 7.0,
                "train_seconds": 100.0, "global_step": 6 * 2500 // batch}

    monkeypatch.setattr(subprocess, "run", _fake_train(calls, metrics))
    monkeypatch.chdir(tmp_path)
    result = bench.bench_batch([], batches=(16, 128))
    # batch 16 is the default itself (factor 1, 100 warm-up steps); 128: sqrt rule, warm-up of 1600 samples
    assert "optim.warmup_iters=100" in calls[0] and "optim.scale_lr=sqrt" in calls[0]
    assert "dataset.batch_size=128" in calls[1] and "optim.warmup_iters=12" in calls[1]
    table = bench._table("batch", result)
    assert "| batch 128 | 117 | 0.547 | 0.600 | 7.00 | -0.011 | 100.0 |" in table
