"""MPII PCKh (docs/datasets.md), the official protocol reimplemented.

A joint is correct when ``||pred - gt|| <= alpha * head_size`` with ``head_size = SC_BIAS * headbox diagonal``
(``SC_BIAS = 0.6``); only joints labelled in the ground truth (``visible > 0``, i.e. ``jnt_missing == 0``) count.

* Per joint: ``PCKh_j = correct_j / visible_j`` (``nan`` for a joint never labelled).
* **Mean** (``"PCKh@<alpha>"``): the per-joint PCKh averaged with weights ``visible_j / sum visible`` over the
  joints **excluding pelvis (6) and thorax (7)**, i.e. ``sum_j correct_j / sum_j visible_j`` over the other 14.
* Groups (the official table): Head = head_top (9); Shoulder, Elbow, Wrist, Hip, Knee, Ankle = mean of the
  left and right joints' PCKh (upper_neck is in the Mean but has no column).
* The comparison is ``<=`` (the official MATLAB / HRNet code). ``PCKh@0.1`` is computed at exactly 0.1 (HRNet's
  table reads its 0.01-step curve at index 11, i.e. 0.11; MMPose 1.x fixed this to 0.1).
* All values are **fractions in [0, 1]** (the official code prints percentages).

Predictions and ground truth must be in the same pixel frame: the official ``pos_gt_src`` is 1-based, so
0-based predictions (this project's convention) get ``+ 1`` — :func:`pckh_from_mat` does that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sar.data.formats import read_json
from sar.evaluation.base import ResultsEvaluator

__all__ = ["MPII_GROUPS", "MPII_JOINT_NAMES", "PCKH_EXCLUDED", "SC_BIAS", "MpiiEvaluator", "pckh", "pckh_from_mat"]

SC_BIAS = 0.6
PCKH_EXCLUDED: tuple[int, ...] = (6, 7)  # pelvis, thorax
MPII_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)  # fmt: skip
#: Official table columns -> joint indices (averaged).
MPII_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (9,),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}


def _key(alpha: float) -> str:
    return f"PCKh@{alpha:g}"


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    headbox_sizes: np.ndarray | Sequence[float],
    thresholds: Sequence[float] = (0.5, 0.1),
    sc_bias: float = SC_BIAS,
    joint_names: Sequence[str] = MPII_JOINT_NAMES,
    excluded: Sequence[int] = PCKH_EXCLUDED,
) -> dict[str, Any]:
    """PCKh of ``pred`` (N, K, 2) against ``gt`` (N, K, 2) with ``visible`` (N, K).

    Args:
        headbox_sizes: (N,) diagonal length of each person's GT head box in pixels (the head size is
            ``sc_bias *`` this).
        thresholds: the alphas to report.
        joint_names: K names for the per-joint tables (default: the MPII order).
        excluded: joints left out of the Mean (default: pelvis, thorax).

    Returns:
        ``{"PCKh@0.5": mean, "PCKh@0.1": mean, "per_joint@0.5": {name: value}, "groups@0.5": {"Head": ...},
        ..., "count": {name: visible count}}``: fractions in [0, 1]; ``nan`` where nothing is labelled.
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float64) > 0
    sizes = np.asarray(headbox_sizes, dtype=np.float64).reshape(-1)
    if p.ndim != 3 or p.shape[-1] < 2 or g.shape[:2] != p.shape[:2] or g.shape[-1] < 2:
        raise ValueError(f"pred and gt must be (N, K, 2) with the same N, K; got {p.shape} and {g.shape}")
    n, k = p.shape[:2]
    if vis.shape != (n, k) or sizes.shape != (n,):
        raise ValueError(
            f"visible must be ({n}, {k}) and headbox_sizes ({n},); got {vis.shape}, {sizes.shape}"
        )
    if len(joint_names) != k:
        raise ValueError(f"{len(joint_names)} joint names for {k} joints")
    if np.any(sizes[vis.any(axis=1)] <= 0):
        raise ValueError("head box sizes must be > 0 for persons with labelled joints")

    head = sc_bias * sizes
    dist = np.linalg.norm(p[..., :2] - g[..., :2], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(vis, dist / np.where(head > 0, head, 1.0)[:, None], np.inf)
    counts = vis.sum(axis=0)
    included = np.ones(k, dtype=bool)
    included[list(excluded)] = False

    out: dict[str, Any] = {"count": {name: int(c) for name, c in zip(joint_names, counts, strict=True)}}
    for alpha in thresholds:
        correct = ((scaled <= alpha) & vis).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_joint = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
        denom = counts[included].sum()
        out[_key(alpha)] = float(correct[included].sum() / denom) if denom > 0 else float("nan")
        out[f"per_joint@{alpha:g}"] = {name: float(v) for name, v in zip(joint_names, per_joint, strict=True)}
        if k == len(MPII_JOINT_NAMES):
            out[f"groups@{alpha:g}"] = {
                group: float(np.mean(per_joint[list(ids)])) for group, ids in MPII_GROUPS.items()
            }
    return out


def pckh_from_mat(
    pred: np.ndarray,
    mat_file: str | os.PathLike[str],
    thresholds: Sequence[float] = (0.5, 0.1),
    pred_zero_based: bool = True,
) -> dict[str, Any]:
    """Official MPII val PCKh: ``pred`` (N, 16, 2) in the order of ``mpii_val.json`` against ``mpii_gt_val.mat``.

    ``pred_zero_based=True`` (this project's frame) adds 1 to the predictions before comparing with the
    1-based ``pos_gt_src``.
    """
    from sar.data.formats.mpii import load_mpii_headboxes

    ref = load_mpii_headboxes(mat_file)
    p = np.asarray(pred, dtype=np.float64)[..., :2]
    if p.shape != ref["gt"].shape:
        raise ValueError(f"{mat_file}: predictions {p.shape} do not match the ground truth {ref['gt'].shape}")
    if pred_zero_based:
        p = p + 1.0
    return pckh(p, ref["gt"], ref["visible"], ref["headbox_sizes"], thresholds)


def _flatten(result: dict[str, Any], thresholds: Sequence[float]) -> dict[str, float]:
    """Float metrics of a :func:`pckh` result: the Means, then ``PCKh@a/<group>`` and ``PCKh@a/<joint>``
    (``nan``, a joint never labelled, becomes -1 as COCOeval's empty value, so metrics.json stays strict JSON)."""
    out: dict[str, float] = {}
    for alpha in thresholds:
        out[_key(alpha)] = result[_key(alpha)]
    for alpha in thresholds:
        for table in (f"groups@{alpha:g}", f"per_joint@{alpha:g}"):
            for name, value in (result.get(table) or {}).items():
                out[f"{_key(alpha)}/{name}"] = value
    return {k: (-1.0 if not np.isfinite(v) else float(v)) for k, v in out.items()}


class MpiiEvaluator(ResultsEvaluator):
    """MPII val PCKh for the top-down system (``build_evaluator("mpii", ...)``, dataset config ``evaluator: mpii``).

    Ground truth: the official ``mpii_gt_val.mat`` (``headbox_file``; head boxes, ``jnt_missing``, 1-based
    ``pos_gt_src``) in the person order of the val json ``ann_file`` (whose record index is the prediction's
    ``ann_id``, :func:`sar.data.formats.mpii.load_mpii_instances`). Predictions (0-based image px) get ``+ 1``.
    A val person without a prediction counts as wrong on all its joints (a warning says how many), so a
    partial evaluation (``limit_val_batches``) can only under-report. A prediction with a non-finite value in its
    keypoints (x, y or score) is dropped: a miss on every joint, left out of ``kpt_error_px`` / ``PCK@0.05`` and
    of the results json, and counted in ``nonfinite_predictions`` (a float, 0.0 when none; WARNING).

    :meth:`evaluate` returns ``PCKh@0.5`` and ``PCKh@0.1`` (the official Mean: all joints but pelvis and
    thorax), ``PCKh@<a>/<group>`` (Head, Shoulder, ..., Ankle: the official table) and ``PCKh@<a>/<joint>`` (the
    16 joints), all fractions (-1 for a joint never labelled); ``nonfinite_predictions``; ``kpt_error_px`` (mean
    distance over the labelled joints of the predicted persons) and ``PCK@0.05`` (error <= 0.05 x the person box side,
    ``200 * scale``), and writes ``<prefix>_keypoints.json`` (``[{"ann_id", "image_id", "image", "keypoints":
    [x, y, score] * 16 (0-based px)}]``). Other keyword arguments (the COCO evaluators' NMS / rescoring knobs)
    are accepted and ignored: MPII is scored on GT persons.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str],
        spec: Any = None,
        headbox_file: str | os.PathLike[str] | None = None,
        thresholds: Sequence[float] = (0.5, 0.1),
        **_ignored: Any,
    ) -> None:
        from sar.data.formats.mpii import load_mpii_headboxes, mpii_bbox, mpii_image_ids

        if headbox_file is None or not Path(headbox_file).is_file():
            raise FileNotFoundError(
                f"MPII PCKh needs the official val ground truth with head boxes (dataset.headbox_file, "
                f"mpii_gt_val.mat); got {headbox_file}"
            )
        self.ann_file, self.headbox_file = ann_file, headbox_file
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ref = load_mpii_headboxes(headbox_file)
        records = read_json(ann_file)
        n = self.ref["gt"].shape[0]
        if not isinstance(records, list):
            raise ValueError(f"{ann_file}: an MPII annotation file must be a list of person records")  # noqa: TRY004
        if len(records) != n:
            raise ValueError(f"{ann_file}: {len(records)} persons, but {headbox_file} has {n}: not the same split")
        self.images = [str(r["image"]) for r in records]
        ids = mpii_image_ids(self.images)
        self.image_ids = [ids[name] for name in self.images]
        self.box_sides = np.array([mpii_bbox(r["center"], float(r["scale"]))[2] for r in records], dtype=np.float64)
        self.last_results: list[dict[str, Any]] = []
        self.last_pckh: dict[str, Any] = {}

    def format_results(self, preds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The finite predictions as results records ``{"ann_id", "image_id", "image", "keypoints": [x, y,
        score] * 16}`` (0-based px, a missing score 0), in val person order; warns about the dropped and the
        missing ones."""
        n = self.ref["gt"].shape[0]
        pred = np.full((n, len(MPII_JOINT_NAMES), 3), np.nan)
        have = np.zeros(n, dtype=bool)
        nonfinite = 0
        for p in preds:
            i = int(p["ann_id"])
            if not 0 <= i < n:
                raise ValueError(f"prediction ann_id {i} is not a person of {self.ann_file} (0..{n - 1})")
            kpts = np.asarray(p["keypoints"], dtype=np.float64)
            if kpts.ndim != 2 or kpts.shape[0] != len(MPII_JOINT_NAMES) or kpts.shape[1] < 2:
                raise ValueError(f"prediction for ann_id {i} has keypoints of shape {kpts.shape}, expected (16, 2|3)")
            if not np.isfinite(kpts[:, :3]).all():  # a diverged model: a miss on every joint, not written
                nonfinite += 1
                continue
            pred[i] = np.nan
            pred[i, :, : min(kpts.shape[1], 3)] = kpts[:, :3]
            have[i] = True
        self.last_nonfinite = nonfinite
        log = logging.getLogger(__name__)
        if nonfinite:
            log.warning("MPII PCKh: %d of %d predictions have non-finite keypoints: dropped (a miss on every joint, "
                        "not written); reported as nonfinite_predictions", nonfinite, len(preds))
        if not have.all():
            log.warning("MPII PCKh: %d of %d val persons have no (finite) prediction and count as wrong",
                        int((~have).sum()), n)
        return [
            {"ann_id": i, "image_id": self.image_ids[i], "image": self.images[i],
             "keypoints": np.nan_to_num(pred[i], nan=0.0).reshape(-1).tolist()}
            for i in np.flatnonzero(have)
        ]  # fmt: skip

    def score(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """PCKh, ``kpt_error_px`` and ``PCK@0.05`` of the results (class docstring); a val person without a record
        misses every joint."""
        n = self.ref["gt"].shape[0]
        pred = np.full((n, len(MPII_JOINT_NAMES), 2), np.nan)
        have = np.zeros(n, dtype=bool)
        for r in results:
            i = int(r["ann_id"])
            pred[i] = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
            have[i] = True
        result = pckh(pred + 1.0, self.ref["gt"], self.ref["visible"], self.ref["headbox_sizes"], self.thresholds)
        self.last_pckh = result
        metrics = _flatten(result, self.thresholds)
        vis = (self.ref["visible"] > 0) & have[:, None]
        dist = np.linalg.norm(pred + 1.0 - self.ref["gt"], axis=-1)
        metrics["kpt_error_px"] = float(dist[vis].mean()) if vis.any() else float("nan")
        within = dist <= 0.05 * self.box_sides[:, None]
        metrics["PCK@0.05"] = float(within[vis].mean()) if vis.any() else float("nan")
        return metrics
