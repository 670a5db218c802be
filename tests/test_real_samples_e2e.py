"""`python -m sar.train` on the real CrowdPose and COCO-WholeBody samples in ../shared/data (tiny budget):
the real readers, the dataset's evaluator and its metrics end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(tmp_path: Path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "sar.train", f"hydra.run.dir={run_dir}",
        "backbone=resnet18", "head.deconv.channels=16", "input_size=[64,64]",
        "dataset.num_workers=0", "dataset.batch_size=4", "dataset.val_batch_size=8",
        "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", *overrides,
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_crowdpose_sample_reports_crowd_ap(tmp_path: Path, shared_data: Path) -> None:
    root = shared_data / "crowdpose"
    metrics = run(
        tmp_path, "dataset=crowdpose", f"dataset.root={root}", "dataset.train_ann=test_crowdpose.json",
        "dataset.val_ann=test_crowdpose.json", "dataset.train_images=.", "dataset.val_images=.",
        "dataset.val_bbox_file=test_crowdpose_det_AP_40.json",
    )
    for key in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard", "kpt_error_px", "PCK@0.05"):
        assert isinstance(metrics[key], float), key
    assert metrics["AP_easy"] == -1.0 and metrics["AP_hard"] == -1.0  # both sample images are "medium"
    assert metrics["kpt_error_px"] > 0


def test_wholebody_sample_reports_part_aps(tmp_path: Path, shared_data: Path) -> None:
    root = shared_data / "coco"
    metrics = run(
        tmp_path, "dataset=coco_wholebody", f"dataset.root={root}", "dataset.train_ann=test_coco_wholebody.json",
        "dataset.val_ann=test_coco_wholebody.json", "dataset.train_images=.", "dataset.val_images=.",
        "dataset.val_bbox_file=test_coco_det_AP_H_56.json",
    )
    for part in ("body", "foot", "face", "left_hand", "right_hand", "wholebody"):
        assert isinstance(metrics[f"AP_{part}"], float)
        assert isinstance(metrics[f"AR_{part}"], float)
    assert metrics["kpt_error_px"] > 0
    results = json.loads((tmp_path / "run" / "results_keypoints.json").read_text())
    assert len(results[0]["keypoints"]) == 133 * 3
