"""`python -m sar.evaluate`: evaluation only, from a checkpoint alone.

* On the checkpoint's own dataset it reproduces the training run's final evaluation exactly (metrics.json and
  the COCO results json).
* `dataset=<option>` replaces the dataset config and with it the evaluator and its ground truth; a dataset
  whose keypoints differ from the network's is refused.
* Overrides without `dataset=` apply to the checkpoint's dataset config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli_runs import read_json, run_module
from sar.data.spec import load_spec
from sar.evaluate import build_run_config, rewrite_dataset_overrides
from sar.evaluation.coco_ap import METRIC_NAMES, CocoEvaluator


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training run (synthetic data, detector boxes for AP, GT boxes for the keypoint error)."""
    tmp = tmp_path_factory.mktemp("train")
    run_dir = tmp / "run"
    run_module(
        "sar.train", f"hydra.run.dir={run_dir}", f"dataset.cache_dir={tmp / 'data'}",
        "dataset.synthetic.num_train=32", "dataset.synthetic.num_val=8", "dataset.num_workers=0",
        "dataset.batch_size=8", "dataset.val_batch_size=16", "backbone=resnet18", "input_size=[64,64]",
        "head.deconv.channels=16", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
        "trainer.limit_train_batches=2", "optim.warmup_iters=1",
    )
    return run_dir


@pytest.mark.slow
def test_evaluate_reproduces_training_final_evaluation(tmp_path: Path, trained: Path) -> None:
    train_metrics = read_json(trained / "metrics.json")
    out = tmp_path / "eval"
    run_module("sar.evaluate", f"ckpt={train_metrics['checkpoint']}", f"hydra.run.dir={out}")
    metrics = read_json(out / "metrics.json")
    names = [*METRIC_NAMES, "kpt_error_px", "PCK@0.05"]
    for name in names:
        assert abs(metrics[name] - train_metrics[name]) <= 1e-9, name
    assert metrics["kpt_error_px"] > 0
    assert metrics["dataset"] == "synthetic" and metrics["checkpoint"] == train_metrics["checkpoint"]
    # The same predictions, rescored and NMS'ed the same way.
    assert (out / "results_keypoints.json").read_text() == (trained / "results_keypoints.json").read_text()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["evaluate"]["ckpt"] == train_metrics["checkpoint"]

    # An evaluation knob changes the predictions: flip test off gives other keypoints.
    out2 = tmp_path / "noflip"
    run_module("sar.evaluate", f"ckpt={train_metrics['checkpoint']}", f"hydra.run.dir={out2}",
               "flip_test=false", "batch_size=4", "dataset.val_bbox_file=null")
    config = yaml.safe_load((out2 / "config.yaml").read_text())
    assert config["task"]["flip_test"] is False and config["dataset"]["val_batch_size"] == 4
    assert config["dataset"]["val_bbox_file"] is None and config["dataset"]["name"] == "synthetic"
    metrics2 = read_json(out2 / "metrics.json")
    assert metrics2["kpt_error_px"] != metrics["kpt_error_px"]


