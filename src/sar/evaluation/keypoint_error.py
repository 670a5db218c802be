"""Mean Euclidean keypoint error (pixels) against COCO-style ground truth, matched by annotation id."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

__all__ = ["keypoint_error", "load_coco_dict"]


def load_coco_dict(ann_file: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Return the COCO annotation dict for a path or an in-memory dict (the dict is not copied)."""
    if isinstance(ann_file, Mapping):
        return dict(ann_file)
    with open(ann_file, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise TypeError(
            f"{os.fspath(ann_file)}: expected a COCO annotation object, got {type(data).__name__}"
        )
    return data


@overload
def keypoint_error(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
    return_count: Literal[False] = False,
) -> float: ...


@overload
def keypoint_error(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
    return_count: Literal[True],
) -> tuple[float, int]: ...


def keypoint_error(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
    return_count: bool = False,
) -> float | tuple[float, int]:
    """Mean Euclidean distance in image pixels between predicted and ground-truth keypoints.

    The mean is pooled over every GT-labelled keypoint (``v > 0``) of every matched prediction (not a mean of
    per-instance means). Predictions are matched to GT annotations by ``ann_id``; predictions with
    ``ann_id == -1`` (detector boxes) are ignored.

    Args:
        preds: prediction records ``{"ann_id", "keypoints": (K, 2|3) image px [+ score], ...}``.
        ann_file: COCO keypoint annotation file path or the loaded dict.
        return_count: also return the number of keypoints averaged over.

    Returns:
        The mean error (``nan`` if no labelled keypoint was matched), or ``(mean, count)``.

    Raises:
        ValueError: an ``ann_id`` is not in the annotation file, or the keypoint count K differs.
    """
    data = load_coco_dict(ann_file)
    gt_by_id: dict[int, np.ndarray] = {}
    for ann in data.get("annotations", []):
        if "keypoints" in ann:
            gt_by_id[int(ann["id"])] = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)

    total = 0.0
    count = 0
    for pred in preds:
        ann_id = int(pred["ann_id"])
        if ann_id == -1:
            continue
        gt = gt_by_id.get(ann_id)
        if gt is None:
            raise ValueError(
                f"prediction ann_id {ann_id} is not a keypoint annotation of the annotation file"
            )
        kpts = np.asarray(pred["keypoints"], dtype=np.float64)
        if kpts.ndim != 2 or kpts.shape[0] != gt.shape[0] or kpts.shape[1] < 2:
            raise ValueError(
                f"prediction for ann_id {ann_id} has keypoints of shape {kpts.shape}, expected ({gt.shape[0]}, 2|3)"
            )
        labelled = gt[:, 2] > 0
        if not labelled.any():
            continue
        dist = np.linalg.norm(kpts[labelled, :2] - gt[labelled, :2], axis=1)
        total += float(dist.sum())
        count += int(labelled.sum())

    mean = total / count if count else float("nan")
    return (mean, count) if return_count else mean
