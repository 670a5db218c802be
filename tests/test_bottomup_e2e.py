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
    errors = json.loads((tmp / "run" / "results_keypoint_errors.json").read_text())
    # every GT person falls in one COCO area range (the split read beside APM / APL)
    assert sum(p["matched"] + p["unmatched"] for p in errors["by_area"].values()) == errors["matched"] + errors[
        "unmatched"] > 0
    system = load_system(tmp / "run" / "checkpoints" / "last.ckpt").eval()
    assert type(system).__name__ == "BottomUpSystem" and system.cfg["head"]["name"] == head
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for poses, scores in system.predict_poses(images):
        assert poses.shape[1:] == (17, 3) and len(poses) == len(scores) <= 30
        # dekr keeps proposals above gamma; sar_center (keypoint_score: heatmap) and the grouping heads score a person by
        # its keypoints' mean, which may fall below it
        assert (scores[:-1] >= scores[1:]).all() and ((scores > 0.01) if head == "dekr" else (scores >= 0)).all()


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


def test_multi_scale_test_pools_the_scales_in_the_rendered_pixels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``task.test_scales=[1.0,1.5]`` on a 64 px model: the batch (rendered at 96 px, the largest scale) is decoded at
    64 and 96 px; a pose at the centre pixel of each scale's input comes back at the rendered tensor's centre
    ((31.5 + 0.5) x 1.5 - 0.5 = 47.5), the two copies are one pose after the OKS-NMS (the better score kept). A
    scale whose input is not a multiple of the backbone stride is refused by name."""
    import numpy as np
    from omegaconf import OmegaConf

    from sar.build import build_system
    from sar.data.bottomup import resolve_test_scales

    tmp = tmp_path_factory.mktemp("multiscale")
    cfg = OmegaConf.to_container(tiny(tmp, "sar_center", "task.test_scales=[1.0,1.5]"), resolve=True)
    system = build_system(cfg).eval()
    k = system.spec.num_keypoints
    seen = []

    def centre_pose(images: torch.Tensor, codec: object) -> list:
        h, w = images.shape[-2:]
        seen.append((h, w))
        poses = np.ones((1, k, 3), np.float32)
        poses[..., 0] = (w - 1) / 2 + np.linspace(-8, 8, k) * w / 64
        poses[..., 1] = (h - 1) / 2 + np.linspace(-16, 16, k) * h / 64
        return [(poses, np.array([0.7 if w == 96 else 0.5], np.float32))] * images.shape[0]

    system._decode = centre_pose
    out = system.predict_poses(torch.zeros(2, 3, 96, 96))
    assert seen == [(64, 64), (96, 96)] and len(out) == 2
    poses, scores = out[0]
    assert poses.shape == (1, k, 3) and scores.tolist() == [pytest.approx(0.7)]
    assert poses[0, k // 2, :2].tolist() == pytest.approx([47.5, 47.5])
    with pytest.raises(ValueError, match=r"task.test_scales: 1.1"):
        resolve_test_scales({**cfg, "task": {**cfg["task"], "test_scales": [1.0, 1.1]}})
    # an ablation without the auxiliary branch is refused before training while decoding still reads it
    no_aux = OmegaConf.to_container(tiny(tmp, "sar_center", "head.module.with_heatmap=false"), resolve=True)
    with pytest.raises(ValueError, match="with_heatmap: false"):
        build_system(no_aux)
    build_system(OmegaConf.to_container(tiny(tmp, "sar_center", "head.module.with_heatmap=false",
                                             "head.codec.refine=none", "head.codec.keypoint_score=confidence"),
                                        resolve=True))
