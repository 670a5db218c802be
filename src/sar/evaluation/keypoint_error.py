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

__all__ = ["AREA_RANGES", "area_range", "keypoint_error", "load_coco_dict", "matched_keypoints", "oks_matched_errors", "pck"]

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


#: COCO's area ranges of a GT person (``area`` in image pixels squared; COCOeval's small / medium / large, the
#: ranges of APM and APL): name -> [low, high).
AREA_RANGES: dict[str, tuple[float, float]] = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2),
                                               "large": (96.0**2, float("inf"))}


def area_range(area: float) -> str:
    """The :data:`AREA_RANGES` name of a GT person of ``area`` (COCOeval's bounds, its upper bound inclusive)."""
    return next(name for name, (lo, hi) in AREA_RANGES.items() if lo <= area <= hi)


def oks_matched_errors(
    preds: Sequence[Mapping[str, Any]],
    ann_file: str | os.PathLike[str] | Mapping[str, Any],
    sigmas: Sequence[float] | np.ndarray,
) -> dict[str, Any]:
    """Keypoint error of multi-person predictions, which carry no annotation id: where the localisation fails
    when AP only says that it does.

    Matching, per image: every GT person that is not ``iscrowd`` and has a labelled keypoint (``v > 0``) is
    paired with at most one prediction (``image_id``, ``keypoints`` (K*3 or (K,3)), in image pixels) by the
    Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) maximising their OKS (COCO's formula: the
    GT's ``area`` as ``s^2``, its labelled keypoints only); a pair with OKS below 1e-6 stays unmatched. The error
    of a matched pair is the pixel distance at each GT-labelled keypoint with a finite prediction.

    Returns ``kpt_error_px`` (mean over every matched labelled keypoint, ``nan`` when none), ``per_keypoint``
    (K means, ``nan`` for a keypoint never matched), ``median_per_keypoint`` (K medians), ``matched`` and
    ``unmatched`` (GT persons with and without a prediction), and ``by_area``: for COCO's area ranges of the GT
    person (:data:`AREA_RANGES`, the ranges of APM / APL), its ``matched``, ``unmatched`` and
    ``median_per_keypoint``, so a per-joint error can be read beside APM and APL.
    """
    from scipy.optimize import linear_sum_assignment

    data = load_coco_dict(ann_file)
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    k = sig.size
    var = (2.0 * sig) ** 2
    by_image: dict[int, list[np.ndarray]] = {}
    for pred in preds:
        kpts = np.asarray(pred["keypoints"], dtype=np.float64).reshape(-1, 3)
        if kpts.shape[0] != k:
            raise ValueError(f"prediction for image {pred.get('image_id')} has {kpts.shape[0]} keypoints, expected {k}")
        by_image.setdefault(int(pred["image_id"]), []).append(kpts)
    errors: list[list[float]] = [[] for _ in range(k)]
    by_area = {name: {"errors": [[] for _ in range(k)], "matched": 0, "unmatched": 0} for name in AREA_RANGES}
    gts: dict[int, list[Mapping[str, Any]]] = {}
    for ann in data.get("annotations", []):
        if ann.get("iscrowd") or "keypoints" not in ann:
            continue
        if (np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[:, 2] > 0).any():
            gts.setdefault(int(ann["image_id"]), []).append(ann)
    for image_id, anns in gts.items():
        cand = by_image.get(image_id, [])
        gt = np.stack([_gt_keypoints(a, k) for a in anns])  # (G,K,3)
        if gt.shape[1] != k:
            raise ValueError(f"image {image_id}: the ground truth has {gt.shape[1]} keypoints, expected {k}")
        raw_area = np.array([float(a.get("area", 0.0)) for a in anns])
        ranges = [area_range(a) for a in raw_area]
        area = raw_area + np.spacing(1)
        if not cand:
            for name in ranges:
                by_area[name]["unmatched"] += 1
            continue
        pr = np.stack(cand)  # (P,K,3)
        vis = gt[..., 2] > 0  # (G,K)
        d2 = ((pr[None, :, :, :2] - gt[:, None, :, :2]) ** 2).sum(-1)  # (G,P,K)
        e = np.exp(-np.nan_to_num(d2, nan=np.inf) / var / area[:, None, None] / 2.0)
        oks = (e * vis[:, None]).sum(-1) / vis.sum(-1)[:, None]  # (G,P)
        rows, cols = linear_sum_assignment(-oks)
        keep = oks[rows, cols] >= 1e-6
        paired = dict(zip(rows[keep].tolist(), cols[keep].tolist()))
        for g in range(len(anns)):
            part = by_area[ranges[g]]
            if g not in paired:
                part["unmatched"] += 1
                continue
            part["matched"] += 1
            dist = np.sqrt(d2[g, paired[g]])
            for j in np.nonzero(vis[g] & np.isfinite(dist))[0]:
                errors[j].append(float(dist[j]))
                part["errors"][j].append(float(dist[j]))
    flat = [x for e in errors for x in e]

    def medians(per_keypoint: list[list[float]]) -> list[float]:
        return [float(np.median(e)) if e else float("nan") for e in per_keypoint]

    return {
        "kpt_error_px": float(np.mean(flat)) if flat else float("nan"),
        "per_keypoint": [float(np.mean(e)) if e else float("nan") for e in errors],
        "median_per_keypoint": medians(errors),
        "matched": sum(part["matched"] for part in by_area.values()),
        "unmatched": sum(part["unmatched"] for part in by_area.values()),
        "by_area": {name: {"matched": part["matched"], "unmatched": part["unmatched"],
                           "median_per_keypoint": medians(part["errors"])}
                    for name, part in by_area.items()},
    }
