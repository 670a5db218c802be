"""`python -m sar.train` on the synthetic versions of the benchmarks (no downloads), tiny budgets: each task /
dataset pair runs end to end and writes its metrics; and the COCO test-dev results-only mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli_runs import read_json
from cli_runs import train as train_run
from oracle import oracle_metrics
from sar.data.synthetic import SyntheticConfig, ensure_synthetic
from sar.evaluation.coco_ap import CocoEvaluator

TINY = [
    "dataset.num_workers=0", "dataset.batch_size=4", "dataset.val_batch_size=8", "input_size=[64,64]",
    "head.deconv.channels=16", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
    "trainer.num_sanity_val_steps=0", "task.flip_test=false",
]


def train(tmp_path: Path, *overrides: str) -> tuple[Path, dict]:
    run_dir = tmp_path / "run"
    return run_dir, train_run(run_dir, f"dataset.cache_dir={tmp_path / 'data'}", *TINY, *overrides)


def oracle(run_dir: Path) -> dict[str, float]:
    """The run's validation (its config, its data) with the ground truth as the predictions (tests/oracle.py)."""
    return oracle_metrics(yaml.safe_load((run_dir / "config.yaml").read_text()))


def test_wholebody_hrnet_w32_on_synthetic(tmp_path: Path) -> None:
    run_dir, metrics = train(
        tmp_path, "task=wholebody", "backbone=hrnet_w32", "dataset.synthetic.num_train=4",
        "dataset.synthetic.num_val=2", "dataset.synthetic.max_people=1", "trainer.check_val_every_n_epoch=5",
    )
    parts = ("body", "foot", "face", "left_hand", "right_hand", "wholebody")
    for part in parts:
        assert isinstance(metrics[f"AP_{part}"], float) and isinstance(metrics[f"AR_{part}"], float), part
    results = read_json(run_dir / "results_keypoints.json")
    assert results and len(results[0]["keypoints"]) == 133 * 3
    assert list((tmp_path / "data").glob("coco_wholebody_*/_COMPLETE"))  # the synthetic whole-body set was used
    # the same validation with exact predictions: every part's AP is 1 (133 keypoints in the evaluator's order)
    exact = oracle(run_dir)
    assert {part: exact[f"AP_{part}"] for part in parts} == {part: 1.0 for part in parts}
    assert exact["AP"] == 1.0 and exact["kpt_error_px"] < 1e-3


def test_mpii_on_synthetic_reports_pckh(tmp_path: Path) -> None:
    run_dir, metrics = train(
        tmp_path, "dataset=mpii", "dataset.synthetic.num_train=4", "dataset.synthetic.num_val=3",
        "trainer.check_val_every_n_epoch=1",
    )
    for key in ("PCKh@0.5", "PCKh@0.1", "PCKh@0.5/Head", "PCKh@0.5/Ankle", "PCKh@0.1/left_wrist", "kpt_error_px"):
        assert isinstance(metrics[key], float), key
    assert "AP" not in metrics
    assert list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))  # monitored val/PCKh@0.5 was found
    results = read_json(run_dir / "results_keypoints.json")
    assert results and len(results[0]["keypoints"]) == 16 * 3
    # exact predictions: PCKh 1 at both thresholds (official mat ground truth, 1-based frame), no error
    exact = oracle(run_dir)
    assert exact["PCKh@0.5"] == 1.0 and exact["PCKh@0.1"] == 1.0 and exact["PCK@0.05"] == 1.0
    assert exact["kpt_error_px"] < 1e-3


def test_crowdpose_on_synthetic_reports_crowd_ap(tmp_path: Path) -> None:
    run_dir, metrics = train(
        tmp_path, "dataset=crowdpose", "dataset.synthetic.num_train=4", "dataset.synthetic.num_val=3",
        "trainer.check_val_every_n_epoch=5",
    )
    for key in ("AP", "AP50", "AP75", "AR", "AP_easy", "AP_medium", "AP_hard", "kpt_error_px"):
        assert isinstance(metrics[key], float), key
    # exact predictions: the crowd protocol's AP is 1 on every split that has images (-1 on an empty one)
    exact = oracle(run_dir)
    assert exact["AP"] == 1.0 and exact["AR"] == 1.0
    assert {exact[k] for k in ("AP_easy", "AP_medium", "AP_hard")} <= {1.0, -1.0}


# ------------------------------------------------------------------------------------- test-dev results-only
def _image_info(ann_file: Path, out: Path) -> Path:
    """An image-info json (the shape of image_info_test-dev2017.json): images and categories, no annotations."""
    data = json.loads(ann_file.read_text())
    out.write_text(json.dumps({"info": data["info"], "images": data["images"], "categories": data["categories"]}))
    return out


def test_coco_evaluator_results_only(tmp_path: Path) -> None:
    root = ensure_synthetic(SyntheticConfig(seed=2, num_train=1, num_val=2), tmp_path / "data", num_workers=1)
    info = _image_info(root / "annotations" / "person_keypoints_val.json", tmp_path / "image_info.json")
    preds = [{"image_id": 1, "ann_id": -1, "bbox_score": 0.9, "area": 400.0,
              "keypoints": np.concatenate([np.full((17, 2), 10.0), np.full((17, 1), 0.5)], 1)}]
    evaluator = CocoEvaluator(info, np.full(17, 0.05))
    assert evaluator.results_only
    assert evaluator.evaluate(preds, tmp_path / "out") == {}
    written = read_json(tmp_path / "out" / "results_keypoints.json")
    assert len(written) == 1 and written[0]["image_id"] == 1 and written[0]["score"] == pytest.approx(0.45)
    # a file with annotations is scored as before; forcing results_only skips the metrics
    assert not CocoEvaluator(root / "annotations" / "person_keypoints_val.json", np.full(17, 0.05)).results_only
    forced = CocoEvaluator(root / "annotations" / "person_keypoints_val.json", np.full(17, 0.05), results_only=True)
    assert forced.evaluate(preds) == {}


def test_coco_test_dev_results_only_run(tmp_path: Path) -> None:
    """dataset=coco with an image-info val file: the results json and metrics.json are written, without AP."""
    root = ensure_synthetic(SyntheticConfig(seed=0, num_train=4, num_val=2), tmp_path / "coco", num_workers=1)
    info = _image_info(root / "annotations" / "person_keypoints_val.json", tmp_path / "image_info_test-dev.json")
    run_dir, metrics = train(
        tmp_path, "dataset=coco", f"dataset.root={root}", "dataset.train_ann=annotations/person_keypoints_train.json",
        "dataset.train_images=images/train", f"dataset.val_ann={info}", "dataset.val_images=images/val",
        "dataset.val_bbox_file=annotations/person_detection_results_val.json", "task.monitor=null",
        "trainer.check_val_every_n_epoch=1",
    )
    assert not {"AP", "AR", "kpt_error_px", "PCK@0.05"} & set(metrics)
    assert metrics["checkpoint"] and metrics["global_step"] == 1
    results = read_json(run_dir / "results_keypoints.json")
    dets = read_json(root / "annotations" / "person_detection_results_val.json")
    assert results and len(results) <= len(dets) and len(results[0]["keypoints"]) == 17 * 3
    assert {r["image_id"] for r in results} <= {1, 2}
