"""`python -m sar.train task=bottomup head=<each>`: a tiny run trains, validates on every person of the val images
and writes metrics.json (the value the run returns) and a checkpoint that reloads as the multi-person system of
that head, whose decoded poses keep the codec's contract (shape, at most m, sorted, above gamma). Smoke runs: they
do not show learning (the embedded default's AP is measured by a full run, see the issue note)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from sar.train import run
from sar.utils.checkpoint import load_system

HEADS = ("sar_center", "sar_ae", "ae", "dekr")


def tiny(tmp_path: Path, head: str, *extra: str):
    overrides = [
        "task=bottomup", f"head={head}", f"dataset.cache_dir={tmp_path.parent / 'data'}",
        "dataset.synthetic.num_train=16", "dataset.synthetic.num_val=4", "dataset.num_workers=0",
        "dataset.batch_size=4", "dataset.val_batch_size=4", "input_size=[64,64]", "backbone=resnet18",
        "neck=fpn", "backbone.out_indices=[1,2,3,4]", "neck.channels=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", "optim.warmup_iters=1", *extra,
    ]
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("head", HEADS)
def test_tiny_bottomup_run(head: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp(head)
    result = run(tiny(tmp, head), tmp / "run")
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert {"AP", "AP50", "APM", "AR"} <= set(metrics) and metrics["nonfinite_predictions"] == 0
    assert result["AP"] == metrics["AP"]
    system = load_system(tmp / "run" / "checkpoints" / "last.ckpt").eval()
    assert type(system).__name__ == "BottomUpSystem" and system.cfg["head"]["name"] == head
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for poses, scores in system.predict_poses(images):
        assert poses.shape[1:] == (17, 3) and len(poses) == len(scores) <= 30
        # centre heads keep proposals above gamma; the grouping heads score a person by its keypoints' mean
        assert (scores[:-1] >= scores[1:]).all() and ((scores > 0.01) if "center" in head or head == "dekr" else (scores >= 0)).all()


def test_predict_finds_every_person_and_feeds_a_top_down_checkpoint(tmp_path_factory: pytest.TempPathFactory,
                                                                      shared_data: Path) -> None:
    """A multi-person checkpoint predicts several people per photo with no boxes; a top-down checkpoint takes its
    person boxes from it (det=<.ckpt>): one top-down instance per box found."""
    from sar.predict import main as predict_main
    from test_resume import tiny_cfg

    tmp = tmp_path_factory.mktemp("predict")
    run(tiny(tmp / "bu", "sar_center"), tmp / "bu" / "run")
    bu_ckpt = tmp / "bu" / "run" / "checkpoints" / "last.ckpt"
    photos = shared_data / "coco"
    summary = predict_main([f"ckpt={bu_ckpt}", f"input={photos}", f"out={tmp / 'p_bu'}", "draw=false"])
    results = json.loads(Path(summary["results"]).read_text())
    per_image: dict[int, int] = {}
    for r in results:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert summary["images"] == 4 and summary["instances"] == len(results) > 4 and max(per_image.values()) > 1
    assert set(per_image) <= {785, 40083, 196141, 197388}  # COCO ids from the file names
    from sar.export import main as export_main

    export_main([f"ckpt={bu_ckpt}", f"out={tmp / 'bu.onnx'}", "exporter=torchscript"])  # parity-checked
    meta = json.loads((tmp / "bu.onnx.json").read_text())
    assert (tmp / "bu.onnx").is_file() and meta["head"] == "sar_center" and "offsets" in meta["outputs"]
    with pytest.raises(ValueError, match="finds the people itself"):
        predict_main([f"ckpt={bu_ckpt}", f"input={photos}", f"det={photos / 'test_coco_det_AP_H_56.json'}"])

    run(tiny_cfg(tmp / "td", "trainer.max_epochs=1", "final_eval=false"), tmp / "td" / "run")
    td_ckpt = tmp / "td" / "run" / "checkpoints" / "last.ckpt"
    combined = predict_main([f"ckpt={td_ckpt}", f"input={photos}", f"det={bu_ckpt}", f"out={tmp / 'p_td'}",
                             "draw=false", "use_nms=false"])
    assert combined["boxes"] == len(results) and combined["instances"] == len(results)


@pytest.mark.parametrize("head", HEADS)
def test_oracle_through_the_validation_path(head: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """GT targets of the synthetic val images as network outputs (sar.bench's oracle AP): the DataModule's warp, the
    codec, the mapping back to image pixels and the evaluator give every person back (the heads' default decoding:
    on the full val set its centre NMS merges about 1 % of the people, see BENCHMARKS.md)."""
    from omegaconf import OmegaConf

    from sar.bench_bottomup import bottomup_table, oracle_metrics

    tmp = tmp_path_factory.mktemp(f"oracle-{head}")
    cfg = OmegaConf.to_container(tiny(tmp, head, "input_size=[256,256]", "dataset.synthetic.num_val=6"),
                                 resolve=True)
    metrics = oracle_metrics(cfg)
    assert metrics["AR50"] == 1.0 and metrics["AP"] >= 0.98
    # keypoint error of the OKS-matched people: the regressing heads give every keypoint back exactly but one ankle
    # outside the image (its target clipped to the map: ~0.36 px over the 6 images); AE's heatmap peaks add the
    # quarter-cell rounding (<= stride / 2 = 2 px each)
    assert metrics["kpt_error_px"] < (2.5 if head == "ae" else 0.5)
    row = bottomup_table({head: {**metrics, "oracle_AP": metrics["AP"], "train_seconds": 0, "wall_s": 0,
                                 "command": "x"}})
    assert f"| {head} | {metrics['AP']:.3f} |" in row
