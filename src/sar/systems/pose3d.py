"""Monocular 3D LightningModule (task.system of conf/task/pose3d.yaml; docs/pose3d.md).

Network, loss, optimiser, flip pass, DDP gathering and logging are the top-down system's
(:class:`sar.systems.topdown.TopDownSystem`); what differs is the evaluation [C, RLE]: the decoded (u, v, d) of a
crop become image pixels (the crop's inverse warp) and an absolute depth ``Z = d * depth_range + Z_root`` with the
ground-truth root depth, are back-projected with the frame's ground-truth intrinsics, and are scored against the
camera-frame ground truth after root alignment (MPJPE) and after similarity Procrustes (PA-MPJPE), overall and per
action, in mm (``dataset.evaluator``: :class:`sar.evaluation.mpjpe.Pose3DEvaluator`). With ``task.evaluation.mean_pose_baseline`` the
metrics also hold ``MPJPE_mean_pose``: the MPJPE of predicting the mean training pose (root-relative) everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sar.evaluation.mpjpe import back_project
from sar.systems.topdown import TopDownSystem, apply_affine
from sar.utils.instantiate import build

__all__ = ["Pose3DSystem", "camera_joints"]


def camera_joints(codec: Any, uvd: torch.Tensor, meta: dict[str, Any], root_joint: int = 0) -> np.ndarray:
    """Camera-frame joints (B, K, 3) in mm of decoded (u, v, d) (B, K, 3): u, v to image pixels by the crop's
    ``meta["inv_warp"]``, depth ``d * codec.depth_range`` plus the ground-truth root depth of ``meta["joints_cam"]``,
    back-projected with the frame's intrinsics ``meta["f"]``, ``meta["c"]``."""
    pixels = apply_affine(meta["inv_warp"].to(uvd), codec.to_pixels(uvd)).double().cpu().numpy()
    gt = meta["joints_cam"].double().cpu().numpy()
    depth = uvd[..., 2].double().cpu().numpy() * codec.depth_range + gt[:, root_joint:root_joint + 1, 2]
    f, c = meta["f"].double().cpu().numpy(), meta["c"].double().cpu().numpy()
    return np.stack([back_project(pixels[i], depth[i], f[i], c[i]) for i in range(len(pixels))])


class Pose3DSystem(TopDownSystem):
    """3D human pose from one crop (docs/pose3d.md)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.root_joint = int(self.cfg["task"]["root_joint"])
        self.evaluator = build(self.cfg["dataset"]["evaluator"], "dataset.evaluator", root=self.root_joint)
        self._baseline: float | None = None

    def setup(self, stage: str) -> None:
        """Nothing to read up front: the ground truth travels with the validation samples."""

    @torch.no_grad()
    def predict_uvd(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, v, d) (B, K, 3) in RLE's frame and scores (B, K), with the flip pass when configured."""
        outputs = self.model(images)
        if not self.flip_test:
            return self.codec.decode(outputs)
        return self.codec.decode_flip(outputs, self.model(images.flip(-1)), self.flip_indices.tolist())

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        uvd, scores = self.predict_uvd(batch["image"])
        meta = batch["meta"]
        pred = camera_joints(self.codec, uvd.float(), meta, self.root_joint)
        gt = meta["joints_cam"].double().cpu().numpy()
        records = self._preds.setdefault(dataloader_idx, [])
        for i in range(len(pred)):
            records.append({"pred": pred[i], "gt": gt[i], "action": meta["action"][i], "imgname": meta["imgname"][i],
                            "index": int(meta["index"][i])})
        return {"uvd": uvd, "scores": scores}  # checked by sar.callbacks.FiniteGuard

    def compute_metrics(self, preds: dict[int, list[dict]]) -> dict[str, float]:
        """MPJPE / PA-MPJPE (mm), overall and per action (and ``nonfinite_predictions``); the results list goes to
        ``results_dir`` when set (``results_keypoints.json``)."""
        metrics = self.evaluator.evaluate(preds.get(0, []), self.results_dir, prefix="results")
        if bool(self.cfg["task"]["evaluation"]["mean_pose_baseline"]):
            dm = self.trainer.datamodule if self._trainer is not None else None
            if self._baseline is None and dm is not None and hasattr(dm, "mean_pose_baseline"):
                self._baseline = float(dm.mean_pose_baseline())
            if self._baseline is not None:
                metrics["MPJPE_mean_pose"] = self._baseline
        return metrics

    # -- bench / table ---------------------------------------------------------------------------------------
    @classmethod
    def bench_sections(cls) -> dict[str, Any]:
        """``python -m sar.bench pose3d --task pose3d [--write BENCHMARKS.md] [--fresh-data] [overrides]``: the
        embedded default trained with each head under the same budget (:func:`bench_heads`)."""
        return {"pose3d": (lambda args: bench_heads(args.overrides, fresh_data=args.fresh_data), bench_table)}

    @classmethod
    def table_layouts(cls) -> dict[str, Any]:
        """The 3D table (src/sar/paper_results_pose3d.yaml: RLE's published numbers, labelled as RLE's)."""
        from sar.table import load_paper_results

        return load_paper_results(Path(__file__).resolve().parents[1] / "paper_results_pose3d.yaml")


BENCH_HEADS = ("sar", "rle", "regression", "integral")


def bench_heads(extra: list[str], fresh_data: bool = False, heads: tuple[str, ...] = BENCH_HEADS) -> dict[str, Any]:
    """``python -m sar.train task=pose3d head=<h>`` for every head (same defaults, same budget), each in a new
    ``outputs/bench/<stamp>-pose3d-<h>`` (:func:`sar.bench.timed_train`): MPJPE, PA-MPJPE, the mean-pose baseline,
    train and wall seconds, command. ``fresh_data``: an empty dataset cache (the first run generates the set)."""
    import tempfile
    import time

    from sar.bench import bench_dir, timed_train

    if fresh_data:
        extra = [f"dataset.cache_dir={tempfile.mkdtemp(prefix='sar-bench-data-')}", *extra]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    keys = ("MPJPE", "PA_MPJPE", "MPJPE_mean_pose", "train_seconds")
    return {head: timed_train(["task=pose3d", f"head={head}"], bench_dir(f"{stamp}-pose3d-{head}"), extra, keys)
            for head in heads}


def bench_table(runs: dict[str, Any]) -> str:
    """The markdown block of :func:`bench_heads`."""
    rows = ["| head | MPJPE (mm) | PA-MPJPE (mm) | mean-pose MPJPE (mm) | ratio | train s | wall s | command |",
            "|---" * 8 + "|"]
    for head, r in runs.items():
        rows.append(f"| {head} | {r['MPJPE']:.1f} | {r['PA_MPJPE']:.1f} | {r['MPJPE_mean_pose']:.1f} | "
                    f"{r['MPJPE'] / r['MPJPE_mean_pose']:.2f} | {r['train_seconds']} | {r['wall_s']} | `{r['command']}` |")
    return "\n".join(rows) + "\n"
