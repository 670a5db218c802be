"""Keypoint accuracy against COCO-style ground truth on GT boxes, matched by annotation id.

* :func:`keypoint_error`: mean Euclidean error in image pixels (the paper's "Kpt. Error (px)").
* :func:`pck`: strict PCK, the fraction of labelled keypoints with error <= ``alpha * max(w, h)`` of the
  GT box (``alpha = 0.05`` gives the ``PCK@0.05`` validation metric).

Both share one matching step (:func:`matched_keypoints`), which refuses duplicate annotation ids. A predicted
keypoint with a non-finite ``x`` or ``y`` (a diverged model) is left out of the mean, and the number left out is
logged (WARNING); when nothing finite remains the result is ``nan`` (written as ``null`` by
:func:`sar.evaluation.results.write_json_atomic`).

:func:`load_coco_dict` with ``validate=True`` is the evaluators' ground-truth loader: it applies
:func:`sar.data.formats.coco.validate_coco_gt` (unique image / annotation ids, ``area`` a finite number > 0 or
derived from the bbox when absent).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from sar.data.formats.coco import (  # load_coco_dict: re-exported (it is a data-format reader)
    WHOLEBODY_KEYPOINT_FIELDS,
    check_unique_ids,
    load_coco_dict,
)
from sar.data.formats.coco import (
    coco_source as _source,
)

__all__ = ["keypoint_error", "load_coco_dict", "matched_keypoints", "pck"]

log = logging.getLogger(__name__)


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
        ValueError: an ``ann_id`` is not in the annotation file, the keypoint count K differs, or the file has
            duplicate annotation ids.
    """
    data = load_coco_dict(ann_file)
    annotations = data.get("annotations", [])
    check_unique_ids((int(ann["id"]) for ann in annotations), "annotation", _source(ann_file))
    anns_by_id = {int(ann["id"]): ann for ann in annotations if "keypoints" in ann}
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


def _usable(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int]:
    """The (K,) mask of GT-labelled keypoints with a finite prediction, and how many labelled ones are not."""
    labelled = gt[:, 2] > 0
    finite = np.isfinite(pred[:, :2]).all(axis=1)
    return labelled & finite, int((labelled & ~finite).sum())


def _warn_nonfinite(what: str, n: int) -> None:
    if n:
        log.warning("%s: %d labelled keypoints have a non-finite prediction and are left out", what, n)


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

    Predicted keypoints with a non-finite ``x`` / ``y`` are left out of the mean (and of the count); how many
    were left out is logged.

    Returns:
        The mean error (``nan`` if no labelled, finite keypoint was matched), or ``(mean, count)``.

    Raises:
        ValueError: an ``ann_id`` is not in the annotation file, or the keypoint count K differs.
    """
    total = 0.0
    count = 0
    nonfinite = 0
    for pred, gt, _ann in matched_keypoints(preds, ann_file):
        used, skipped = _usable(pred, gt)
        nonfinite += skipped
        dist = np.linalg.norm(pred[used, :2] - gt[used, :2], axis=1)
        total += float(dist.sum())
        count += int(used.sum())
    _warn_nonfinite("keypoint_error", nonfinite)

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
    :func:`keypoint_error` (by ``ann_id``, detector-box predictions ignored; non-finite predicted keypoints left
    out of the fraction and counted in a log line).

    Returns:
        A value in [0, 1], or ``nan`` if no labelled, finite keypoint was matched.

    Raises:
        ValueError: as :func:`matched_keypoints`, or a matched annotation has no ``bbox``.
    """
    hits = 0
    count = 0
    nonfinite = 0
    for pred, gt, ann in matched_keypoints(preds, ann_file):
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) < 4:
            raise ValueError(f"annotation {ann.get('id')} has no bbox [x, y, w, h] for PCK")
        threshold = float(alpha) * max(float(bbox[2]), float(bbox[3]))
        used, skipped = _usable(pred, gt)
        nonfinite += skipped
        dist = np.linalg.norm(pred[used, :2] - gt[used, :2], axis=1)
        hits += int((dist <= threshold).sum())
        count += int(used.sum())
    _warn_nonfinite("pck", nonfinite)
    return hits / count if count else float("nan")
