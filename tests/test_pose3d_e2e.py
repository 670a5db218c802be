"""`python -m sar.train task=pose3d head=<each>`: a tiny run on the synthetic Human3.6M-format set trains,
validates (MPJPE / PA-MPJPE overall and per action, the mean-pose baseline) and writes metrics.json and a checkpoint
that reloads as the 3D system of that head; the SAR-3D run mixes in 2D auxiliary people (synthetic MPII). Smoke runs:
they do not show learning (the embedded default's numbers are measured by a full run, docs/pose3d.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from sar.train import run
from sar.utils.checkpoint import load_system

HEADS = ("sar", "rle", "regression", "integral")


def tiny(data: Path, head: str, *extra: str):
    overrides = [
        "task=pose3d", f"head={head}", f"dataset.cache_dir={data}", "dataset.synthetic.train_frames=2",
        "dataset.synthetic.test_frames=1", "dataset.synthetic.num_cameras=1", "dataset.num_workers=0",
        "dataset.batch_size=4", "dataset.val_batch_size=8", "input_size=[64,64]", "backbone=resnet18",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "optim.warmup_iters=1", *extra,
    ]
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize("head", HEADS)
def test_tiny_pose3d_run(head: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.getbasetemp() / "pose3d_data"
    tmp = tmp_path_factory.mktemp(head)
    extra = ()
    if head == "sar":  # 2D auxiliary people (the synthetic MPII set) mixed in at 50 %
        extra = ("dataset.aux={name: mpii, format: mpii, root: null, cache_dir: " + str(data) + ", ann: "
                 "annotations/mpii_train.json, images: images, synthetic: {format: mpii, num_train: 8, num_val: 2, "
                 "image_size: [128, 128]}}",)
    cfg = tiny(data, head, *extra)
    result = run(cfg, tmp / "run")
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    # 2 test subjects x 4 actions x 1 camera x 1 frame, minus RLE's excluded S9_Greeting
    assert metrics["num_poses"] == 7 and metrics["nonfinite_predictions"] == 0
    assert {"MPJPE", "PA_MPJPE", "MPJPE_Walking", "PA_MPJPE_Sitting", "MPJPE_mean_pose"} <= set(metrics)
    assert 0 < metrics["MPJPE"] < 5000 and result["MPJPE"] == metrics["MPJPE"]
    results = json.loads(next((tmp / "run").rglob("results_keypoints.json")).read_text())
    assert len(results) == 7 and {"imgname", "action", "pred_mm", "gt_mm"} <= set(results[0])
    system = load_system(tmp / "run" / "checkpoints" / "last.ckpt").eval()
    assert type(system).__name__ == "Pose3DSystem" and system.cfg["head"]["name"] == head
    uvd, scores = system.predict_uvd(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert uvd.shape == (2, 17, 3) and scores.shape == (2, 17) and torch.isfinite(uvd).all()
    if head == "sar":  # `python -m sar.evaluate ckpt=...` rebuilds the task from the checkpoint: the same numbers
        from sar.evaluate import run as evaluate

        with initialize_config_module(config_module="sar.conf", version_base="1.3"):
            eval_cfg = compose(config_name="evaluate", overrides=[f"ckpt={tmp / 'run' / 'checkpoints' / 'last.ckpt'}"])
        again = evaluate(eval_cfg, tmp / "eval", None)
        assert again["MPJPE"] == pytest.approx(metrics["MPJPE"]) and again["evaluator"] == "pose3d"


def test_bench_section_runs_every_head_and_formats_its_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`python -m sar.bench pose3d --task pose3d`: one sar.train run per head (stubbed here: each writes its
    metrics.json), a markdown table with the mean-pose ratio."""
    import subprocess

    from sar.bench import task_sections
    from sar.systems import pose3d

    def fake_run(cmd: list[str], check: bool) -> None:
        run_dir = Path(next(a for a in cmd if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"MPJPE": 60.0, "PA_MPJPE": 40.0, "MPJPE_mean_pose": 150.0,
                                                          "train_seconds": 1.0}))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", fake_run)
    sections = task_sections("pose3d")
    assert set(sections) == {"pose3d"} and sections["pose3d"][1] is pose3d.bench_table
    result = pose3d.bench_heads([], heads=("sar", "rle"))
    table = pose3d.bench_table(result)
    assert set(result) == {"sar", "rle"} and "| sar | 60.0 | 40.0 | 150.0 | 0.40 |" in table
