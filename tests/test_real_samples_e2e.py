"""`python -m sar.train` on the real CrowdPose and COCO-WholeBody samples in ../shared/data (tiny budget):
the real readers, the dataset's evaluator and its metrics end to end; then the same validation with the ground
truth as the predictions (tests/oracle.py), which must score as exact."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli_runs import read_json, train
from oracle import oracle_metrics

TINY = (
    "backbone=resnet18", "head.deconv.channels=16", "input_size=[64,64]", "dataset.num_workers=0",
    "dataset.batch_size=4", "dataset.val_batch_size=8", "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
)


def run_sample(tmp_path: Path, dataset: str, root: Path, ann: str, bbox_file: str) -> tuple[dict, dict]:
    """Train and validate on the sample ``root/ann`` (both splits, detector boxes ``bbox_file`` for AP); the run's
    metrics and the oracle's (the run's config, GT boxes, exact predictions)."""
    run_dir = tmp_path / "run"
    metrics = train(run_dir, *TINY, f"dataset={dataset}", f"dataset.root={root}", f"dataset.train_ann={ann}",
                    f"dataset.val_ann={ann}", "dataset.train_images=.", "dataset.val_images=.",
                    f"dataset.val_bbox_file={bbox_file}")
    return metrics, oracle_metrics(yaml.safe_load((run_dir / "config.yaml").read_text()))


def test_crowdpose_sample_reports_crowd_ap(tmp_path: Path, shared_data: Path) -> None:
    metrics, exact = run_sample(tmp_path, "crowdpose", shared_data / "crowdpose", "test_crowdpose.json",
                                "test_crowdpose_det_AP_40.json")
    for key in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard", "kpt_error_px", "PCK@0.05"):
        assert isinstance(metrics[key], float), key
    assert metrics["AP_easy"] == -1.0 and metrics["AP_hard"] == -1.0  # both sample images are "medium"
    assert exact["AP"] == 1.0 and exact["AP_medium"] == 1.0 and exact["AP_easy"] == exact["AP_hard"] == -1.0
    assert exact["kpt_error_px"] < 1e-3 and exact["PCK@0.05"] == 1.0


def test_wholebody_sample_reports_part_aps(tmp_path: Path, shared_data: Path) -> None:
    metrics, exact = run_sample(tmp_path, "coco_wholebody", shared_data / "coco", "test_coco_wholebody.json",
                                "test_coco_det_AP_H_56.json")
    parts = ("body", "foot", "face", "left_hand", "right_hand", "wholebody")
    for part in parts:
        assert isinstance(metrics[f"AP_{part}"], float) and isinstance(metrics[f"AR_{part}"], float), part
    results = read_json(tmp_path / "run" / "results_keypoints.json")
    assert len(results[0]["keypoints"]) == 133 * 3
    assert {part: exact[f"AP_{part}"] for part in parts} == {part: 1.0 for part in parts}
