"""3D pose metrics (task=pose3d): MPJPE and PA-MPJPE (protocols P1 and P2), overall and per action, in mm.

* :func:`back_project`: image pixels + absolute depth -> camera-frame points (pinhole, no distortion), as RLE's
  evaluation does with the ground-truth root depth and intrinsics.
* :func:`mpjpe`: mean Euclidean joint error after root alignment (the root joint is included in the mean, with
  error 0, as in RLE / LocLLM).
* :func:`procrustes_align` / :func:`pa_mpjpe`: similarity Procrustes (scale, rotation, translation) of the
  prediction onto the ground truth, then the mean joint error (no root alignment needed: translation is fitted).
* :class:`Pose3DEvaluator`: the metrics of a set of predictions, with one ``MPJPE_<action>`` /
  ``PA_MPJPE_<action>`` per action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sar.evaluation.base import ResultsEvaluator

__all__ = ["Pose3DEvaluator", "back_project", "mpjpe", "pa_mpjpe", "procrustes_align"]


def back_project(uv: np.ndarray, depth: np.ndarray, f: Sequence[float], c: Sequence[float]) -> np.ndarray:
    """Camera-frame points (..., 3) of pixels ``uv`` (..., 2) at depths ``depth`` (...,): ``X = (u - cx) Z / fx``."""
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    fx, fy = (float(v) for v in np.ravel(f))
    cx, cy = (float(v) for v in np.ravel(c))
    return np.stack([(uv[..., 0] - cx) * z / fx, (uv[..., 1] - cy) * z / fy, z], axis=-1)


def project(points: np.ndarray, f: Sequence[float], c: Sequence[float]) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) to pixels (..., 2)."""
    p = np.asarray(points, dtype=np.float64)
    return p[..., :2] / p[..., 2:3] * np.ravel(f)[:2] + np.ravel(c)[:2]


def _per_joint_root_aligned(pred: np.ndarray, gt: np.ndarray, root: int) -> np.ndarray:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (..., K, 3), got {pred.shape} and {gt.shape}")
    return np.linalg.norm((pred - pred[..., root:root + 1, :]) - (gt - gt[..., root:root + 1, :]), axis=-1)


def mpjpe(pred: np.ndarray, gt: np.ndarray, root: int = 0) -> float:
    """Mean per-joint position error after aligning both roots (units of the inputs)."""
    return float(_per_joint_root_aligned(pred, gt, root).mean())


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (K, 3) mapped by the similarity ``s R x + t`` that minimises the squared distance to ``gt``
    (Umeyama; a reflection is excluded)."""
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(gt, dtype=np.float64)
    mx, my = x.mean(0), y.mean(0)
    x0, y0 = x - mx, y - my
    var_x = float((x0 * x0).sum())
    if var_x <= 0:
        return np.broadcast_to(my, x.shape).copy()
    u, s, vt = np.linalg.svd(x0.T @ y0)  # H = X^T Y
    d = np.sign(np.linalg.det(vt.T @ u.T))
    diag = np.array([1.0, 1.0, d if d != 0 else 1.0])
    rot = vt.T @ np.diag(diag) @ u.T
    scale = float((s * diag).sum()) / var_x
    return scale * x0 @ rot.T + my


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint error after similarity Procrustes alignment of each pose (inputs (K, 3) or (N, K, 3))."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    errors = [np.linalg.norm(procrustes_align(p, g) - g, axis=-1).mean() for p, g in zip(pred, gt, strict=True)]
    return float(np.mean(errors)) if errors else float("nan")


class Pose3DEvaluator(ResultsEvaluator):
    """MPJPE / PA-MPJPE (mm) of camera-frame predictions against the ground truth.

    ``evaluate(records, out_dir)``: each record holds ``pred`` (K, 3) and ``gt`` (K, 3) in mm, ``action`` and
    ``imgname``; records with a non-finite prediction are dropped and counted (``nonfinite_predictions``). The
    results list (``imgname``, ``action``, ``pred_mm``, ``gt_mm``) goes to ``<out_dir>/results_keypoints.json``.
    Metrics: ``MPJPE``, ``PA_MPJPE`` (means over all poses), ``MPJPE_<action>`` / ``PA_MPJPE_<action>``,
    ``MPJPE_action_mean`` (the mean over actions, as per-action tables report) and ``num_poses``. ``eval_joints``:
    the joints scored (all 17 of Human3.6M by default); ``root``: the alignment joint (pelvis)."""

    ann_source = "the validation samples' 3D joints"

    def __init__(self, root: int = 0, eval_joints: Sequence[int] | None = None) -> None:
        self.root = int(root)
        self.eval_joints = None if eval_joints is None else [int(j) for j in eval_joints]

    def format_results(self, preds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        results, dropped = [], 0
        for r in preds:
            pred = np.asarray(r["pred"], dtype=np.float64)
            if not np.isfinite(pred).all():
                dropped += 1
                continue
            results.append({"imgname": str(r.get("imgname", "")), "action": str(r.get("action", "")),
                            "pred_mm": pred.tolist(),
                            "gt_mm": np.asarray(r["gt"], dtype=np.float64).tolist()})
        self.last_nonfinite = dropped
        return results

    def score(self, results: list[dict[str, Any]]) -> dict[str, float]:
        if not results:
            raise ValueError("no predictions to evaluate")
        pred = np.stack([np.asarray(r["pred_mm"], dtype=np.float64) for r in results])
        gt = np.stack([np.asarray(r["gt_mm"], dtype=np.float64) for r in results])
        per_pose = _per_joint_root_aligned(pred, gt, self.root)
        if self.eval_joints is not None:
            per_pose = per_pose[:, self.eval_joints]
            pred, gt = pred[:, self.eval_joints], gt[:, self.eval_joints]
        p1 = per_pose.mean(axis=1)
        p2 = np.array([np.linalg.norm(procrustes_align(p, g) - g, axis=-1).mean() for p, g in zip(pred, gt,
                                                                                                   strict=True)])
        out = {"MPJPE": float(p1.mean()), "PA_MPJPE": float(p2.mean()), "num_poses": float(len(results))}
        actions = np.array([r["action"] for r in results])
        names = sorted(set(actions) - {""})
        for name in names:
            sel = actions == name
            out[f"MPJPE_{name}"] = float(p1[sel].mean())
            out[f"PA_MPJPE_{name}"] = float(p2[sel].mean())
        if names:
            out["MPJPE_action_mean"] = float(np.mean([out[f"MPJPE_{n}"] for n in names]))
        return out