@pytest.mark.slow
def test_evaluate_on_another_dataset_uses_its_evaluator(tmp_path: Path, trained: Path, shared_data: Path) -> None:
    ckpt = read_json(trained / "metrics.json")["checkpoint"]
    root = shared_data / "ochuman"
    out = tmp_path / "eval"
    run_module("sar.evaluate", f"ckpt={ckpt}", f"hydra.run.dir={out}", "dataset=ochuman", f"dataset.root={root}",
               "dataset.val_ann=test_ochuman.json", "dataset.val_images=.", "dataset.num_workers=0")
    metrics = read_json(out / "metrics.json")
    assert metrics["dataset"] == "ochuman" and metrics["evaluator"] == "coco"
    results = read_json(out / "results_keypoints.json")
    gt = read_json(root / "test_ochuman.json")
    assert {r["image_id"] for r in results} <= {img["id"] for img in gt["images"]}
    assert 0 < len(results) <= sum(1 for a in gt["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0)
    # The metrics are the OCHuman ground truth's COCO AP of those results (OCHuman spec sigmas).
    expected = CocoEvaluator(root / "test_ochuman.json", load_spec("ochuman")).compute_stats(results)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(expected[name], abs=1e-12), name
    assert metrics["kpt_error_px"] > 0


def test_evaluate_refuses_a_dataset_with_other_keypoints(tmp_path: Path) -> None:
    ckpt_cfg = {"dataset": {"name": "synthetic", "spec": "coco"}}
    with pytest.raises(ValueError, match="coco_wholebody.*133 keypoints.*17 keypoints"):
        build_run_config({"dataset": {"name": "coco_wholebody", "spec": "coco_wholebody"}}, ckpt_cfg,
                         "coco_wholebody", "x.ckpt")


def test_dataset_overrides_without_a_dataset_choice_edit_the_checkpoint_dataset() -> None:
    assert rewrite_dataset_overrides(["ckpt=a", "dataset.root=/r", "flip_test=false"]) == [
        "ckpt=a", "++dataset.root=/r", "flip_test=false"]
    assert rewrite_dataset_overrides(["dataset=coco", "dataset.root=/r"]) == ["dataset=coco", "dataset.root=/r"]
    ckpt_cfg = {
        "dataset": {"name": "synthetic", "spec": "coco", "val_bbox_file": "dets.json", "batch_size": 8,
                    "synthetic": {"num_val": 200, "seed": 0}},
        "task": {"flip_test": True, "evaluation": {"use_nms": True, "nms_thr": 0.9, "kpt_score_thr": 0.2,
                                                  "score_mode": "bbox_keypoint"}},
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "16-mixed"},
        "backbone": {"name": "resnet18", "pretrained": True},
    }
    eval_cfg = {
        "dataset": {"val_bbox_file": None, "synthetic": {"num_val": 8}},
        "flip_test": False, "evaluation": {"kpt_score_thr": 0.5, "score_mode": None}, "batch_size": 4,
        "trainer": {"accelerator": None, "devices": 1, "precision": None},
    }
    run = build_run_config(eval_cfg, ckpt_cfg, None, "x.ckpt")
    assert run["dataset"] == {"name": "synthetic", "spec": "coco", "val_bbox_file": None, "batch_size": 8,
                              "val_batch_size": 4, "synthetic": {"num_val": 8, "seed": 0}}
    assert run["task"]["flip_test"] is False
    assert run["task"]["evaluation"] == {"use_nms": True, "nms_thr": 0.9, "kpt_score_thr": 0.5,
                                         "score_mode": "bbox_keypoint"}
    assert run["trainer"]["accelerator"] == "cpu" and run["trainer"]["precision"] == 32  # CPU: full precision
    assert run["backbone"]["pretrained"] is False  # the checkpoint's weights replace them; no download
    assert ckpt_cfg["dataset"]["val_bbox_file"] == "dets.json"  # the checkpoint config is not modified


def test_codec_keys_replace_the_checkpoints_decoding_and_unknown_keys_are_refused() -> None:
    ckpt_cfg = {
        "dataset": {"name": "synthetic_crowd", "spec": "coco"},
        "task": {"flip_test": True, "evaluation": {"use_nms": False}},
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": 32},
        "backbone": {"name": "mobilenetv3", "pretrained": False},
        "head": {"name": "sar_center", "codec": {"_target_": "sar.codecs.bottomup.SARCenterCodec", "nms_thr": 0.8}},
    }
    base = {"trainer": {"accelerator": None, "devices": 1, "precision": None}}
    run = build_run_config({**base, "codec": {"refine": "heatmap", "nms_thr": 0.7}}, ckpt_cfg, None, "x.ckpt")
    assert run["head"]["codec"] == {"_target_": "sar.codecs.bottomup.SARCenterCodec", "nms_thr": 0.7,
                                    "refine": "heatmap"}
    assert ckpt_cfg["head"]["codec"] == {"_target_": "sar.codecs.bottomup.SARCenterCodec", "nms_thr": 0.8}
    with pytest.raises(ValueError, match="codec.refin: not an argument of .*SARCenterCodec"):
        build_run_config({**base, "codec": {"refin": "heatmap"}}, ckpt_cfg, None, "x.ckpt")
