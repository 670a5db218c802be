"""Keypoint accuracy against COCO-style ground truth on GT boxes, matched by annotation id.

* :func:`keypoint_error`: mean Euclidean error in image pixels (the paper's "Kpt. Error (px)").
* :func:`pck`: strict PCK, the fraction of labelled keypoints with error <= ``alpha * max(w, h)`` of the
  GT box (``alpha = 0.05`` gives the ``PCK@0.05`` validation metric).

Both share one matching step (:func:`matched_keypoints`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from sar.data.formats import read_json
from sar.data.formats.coco import WHOLEBODY_KEYPOINT_FIELDS

__all__ = ["keypoint_error", "load_coco_dict", "matched_keypoints", "pck"]


def load_coco_dict(ann_file: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Return the COCO annotation dict for a path or an in-memory dict (the dict is not copied)."""
    if isinstance(ann_file, Mapping):
        return dict(ann_file)
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise TypeError(
            f"{os.fspath(ann_file)}: expected a COCO annotation object, got {type(data).__name__}"
        )
    return data


def _gt_keypoints(ann: Mapping[str, Any], num_keypoints: int) -> np.ndarray:
    """GT (K,3) of an annotation: ``keypoints``, or the COCO-WholeBody fields concatenated when the
    prediction has their total count (133)."""
    body = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    if body.shape[0] != num_keypoints and all(f in ann for f in WHOLEBODY_KEYPOINT_FIELDS):
        full = np.concatenate([np.asarray(ann[f], dtype=np.float64).reshape(-1, 3) for f in WHOLEBODY_KEYPOINT_FIELDS])
        if full.shape[0] == num_keypoints:
            return full
    return body


def matched_keypoints(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
) -> Iterator[tuple[np.ndarray, np.ndarray, Mapping[str, Any]]]:
    """Yield ``(pred (K, 2|3), gt (K, 3), annotation)`` for every prediction matched to a GT annotation.

    Predictions are matched by ``ann_id``; those with ``ann_id == -1`` (detector boxes) and annotations
    without any labelled keypoint (``v > 0``) are skipped.

    Raises:
        ValueError: an ``ann_id`` is not in the annotation file, or the keypoint count K differs.
    """
    data = load_coco_dict(ann_file)
    anns_by_id = {int(ann["id"]): ann for ann in data.get("annotations", []) if "keypoints" in ann}
    for pred in preds:
        ann_id = int(pred["ann_id"])
        if ann_id == -1:
            continue
        ann = anns_by_id.get(ann_id)
        if ann is None:
            raise ValueError(
                f"prediction ann_id {ann_id} is not a keypoint annotation of the annotation file"
            )
        kpts = np.asarray(pred["keypoints"], dtype=np.float64)
        gt = _gt_keypoints(ann, kpts.shape[0] if kpts.ndim == 2 else -1)
        if kpts.ndim != 2 or kpts.shape[0] != gt.shape[0] or kpts.shape[1] < 2:
            raise ValueError(
                f"prediction for ann_id {ann_id} has keypoints of shape {kpts.shape}, expected ({gt.shape[0]}, 2|3)"
            )
        if not (gt[:, 2] > 0).any():
            continue
        yield kpts, gt, ann


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
    total = 0.0
    count = 0
    for pred, gt, _ann in matched_keypoints(preds, ann_file):
        labelled = gt[:, 2] > 0
        dist = np.linalg.norm(pred[labelled, :2] - gt[labelled, :2], axis=1)
        total += float(dist.sum())
        count += int(labelled.sum())

    mean = total / count if count else float("nan")
    return (mean, count) if return_count else mean


def pck(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
    alpha: float = 0.05,
) -> float:
    """Strict PCK on GT boxes: the fraction of labelled keypoints whose error is <= ``alpha * size``.

    ``size = max(w, h)`` of the matched annotation's GT ``bbox`` ``[x, y, w, h]`` (image pixels), so
    ``alpha = 0.05`` accepts a keypoint within 5% of the box's longer side. The fraction is pooled over every
    GT-labelled keypoint (``v > 0``) of every matched prediction, with the same matching as
    :func:`keypoint_error` (by ``ann_id``, detector-box predictions ignored).

    Returns:
        A value in [0, 1], or ``nan`` if no labelled keypoint was matched.

    Raises:
        ValueError: as :func:`matched_keypoints`, or a matched annotation has no ``bbox``.
    """
    hits = 0
    count = 0
    for pred, gt, ann in matched_keypoints(preds, ann_file):
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) < 4:
            raise ValueError(f"annotation {ann.get('id')} has no bbox [x, y, w, h] for PCK")
        threshold = float(alpha) * max(float(bbox[2]), float(bbox[3]))
        labelled = gt[:, 2] > 0
        dist = np.linalg.norm(pred[labelled, :2] - gt[labelled, :2], axis=1)
        hits += int((dist <= threshold).sum())
        count += int(labelled.sum())
    return hits / count if count else float("nan")
