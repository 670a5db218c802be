"""End to end through the real entry point: `python -m sar.train` on a tiny synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_train(tmp_path: Path, *overrides: str, run_name: str = "run") -> Path:
    run_dir = tmp_path / run_name
    cmd = [
        sys.executable, "-m", "sar.train",
        f"hydra.run.dir={run_dir}",
        f"dataset.cache_dir={tmp_path / 'data'}",
        "dataset.synthetic.num_train=48", "dataset.synthetic.num_val=8",
        "dataset.num_workers=0", "dataset.batch_size=8", "dataset.val_batch_size=16",
        "input_size=[64,64]", "head.deconv.channels=32",
        "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=3",
        "optim.warmup_iters=2",
        *overrides,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return run_dir


@pytest.mark.parametrize("head", ["sar", "heatmap"])
def test_tiny_train_writes_metrics_and_checkpoints(tmp_path: Path, head: str) -> None:
    run_dir = run_train(tmp_path, f"head={head}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APM", "APL", "AR", "kpt_error_px"):
        assert key in metrics and isinstance(metrics[key], float)
    assert 0.0 <= metrics["AP"] <= 1.0
    assert metrics["kpt_error_px"] > 0.0
    assert metrics["global_step"] == 6
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))
    results = json.loads((run_dir / "results_keypoints.json").read_text())
    assert results and len(results[0]["keypoints"]) == 17 * 3
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "csv" / "metrics.csv").exists()


def test_wandb_logger_writes_an_offline_run(tmp_path: Path) -> None:
    run_dir = run_train(tmp_path, "logger=wandb", "trainer.max_epochs=1")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    assert (run_dir / "metrics.json").exists()
    # validation prediction images (skeletons drawn on the crops) and the metrics are in the W&B run
    images = list((runs[0] / "files" / "media" / "images").glob("val/predictions_*.png"))
    assert len(images) >= 4
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # offline: history records in the run file
    assert b"val/AP" in record and b"val/kpt_error_px" in record and b"train/total" in record
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)

    # resuming in the same run directory (auto-resume from last.ckpt) continues the same W&B run
    run_train(tmp_path, "logger=wandb", "trainer.max_epochs=2")
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 6
