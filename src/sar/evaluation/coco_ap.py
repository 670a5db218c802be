"""COCO keypoint AP/AR: instance rescoring, OKS-NMS and the official COCOeval (pycocotools or faster-coco-eval).

Pipeline of :meth:`CocoEvaluator.evaluate` (the MMPose ``CocoMetric`` defaults used by SAR, docs/method.md):

1. **Rescoring** (:func:`instance_score`). With ``score_mode="bbox_keypoint"`` the instance score is
   ``bbox_score * mean(keypoint scores > kpt_score_thr)``. *Pitfall (docs/method.md):* if no keypoint score
   exceeds the threshold, the mean is taken as 0 and the instance score is **0**. Such instances are *kept*
   (they still count as detections, ranked last); a warning reports how many there were. SAR keypoint scores
   are normalised spatial weights ``max_t w_t`` rather than heatmap peaks, so they can all fall below 0.2.
   ``"bbox_rle"`` is the official RLE rescoring ``bbox_score + mean + max`` of all keypoint scores, ``"bbox"``
   uses the bbox score only, ``"keypoint"`` the plain mean of all keypoint scores.
2. **OKS-NMS** per image (:func:`nms_order`, greedy, highest score kept, threshold 0.9 by default), vectorised over
   the images with the same number of predictions.
3. **Results order** = MMPose ``CocoMetric``'s results file, so that COCOeval's stable sort by score orders equal
   scores as MMPose does (docs/method.md, "Scoring on COCO"): per image, the kept instances in NMS visiting order
   (``scores.argsort()[::-1]``, numpy's default sort reversed, as MMPose's ``oks_nms``); without NMS the input
   (dataset) order.
4. **COCOeval** with ``iouType="keypoints"`` and ``params.kpt_oks_sigmas`` set to the given sigmas (any K).

Validation (no silent wrong numbers):

* **Predictions**: a record whose keypoints (x, y or score), ``bbox_score`` or ``area`` hold a non-finite value
  (a diverged model) never reaches COCOeval (whose ``ious < thr`` tests are False for NaN, so NaN detections
  would all *match*) and is not written to the results json: it is dropped, a WARNING gives the count, and the
  metrics carry it as ``nonfinite_predictions`` (a float, 0.0 when none).
* **Ground truth**, checked once in the constructor (so building an evaluator before training surfaces every
  GT problem): unique image and annotation ids; every annotation's ``area`` (crowd ones included) a finite
  number > 0, or, where absent, **derived from the bbox** ``w * h`` (which must be > 0); errors are
  ``ValueError`` naming the file and the annotation id (or the duplicated ids). A file without ``categories``
  (or with an empty list) gets the person category (id 1, keypoint names from the spec, no skeleton), with an
  INFO line; ``categories`` that is not a list is a ``ValueError``.

OKS between two *predictions* (used by NMS, :func:`oks_iou`) follows MMPose: all K keypoints count, the scale
is the mean of both areas, ``oks = mean_k exp(-d_k^2 / (2 * s^2 * (2 sigma_k)^2))`` with
``s^2 = (area_a + area_b) / 2``.
"""

from __future__ import annotations

import copy
import io
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from typing import Any, Literal

import numpy as np

from sar.evaluation.base import ResultsEvaluator
from sar.evaluation.keypoint_error import load_coco_dict
from sar.evaluation.pck import MpiiEvaluator

__all__ = [
    "CROWD_METRIC_NAMES",
    "EVALUATORS",
    "METRIC_NAMES",
    "SCORE_MODES",
    "WHOLEBODY_FIELDS",
    "CocoEvaluator",
    "CrowdPoseEvaluator",
    "WholeBodyEvaluator",
    "build_evaluator",
    "evaluator_name",
    "instance_score",
    "instance_scores",
    "nms_order",
    "oks_iou",
    "oks_nms",
    "pairwise_oks",
]

log = logging.getLogger(__name__)

ScoreMode = Literal["bbox_keypoint", "bbox_rle", "bbox", "keypoint"]
#: The instance rescoring rules of :func:`instance_score`.
SCORE_MODES: tuple[str, ...] = ("bbox_keypoint", "bbox_rle", "bbox", "keypoint")
Backend = Literal["pycocotools", "faster_coco_eval"]

#: Metric names in the order of ``COCOeval.stats`` for ``iouType="keypoints"``.
METRIC_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")

_EPS = float(np.spacing(1))


# ---------------------------------------------------------------------------------------------------------------
# Rescoring
# ---------------------------------------------------------------------------------------------------------------
def instance_scores(
    keypoint_scores: np.ndarray | Sequence[Sequence[float]],
    bbox_scores: np.ndarray | Sequence[float],
    score_mode: ScoreMode = "bbox_keypoint",
    kpt_score_thr: float = 0.2,
) -> np.ndarray:
    """Scores (N,) of N instances from their keypoint scores (N, K) and bbox scores (N,); see :func:`instance_score`.

    The arithmetic is MMPose ``CocoMetric``'s in float64, so that equal instances tie exactly as there:
    ``bbox_keypoint`` sums the scores above the threshold left to right (not numpy's pairwise sum) before dividing,
    ``bbox_rle`` is ``bbox + mean + max`` in that order.
    """
    s = np.asarray(keypoint_scores, dtype=np.float64)
    b = np.asarray(bbox_scores, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[0] != b.size:
        raise ValueError(f"keypoint scores must be (N, K) with N bbox scores, got {s.shape} and {b.shape}")
    if score_mode == "bbox":
        return b.copy()
    if score_mode == "keypoint":
        return s.mean(axis=1) if s.shape[1] else np.zeros_like(b)
    if score_mode == "bbox_rle":
        if not s.shape[1]:
            raise ValueError("score_mode='bbox_rle' needs at least one keypoint score")
        return b + s.mean(axis=1) + s.max(axis=1)
    if score_mode == "bbox_keypoint":
        valid = s > kpt_score_thr
        n = valid.sum(axis=1)
        total = np.cumsum(np.where(valid, s, 0.0), axis=1)[:, -1] if s.shape[1] else np.zeros_like(b)
        return b * np.where(n > 0, total / np.maximum(n, 1), 0.0)
    raise ValueError(f"unknown score_mode {score_mode!r}; expected one of {', '.join(SCORE_MODES)}")


def instance_score(
    keypoint_scores: np.ndarray | Sequence[float],
    bbox_score: float,
    score_mode: ScoreMode = "bbox_keypoint",
    kpt_score_thr: float = 0.2,
) -> float:
    """Score of one instance from its keypoint scores and its bbox score.

    - ``"bbox_keypoint"``: ``bbox_score * mean(s_k for s_k > kpt_score_thr)``, and **0.0 when no keypoint
      score exceeds the threshold** (MMPose behaviour, kept on purpose for comparability).
    - ``"bbox_rle"``: ``bbox_score + mean_k s_k + max_k s_k`` over all keypoints, no threshold: the rescoring of the
      official RLE code (``rlepose/trainer.py``, ``validate``) and MMPose's ``score_mode='bbox_rle'``.
    - ``"bbox"``: ``bbox_score``.
    - ``"keypoint"``: mean of all keypoint scores (0.0 for K = 0).
    """
    scores = np.asarray(keypoint_scores, dtype=np.float64).reshape(1, -1)
    return float(instance_scores(scores, [float(bbox_score)], score_mode, kpt_score_thr)[0])


# ---------------------------------------------------------------------------------------------------------------
# OKS between predictions and OKS-NMS
# ---------------------------------------------------------------------------------------------------------------
def _as_sigmas(sigmas: Any) -> np.ndarray:
    """Accept an array-like of sigmas or any object with a ``.sigmas`` attribute (e.g. ``KeypointSpec``)."""
    sig = getattr(sigmas, "sigmas", sigmas)
    if sig is None:
        raise ValueError("OKS sigmas are required (the keypoint spec has none)")
    arr = np.asarray(sig, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"OKS sigmas must be finite and positive, got {arr}")
    return arr


def oks_iou(
    kpts_a: np.ndarray,
    kpts_b: np.ndarray,
    area_a: float,
    areas_b: np.ndarray | Sequence[float] | float,
    sigmas: np.ndarray | Sequence[float],
    vis_thr: float | None = None,
) -> np.ndarray:
    """OKS between one prediction ``kpts_a`` (K, 2|3) and N predictions ``kpts_b`` (N, K, 2|3) or (K, 2|3).

    ``s^2 = (area_a + area_b) / 2``; ``oks = mean_k exp(-|a_k - b_k|^2 / (2 s^2 (2 sigma_k)^2))`` over all
    keypoints, or, when ``vis_thr`` is given, over the keypoints whose scores (column 2) exceed ``vis_thr`` in
    both predictions (OKS 0 when there are none). Returns an array of shape (N,).
    """
    a = np.asarray(kpts_a, dtype=np.float64)
    b = np.asarray(kpts_b, dtype=np.float64)
    if b.ndim == 2:
        b = b[None]
    areas = np.broadcast_to(np.asarray(areas_b, dtype=np.float64), (b.shape[0],))
    sig = _as_sigmas(sigmas)
    if a.shape[0] != sig.size or b.shape[1] != sig.size:
        raise ValueError(f"keypoint count mismatch: a {a.shape}, b {b.shape}, sigmas {sig.size}")
    var = (2.0 * sig) ** 2
    d2 = ((b[..., :2] - a[None, :, :2]) ** 2).sum(-1)  # (N, K)
    scale = (float(area_a) + areas) / 2.0 + _EPS  # (N,)
    e = np.exp(-d2 / var[None, :] / scale[:, None] / 2.0)
    if vis_thr is None:
        return e.mean(axis=1)
    mask = (a[None, :, 2] > vis_thr) & (b[..., 2] > vis_thr)
    n = mask.sum(axis=1)
    return np.where(n > 0, (e * mask).sum(axis=1) / np.maximum(n, 1), 0.0)


def pairwise_oks(
    kpts: np.ndarray,
    areas: np.ndarray | Sequence[float],
    sigmas: np.ndarray | Sequence[float],
    vis_thr: float | None = None,
) -> np.ndarray:
    """Symmetric (N, N) OKS matrix between N predictions ``kpts`` (N, K, 2|3) with areas (N,); see :func:`oks_iou`."""
    k = np.asarray(kpts, dtype=np.float64)
    ar = np.asarray(areas, dtype=np.float64).reshape(-1)
    sig = _as_sigmas(sigmas)
    if k.ndim != 3 or k.shape[1] != sig.size or ar.size != k.shape[0]:
        raise ValueError(f"bad shapes: kpts {k.shape}, areas {ar.shape}, sigmas {sig.size}")
    var = (2.0 * sig) ** 2
    d2 = ((k[:, None, :, :2] - k[None, :, :, :2]) ** 2).sum(-1)  # (N, N, K)
    scale = (ar[:, None] + ar[None, :]) / 2.0 + _EPS  # (N, N)
    e = np.exp(-d2 / var / scale[..., None] / 2.0)
    if vis_thr is None:
        return e.mean(axis=-1)
    vis = k[..., 2] > vis_thr
    mask = vis[:, None, :] & vis[None, :, :]
    n = mask.sum(-1)
    return np.where(n > 0, (e * mask).sum(-1) / np.maximum(n, 1), 0.0)


def _visit_order(scores: np.ndarray) -> np.ndarray:
    """Per row of ``scores`` (G, M): the indices by decreasing score, ties in MMPose's order.

    MMPose's ``oks_nms`` visits ``scores.argsort()[::-1]`` (numpy's default sort, reversed) and the results keep
    that order. numpy's default sort is not stable (SIMD sorting networks on AVX-512), so the tie order is
    whatever that call gives; computing it with the same call on float64 scores gives the same order wherever
    numpy's sort gives the same permutation (numpy 1.26 and 2.4 agree on AVX-512 for up to 64 instances per
    image; with at most 3 instances, and in any plain insertion sort, equal scores come out in reverse input
    order). Sorting each row alone or all rows in one call is the same sort per row."""
    return np.argsort(scores, axis=1)[:, ::-1]


def _batched_oks(kpts: np.ndarray, areas: np.ndarray, var: np.ndarray, vis_thr: float | None) -> np.ndarray:
    """OKS (G, M, M) between the M predictions of each of G images (kpts (G, M, K, 3), areas (G, M)), with the
    operations of :func:`pairwise_oks` in the same order (identical values)."""
    dx = kpts[:, :, None, :, 0] - kpts[:, None, :, :, 0]  # (G, M, M, K)
    dy = kpts[:, :, None, :, 1] - kpts[:, None, :, :, 1]
    d2 = dx * dx + dy * dy  # the same sum as pairwise_oks' ((a - b) ** 2).sum(-1) over (x, y)
    scale = (areas[:, :, None] + areas[:, None, :]) / 2.0 + _EPS  # (G, M, M)
    e = np.exp(-d2 / var / scale[..., None] / 2.0)
    if vis_thr is None:
        return e.mean(axis=-1)
    vis = kpts[..., 2] > vis_thr
    mask = vis[:, :, None, :] & vis[:, None, :, :]
    n = mask.sum(-1)
    return np.where(n > 0, (e * mask).sum(-1) / np.maximum(n, 1), 0.0)


#: Bytes of one (G, M, M, K) float64 block of :func:`nms_order` (images are processed in chunks below this).
NMS_BLOCK_BYTES = 16 * 2**20


def nms_order(
    image_ids: np.ndarray | Sequence[int],
    keypoints: np.ndarray,
    areas: np.ndarray | Sequence[float],
    scores: np.ndarray | Sequence[float],
    thr: float | None = 0.9,
    sigmas: np.ndarray | Sequence[float] | None = None,
    vis_thr: float | None = None,
) -> np.ndarray:
    """Per-image greedy OKS-NMS of N predictions, vectorised over images; the kept indices in MMPose's order.

    The order is ``CocoMetric``'s results file: images in order of first appearance; within an image the kept
    predictions in the order NMS visits them (decreasing score, ties as :func:`_visit_order`). A prediction is
    suppressed when its OKS with an already kept one of its image, rounded to float32 as MMPose's ``oks_iou``
    returns it, is ``> float32(thr)``. ``thr=None``: no NMS, every prediction in input order within its image.

    Images with the same number M of predictions are processed together: one (G, M, M) OKS block per chunk and M
    vectorised greedy steps, instead of a Python loop over predictions.

    Args:
        image_ids: (N,) image id of each prediction.
        keypoints: (N, K, 3) x, y, score.
        areas: (N,) areas (the OKS scale).
        scores: (N,) instance scores.
        thr: OKS suppression threshold, or None for no NMS.
        sigmas: per-keypoint OKS sigmas (K,).
        vis_thr: optional keypoint-score threshold, see :func:`oks_iou`.

    Returns:
        int64 indices into the N predictions.
    """
    ids = np.asarray(image_ids).reshape(-1)
    n = ids.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    kpts = np.asarray(keypoints, dtype=np.float64)
    ar = np.asarray(areas, dtype=np.float64).reshape(-1)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if kpts.ndim != 3 or kpts.shape[0] != n or kpts.shape[2] < 2 or ar.size != n or sc.size != n:
        raise ValueError(f"bad shapes: image_ids ({n},), keypoints {kpts.shape}, areas {ar.shape}, "
                         f"scores {sc.shape}")
    if thr is not None and sigmas is None:
        raise ValueError("OKS-NMS needs OKS sigmas")
    _, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
    appearance = np.argsort(first, kind="stable")  # unique image slots in order of first appearance
    slot_of_unique = np.empty_like(appearance)
    slot_of_unique[appearance] = np.arange(appearance.size)
    slot = slot_of_unique[inverse.reshape(-1)]  # (N,) appearance slot of each prediction's image
    grouped = np.argsort(slot, kind="stable")  # predictions by image slot, input order within each image
    sizes = counts[appearance]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if thr is None:
        return grouped.astype(np.int64)
    sig = _as_sigmas(sigmas)
    if kpts.shape[1] != sig.size:
        raise ValueError(f"keypoint count mismatch: keypoints {kpts.shape}, sigmas {sig.size}")
    if vis_thr is not None and kpts.shape[2] < 3:
        raise ValueError("vis_thr needs keypoint scores (keypoints (N, K, 3))")
    var = (2.0 * sig) ** 2
    thr32 = np.float32(thr)
    kept_slot: list[np.ndarray] = []
    kept_rank: list[np.ndarray] = []
    kept_index: list[np.ndarray] = []
    for m in np.unique(sizes):
        m = int(m)
        slots = np.flatnonzero(sizes == m)
        members = grouped[starts[slots][:, None] + np.arange(m)]  # (G, M) input order within each image
        visit = np.take_along_axis(members, _visit_order(sc[members]), axis=1)  # (G, M) in visiting order
        if m == 1:
            kept_slot.append(slots)
            kept_rank.append(np.zeros(slots.size, dtype=np.int64))
            kept_index.append(visit[:, 0])
            continue
        chunk = max(1, NMS_BLOCK_BYTES // (m * m * sig.size * 8))
        for lo in range(0, slots.size, chunk):
            v = visit[lo:lo + chunk]
            oks = _batched_oks(kpts[v], ar[v], var, vis_thr).astype(np.float32)
            over = oks > thr32  # (g, M, M): row t suppresses the later ones it overlaps
            alive = np.ones(v.shape, dtype=bool)
            keep = np.zeros(v.shape, dtype=bool)
            for t in range(m):
                keep[:, t] = alive[:, t]
                alive[:, t + 1:] &= ~(over[:, t, t + 1:] & keep[:, t, None])
            g_idx, rank = np.nonzero(keep)
            kept_slot.append(slots[lo:lo + chunk][g_idx])
            kept_rank.append(rank)
            kept_index.append(v[g_idx, rank])
    slot_all = np.concatenate(kept_slot)
    rank_all = np.concatenate(kept_rank)
    index_all = np.concatenate(kept_index)
    return index_all[np.lexsort((rank_all, slot_all))].astype(np.int64)


def oks_nms(
    preds: Sequence[Mapping[str, Any]],
    thr: float = 0.9,
    sigmas: np.ndarray | Sequence[float] | None = None,
    score_key: str = "score",
    vis_thr: float | None = None,
) -> list[int]:
    """Greedy OKS-NMS, run independently per ``image_id`` (:func:`nms_order` on records).

    Within each image, predictions are visited in decreasing ``preds[i][score_key]`` (ties as MMPose's
    ``oks_nms``, :func:`_visit_order`); a prediction is kept unless its OKS (:func:`pairwise_oks`) with an already
    kept one is ``> thr``.

    Args:
        preds: records with ``image_id``, ``keypoints`` (K, 2|3), ``area`` and ``score_key``.
        thr: suppression threshold on OKS.
        sigmas: per-keypoint OKS sigmas (K,).
        score_key: record key holding the instance score.
        vis_thr: optional keypoint-score threshold, see :func:`oks_iou`.

    Returns:
        Sorted indices (into ``preds``) of the kept predictions.
    """
    if sigmas is None:
        raise ValueError("oks_nms needs OKS sigmas")
    if not preds:
        return []
    kpts = np.stack([np.asarray(p["keypoints"], dtype=np.float64) for p in preds])
    order = nms_order([int(p["image_id"]) for p in preds], kpts, [float(p["area"]) for p in preds],
                      [float(p[score_key]) for p in preds], thr, sigmas, vis_thr)
    return sorted(int(i) for i in order)


# ---------------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------------
def _keypoint_names(spec: Any, num_keypoints: int) -> list[str]:
    """The spec's keypoint names when it has K of them, else ``kpt_<i>``."""
    names = getattr(spec, "keypoint_names", None)
    if names is not None and len(names) == num_keypoints:
        return [str(n) for n in names]
    return [f"kpt_{i}" for i in range(num_keypoints)]


def ensure_categories(gt: dict[str, Any], source: Any, keypoint_names: Sequence[str]) -> None:
    """Give a GT dict without ``categories`` (absent or empty) the person category (in place, INFO line);
    ``ValueError`` naming ``source`` when ``categories`` is not a list of objects with an ``id``."""
    cats = gt.get("categories")
    if cats is None or (isinstance(cats, list) and not cats):
        gt["categories"] = [{"id": 1, "name": "person", "supercategory": "person",
                             "keypoints": list(keypoint_names), "skeleton": []}]  # fmt: skip
        log.info("%s has no categories: using the person category (id 1, the spec's %d keypoint names)",
                 source, len(keypoint_names))
        return
    if not isinstance(cats, list):
        raise ValueError(f"{source}: 'categories' must be a list, got {type(cats).__name__}")  # noqa: TRY004
    for i, cat in enumerate(cats):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise ValueError(f"{source}: category #{i} is not an object with an 'id'")


def source_name(ann_file: str | os.PathLike[str] | Mapping[str, Any]) -> str | os.PathLike[str]:
    """How messages name a ground truth: its path, or ``<dict>`` for an in-memory dict."""
    return ann_file if not isinstance(ann_file, Mapping) else "<dict>"


def read_ground_truth(
    ann_file: str | os.PathLike[str] | Mapping[str, Any], spec: Any, num_keypoints: int
) -> dict[str, Any]:
    """The ground truth of a COCO-format evaluator, validated (module docstring: unique ids, ``area`` a finite
    number > 0 or derived from the bbox, errors naming the file) and with ``categories`` ensured (the person
    category named with ``spec``'s keypoint names when the file has none); a deep copy for an in-memory dict."""
    gt = load_coco_dict(ann_file, validate=True)
    ensure_categories(gt, source_name(ann_file), _keypoint_names(spec, num_keypoints))
    return gt


_FASTER_EVAL: Any = None


def _faster_eval_class() -> Any:
    """faster-coco-eval's ``COCOeval_faster`` with a ``computeOks`` that reduces each ground-truth person's
    (detections, keypoints) block in one call instead of one ``np.sum`` per detection (its Python loop over the
    detections dominates keypoint evaluation). Each row is summed by the same pairwise summation over the same
    contiguous values, so the OKS values are those of the loop (the backends' AP is compared to 1e-9 by
    ``python -m sar.bench eval`` and the tests)."""
    global _FASTER_EVAL
    if _FASTER_EVAL is not None:
        return _FASTER_EVAL
    from faster_coco_eval import COCOeval_faster

    class VectorOksEval(COCOeval_faster):  # type: ignore[misc, valid-type]
        def computeOks(self, imgId: int, catId: int) -> Any:
            p = self.params
            gts = self.gt_dataset.get(imgId, catId)
            dts = self.dt_dataset.get(imgId, catId)
            inds = np.argsort([-d["score"] for d in dts], kind="mergesort")
            dts = [dts[i] for i in inds][: p.maxDets[-1]]
            if len(gts) == 0 or len(dts) == 0:
                return []
            ious = np.zeros((len(dts), len(gts)))
            var = (np.asarray(p.kpt_oks_sigmas) * 2) ** 2
            det = np.asarray([d["keypoints"] for d in dts], dtype=np.float64)
            xd, yd = det[:, 0::3], det[:, 1::3]
            for j, gt in enumerate(gts):
                g = np.asarray(gt["keypoints"], dtype=np.float64)
                xg, yg, vg = g[0::3], g[1::3], g[2::3]
                visible = vg > 0
                bb = gt["bbox"]
                if np.count_nonzero(visible) > 0:
                    dx, dy = xd - xg, yd - yg
                else:  # distance to the doubled GT box, as COCOeval
                    z = np.zeros_like(xd)
                    dx = np.max((z, bb[0] - bb[2] - xd), axis=0) + np.max((z, xd - (bb[0] + bb[2] * 2)), axis=0)
                    dy = np.max((z, bb[1] - bb[3] - yd), axis=0) + np.max((z, yd - (bb[1] + bb[3] * 2)), axis=0)
                scale = gt["area"] if self.use_area else bb[3] * bb[2] * 0.53
                e = (dx**2 + dy**2) / var / (scale + np.spacing(1)) / 2
                if np.count_nonzero(visible) > 0:
                    e = e[:, visible]
                ious[:, j] = np.exp(-e).sum(axis=1) / e.shape[1]
            return ious

    _FASTER_EVAL = VectorOksEval
    return _FASTER_EVAL


# ---------------------------------------------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------------------------------------------
class CocoEvaluator(ResultsEvaluator):
    """Top-down COCO keypoint evaluation (rescoring, OKS-NMS, COCOeval) with results-json output.

    Args:
        ann_file: COCO keypoint ground truth, a path or an in-memory dict (deep-copied here).
        sigmas: OKS sigmas (K,), or an object with a ``.sigmas`` attribute such as ``KeypointSpec``.
        use_nms: apply per-image OKS-NMS before evaluation.
        nms_thr: OKS-NMS threshold.
        kpt_score_thr: keypoint-score threshold of ``score_mode="bbox_keypoint"``.
        score_mode: ``"bbox_keypoint"`` (default, see module docstring for the zero-score pitfall), ``"bbox"`` or
            ``"keypoint"``.
        backend: ``"pycocotools"`` (``COCOeval``) or ``"faster_coco_eval"`` (``COCOeval_faster``); both give the
            same numbers.
        category_id: category written into results; defaults to the first category of the ground truth (1 for
            COCO).
        results_only: only write the results json, no metrics (:meth:`evaluate` returns ``{}``): the test-dev
            mode. ``None`` (default): automatic, when the file has images but no annotations (an image-info json
            such as ``image_info_test-dev2017.json``).

    The ground truth is validated here, once (module docstring): unique ids, ``area`` a finite number > 0 and,
    where absent, derived from the bbox ``w * h``; the person category is added when ``categories`` is missing.

    Attributes:
        last_log: text captured from the COCO API during the last :meth:`evaluate`.
        last_results: the COCO results list evaluated by the last :meth:`evaluate`.
        last_nonfinite: how many prediction records the last :meth:`format_results` dropped as non-finite.
    """

    #: COCOeval flavour, extra ``COCOeval_faster`` arguments and the names of ``ev.stats`` (subclasses change them).
    IOU_TYPE = "keypoints"
    FASTER_KWARGS: Mapping[str, Any] = {}
    METRICS: tuple[str, ...] = METRIC_NAMES

    def __init__(
        self,
        ann_file: str | os.PathLike[str] | Mapping[str, Any],
        sigmas: Any,
        use_nms: bool = True,
        nms_thr: float = 0.9,
        kpt_score_thr: float = 0.2,
        score_mode: ScoreMode = "bbox_keypoint",
        backend: Backend = "pycocotools",
        category_id: int | None = None,
        results_only: bool | None = None,
    ) -> None:
        if score_mode not in SCORE_MODES:
            raise ValueError(f"unknown score_mode {score_mode!r}; expected one of {', '.join(SCORE_MODES)}")
        if backend not in ("pycocotools", "faster_coco_eval"):
            raise ValueError(f"unknown backend {backend!r}; expected 'pycocotools' or 'faster_coco_eval'")
        self.sigmas = _as_sigmas(sigmas)
        self.num_keypoints = int(self.sigmas.size)
        self.use_nms = use_nms
        self.nms_thr = float(nms_thr)
        self.kpt_score_thr = float(kpt_score_thr)
        self.score_mode: ScoreMode = score_mode
        self.backend: Backend = backend
        self.ann_source = source_name(ann_file)
        gt = read_ground_truth(ann_file, sigmas, self.num_keypoints)
        no_annotations = bool(gt.get("images")) and not gt.get("annotations")
        self.results_only = no_annotations if results_only is None else bool(results_only)
        if self.results_only:  # an image-info json: nothing to score, only the results are written
            gt.setdefault("annotations", [])
        for key in ("images", "annotations"):
            if key not in gt:
                raise ValueError(f"{self.ann_source}: COCO annotation file lacks '{key}'")
        for ann in gt["annotations"]:
            if "keypoints" in ann and len(ann["keypoints"]) != 3 * self.num_keypoints:
                raise ValueError(
                    f"{self.ann_source}: annotation {ann.get('id')} has {len(ann['keypoints']) // 3} keypoints, "
                    f"but {self.num_keypoints} sigmas were given"
                )
        self._gt_dict = gt
        self.image_ids = frozenset(int(img["id"]) for img in gt["images"])
        if category_id is None:
            category_id = int(min(gt["categories"], key=lambda c: c["id"])["id"]) if gt["categories"] else 1
        self.category_id = int(category_id)
        self.last_log = ""
        self.last_results: list[dict[str, Any]] = []
        self.last_nonfinite = 0
        self._coco_gt = self._load_gt()

    # -- ground truth --------------------------------------------------------------------------------------------
    def _load_gt(self) -> Any:
        buf = io.StringIO()
        with redirect_stdout(buf):
            if self.backend == "pycocotools":
                from pycocotools.coco import COCO

                coco = COCO()
                coco.dataset = self._gt_dict
                coco.createIndex()
            else:
                from faster_coco_eval import COCO as FastCOCO

                coco = FastCOCO(self._gt_dict)
        return coco

    # -- predictions -> COCO results -----------------------------------------------------------------------------
    def format_results(self, preds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rescore, (optionally) OKS-NMS and convert prediction records to the COCO results format.

        Returns a list of ``{"image_id", "category_id", "keypoints": flat [x, y, s] * K, "score"}`` in the order of
        MMPose ``CocoMetric``'s results file (:func:`nms_order`: images in order of first appearance; within an
        image the kept instances in NMS visiting order, ties as MMPose's; without NMS the input order, which is
        the dataset order, as MMPose's sort by instance id), so that COCOeval's stable sort by score breaks ties
        the same way. Records with a non-finite keypoint value, ``bbox_score`` or ``area`` are dropped (counted
        in :attr:`last_nonfinite`, with a WARNING).
        """
        k = self.num_keypoints
        n_in = len(preds)
        image_ids = np.fromiter((int(p["image_id"]) for p in preds), dtype=np.int64, count=n_in)
        bbox_scores = np.fromiter((float(p["bbox_score"]) for p in preds), dtype=np.float64, count=n_in)
        areas = np.fromiter((float(p["area"]) for p in preds), dtype=np.float64, count=n_in)
        try:  # one stacking call; on a ragged input, the per-record check below names the record
            kpts = np.asarray([p["keypoints"] for p in preds], dtype=np.float64) if n_in else np.zeros((0, k, 3))
            ok = kpts.shape == (n_in, k, 3)
        except ValueError:
            ok = False
        if not ok:
            for i, p in enumerate(preds):
                shape = np.shape(p["keypoints"])
                if shape != (k, 3):
                    raise ValueError(
                        f"prediction {i}: keypoints must have shape ({k}, 3) (x, y, score in image px), got {shape}"
                    )
        unknown = ~np.isin(image_ids, np.fromiter(self.image_ids, dtype=np.int64, count=len(self.image_ids)))
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise ValueError(f"prediction {i}: image_id {int(image_ids[i])} is not in {self.ann_source}")
        # NaN would pass every COCOeval threshold test: never scored, never written
        finite = np.isfinite(kpts).all(axis=(1, 2)) & np.isfinite(bbox_scores) & np.isfinite(areas)
        n_nonfinite = int(n_in - finite.sum())
        if n_nonfinite:
            image_ids, kpts, bbox_scores, areas = image_ids[finite], kpts[finite], bbox_scores[finite], areas[finite]
        scores = instance_scores(kpts[:, :, 2], bbox_scores, self.score_mode, self.kpt_score_thr)
        n_zero = 0
        if self.score_mode == "bbox_keypoint":
            n_zero = int((~(kpts[:, :, 2] > self.kpt_score_thr).any(axis=1)).sum())
        self.last_nonfinite = n_nonfinite
        if n_nonfinite:
            log.warning(
                "%d/%d predictions have non-finite keypoints, bbox_score or area: dropped (not evaluated, not "
                "written); reported as nonfinite_predictions",
                n_nonfinite,
                n_in,
            )
        if n_zero:
            log.warning(
                "%d/%d instances have no keypoint score > %.3g and get score 0 (score_mode='bbox_keypoint')",
                n_zero,
                len(scores),
                self.kpt_score_thr,
            )
        order = nms_order(image_ids, kpts, areas, scores, self.nms_thr if self.use_nms else None, self.sigmas)
        flat = kpts[order].reshape(order.size, 3 * k).tolist()
        return [
            {"image_id": image_id, "category_id": self.category_id, "keypoints": kp, "score": score}
            for image_id, kp, score in zip(image_ids[order].tolist(), flat, scores[order].tolist())
        ]

    # -- COCOeval ------------------------------------------------------------------------------------------------
    def _empty_results_coco(self) -> Any:
        """A results COCO object with no annotations (``loadRes`` of pycocotools cannot take an empty list)."""
        if self.backend == "pycocotools":
            from pycocotools.coco import COCO
        else:
            from faster_coco_eval import COCO
        dt = COCO()
        dt.dataset = {
            "images": list(self._gt_dict["images"]),
            "categories": copy.deepcopy(self._gt_dict["categories"]),
            "annotations": [],
        }
        dt.createIndex()
        return dt

    def _results_coco(self, results: Sequence[Mapping[str, Any]]) -> Any:
        """The faster-coco-eval results COCO object of ``loadRes``, built without its per-record Python loop: each
        record gets ``loadRes``'s ``id`` (1-based position), ``bbox`` and ``area`` (the keypoints' extent, the same
        float operations, so the same values), computed for all records at once."""
        from faster_coco_eval import COCO as FastCOCO

        if not results:
            return self._empty_results_coco()
        anns = [dict(r) for r in results]
        k = np.asarray([r["keypoints"] for r in results], dtype=np.float64).reshape(len(anns), -1, 3)
        x0, x1 = k[:, :, 0].min(axis=1), k[:, :, 0].max(axis=1)
        y0, y1 = k[:, :, 1].min(axis=1), k[:, :, 1].max(axis=1)
        w, h = x1 - x0, y1 - y0
        for i, (ann, area, bx, by, bw, bh) in enumerate(
                zip(anns, (w * h).tolist(), x0.tolist(), y0.tolist(), w.tolist(), h.tolist())):
            ann["area"], ann["id"], ann["bbox"] = area, i + 1, [bx, by, bw, bh]
        dt = FastCOCO()
        dt.dataset = {"info": copy.deepcopy(self._gt_dict.get("info", {})), "images": list(self._gt_dict["images"]),
                      "categories": copy.deepcopy(self._gt_dict["categories"]), "annotations": anns}
        dt.createIndex()
        return dt

    def compute_stats(self, results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Run COCOeval (``IOU_TYPE``) on a COCO results list and return ``METRICS`` -> float.

        As in COCOeval, a value is -1 where the corresponding ground truth is empty (e.g. no medium persons).
        The faster-coco-eval backend skips ``loadRes``'s per-record loop (:meth:`_results_coco`) and computes the
        OKS of each image with one reduction per ground-truth person (:func:`_faster_eval_class`); both give the
        values of the loops they replace.
        """
        buf = io.StringIO()
        with redirect_stdout(buf):
            if self.backend == "pycocotools":
                from pycocotools.cocoeval import COCOeval

                anns = [dict(r) for r in results]  # loadRes adds area, bbox and id to the records
                coco_dt = self._coco_gt.loadRes(anns) if anns else self._empty_results_coco()
                ev = COCOeval(self._coco_gt, coco_dt, iouType=self.IOU_TYPE)
                ev.params.kpt_oks_sigmas = self.sigmas.copy()
            else:
                ev = _faster_eval_class()(
                    self._coco_gt,
                    self._results_coco(results),
                    iouType=self.IOU_TYPE,
                    kpt_oks_sigmas=self.sigmas.copy(),
                    **self.FASTER_KWARGS,
                    print_function=lambda *args, **_: print(*args, file=buf),
                )
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        self.last_log = buf.getvalue()
        stats = np.asarray(ev.stats, dtype=np.float64)
        return {name: float(stats[i]) for i, name in enumerate(self.METRICS)}

    @property
    def ground_truth(self) -> Mapping[str, Any]:
        """The validated ground truth dict (areas filled in), as the evaluation reads it. Do not modify."""
        return self._gt_dict

    def score(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """:meth:`compute_stats` of the results: ``{"AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75",
        "ARM", "ARL"}`` (``METRICS``) as floats in [0, 1] (-1 where the ground truth has no instance of that area
        range). An empty list gives AP = AR = 0."""
        return self.compute_stats(results)


# ---------------------------------------------------------------------------------------------------------------
# CrowdPose
# ---------------------------------------------------------------------------------------------------------------
#: Metric names of :class:`CrowdPoseEvaluator`, in the order of faster-coco-eval's ``keypoints_crowd`` stats.
CROWD_METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard",
)  # fmt: skip


class CrowdPoseEvaluator(CocoEvaluator):
    """CrowdPose keypoint AP: :class:`CocoEvaluator`'s rescoring / OKS-NMS / results json, scored with
    faster-coco-eval's crowd protocol (``iouType="keypoints_crowd"``, ``use_area=False``).

    As the official CrowdPose tools: the GT has no ``area``, so the OKS scale is ``0.53 * w * h`` of the GT box
    (the ``area`` the constructor derives from the bbox, ``w * h``, only meets the single area range ``all``);
    there are no area ranges; AP_easy / AP_medium / AP_hard are the mean precision (maxDets 20) over the images
    with ``crowdIndex < 0.2`` / ``< 0.8`` / ``>= 0.8``, rounded to 4 decimals by faster-coco-eval, and ``-1``
    for a split with no image. Always uses the ``faster_coco_eval`` backend (pycocotools has no crowd mode).
    Arguments are those of :class:`CocoEvaluator` (without ``backend``).
    """

    IOU_TYPE = "keypoints_crowd"
    FASTER_KWARGS: Mapping[str, Any] = {"use_area": False}
    METRICS = CROWD_METRIC_NAMES

    def __init__(
        self, ann_file: str | os.PathLike[str] | Mapping[str, Any], sigmas: Any, **kwargs: Any
    ) -> None:
        if kwargs.pop("backend", "faster_coco_eval") != "faster_coco_eval":
            raise ValueError("CrowdPoseEvaluator needs backend='faster_coco_eval'")
        super().__init__(ann_file, sigmas, backend="faster_coco_eval", **kwargs)
        missing = [img.get("id") for img in self._gt_dict["images"] if "crowdIndex" not in img]
        if missing:
            raise ValueError(
                f"{self.ann_source}: images {missing[:5]} have no 'crowdIndex' (not a CrowdPose file)"
            )


# ---------------------------------------------------------------------------------------------------------------
# COCO-WholeBody
# ---------------------------------------------------------------------------------------------------------------
#: The GT fields of COCO-WholeBody, concatenated in this order into the 133 keypoints.
WHOLEBODY_FIELDS: tuple[str, ...] = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")


class WholeBodyEvaluator(ResultsEvaluator):
    """COCO-WholeBody AP/AR per part and for the whole body, the way the official evaluation scores them.

    Ground truth: an official COCO-WholeBody json (``keypoints`` 17 + ``foot_kpts`` 6 + ``face_kpts`` 68 +
    ``lefthand_kpts`` 21 + ``righthand_kpts`` 21). Predictions: :class:`CocoEvaluator` records with 133 keypoints.

    1. Rescoring and OKS-NMS are done **once** on all 133 keypoints (133 sigmas), as MMPose's whole-body metric.
    2. For each part of ``spec.parts`` (``body``, ``foot``, ``face``, ``left_hand``, ``right_hand``) and for
       ``wholebody`` (all keypoints), the GT and the results are restricted to that part's keypoints (written as
       the ``keypoints`` field), the GT ``num_keypoints`` is recounted over the part (``v > 0``) so that persons
       without a labelled keypoint of the part are *ignored* (xtcocotools), the GT keeps its **full-body**
       ``area`` and ``bbox`` (the official OKS scale for every part), and pycocotools ``COCOeval`` runs with
       ``kpt_oks_sigmas = spec.sigmas[part]``. As in xtcocotools, a prediction with no keypoint score > 0 in the
       part is dropped for that part.
    3. Metrics: ``AP_<part>`` / ``AR_<part>`` (COCOeval ``stats[0]`` / ``stats[5]``: OKS 0.50:0.95, all areas,
       20 detections) for every part and ``wholebody``; ``AP`` / ``AR`` repeat the whole-body values. A part whose
       GT has no labelled keypoint at all gets ``-1`` (COCOeval's value for an empty ground truth).
       The full COCOeval stats of each part are kept in :attr:`last_stats`. ``nonfinite_predictions`` counts the
       records dropped for non-finite values (:class:`CocoEvaluator`).

    The ground truth gets :class:`CocoEvaluator`'s checks in the constructor (unique ids; ``area`` a finite number
    > 0, derived from the bbox ``w * h`` where absent; the person category when ``categories`` is missing).

    Args:
        ann_file: whole-body GT, a path or a dict.
        spec: the ``coco_wholebody`` :class:`~sar.data.spec.KeypointSpec` (``sigmas`` (133,), ``parts``), or any
            object with ``sigmas`` and ``parts``.
        options: :class:`CocoEvaluator`'s keyword arguments (``use_nms``, ``nms_thr``, ``kpt_score_thr``,
            ``score_mode``, ``backend``, ``category_id``, ``results_only``), with its defaults.
    """

    def __init__(self, ann_file: str | os.PathLike[str] | Mapping[str, Any], spec: Any, **options: Any) -> None:
        self.sigmas = _as_sigmas(spec)
        self.num_keypoints = int(self.sigmas.size)
        parts = {str(k): tuple(int(i) for i in v) for k, v in dict(getattr(spec, "parts", {}) or {}).items()}
        if "wholebody" in parts:
            raise ValueError("'wholebody' is reserved for the all-keypoint evaluation")
        parts["wholebody"] = tuple(range(self.num_keypoints))
        for name, ids in parts.items():
            if not ids or min(ids) < 0 or max(ids) >= self.num_keypoints:
                raise ValueError(f"part {name!r} has keypoint ids outside [0, {self.num_keypoints})")
        self.parts = parts
        self.ann_source = source_name(ann_file)
        full = self._full_gt(read_ground_truth(ann_file, spec, self.num_keypoints))  # CocoEvaluator's checks
        # rescoring + NMS on all keypoints; scoring per part by one CocoEvaluator each (no NMS there)
        self._full = CocoEvaluator(full, self.sigmas, **options)
        self.results_only = self._full.results_only
        self._part_evals = {
            name: CocoEvaluator(self._restrict_gt(full, ids), self.sigmas[list(ids)], use_nms=False,
                                backend=self._full.backend)
            for name, ids in parts.items()
        }
        self.last_results: list[dict[str, Any]] = []
        self.last_stats: dict[str, dict[str, float]] = {}

    def _full_gt(self, gt: Mapping[str, Any]) -> dict[str, Any]:
        """The GT with the 133 keypoints concatenated into ``keypoints`` (other fields kept)."""
        out = {k: v for k, v in gt.items() if k != "annotations"}
        anns = []
        for ann in gt.get("annotations", []):
            ann = dict(ann)
            flat: list[Any] = []
            for field in WHOLEBODY_FIELDS:
                values = ann.get(field)
                if not isinstance(values, list):
                    raise ValueError(  # noqa: TRY004
                        f"{self.ann_source}: annotation {ann.get('id')} lacks whole-body field {field!r}"
                    )
                flat.extend(values)
            if len(flat) != 3 * self.num_keypoints:
                raise ValueError(
                    f"{self.ann_source}: annotation {ann.get('id')} has {len(flat) // 3} keypoints, "
                    f"expected {self.num_keypoints}"
                )
            ann["keypoints"] = flat
            anns.append(ann)
        out["annotations"] = anns
        return out

    @staticmethod
    def _restrict_gt(full: Mapping[str, Any], ids: Sequence[int]) -> dict[str, Any]:
        out = {k: v for k, v in full.items() if k not in ("annotations", "categories")}
        idx = list(ids)
        anns = []
        for ann in full["annotations"]:
            kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[idx]
            part = {k: v for k, v in ann.items() if k not in WHOLEBODY_FIELDS}
            part["keypoints"] = kpts.reshape(-1).tolist()
            part["num_keypoints"] = int((kpts[:, 2] > 0).sum())
            anns.append(part)
        out["annotations"] = anns
        cats = []
        for cat in full.get("categories", []):
            cat = dict(cat)
            cat["keypoints"] = [f"kpt_{i}" for i in idx]
            cat["skeleton"] = []
            cats.append(cat)
        out["categories"] = cats
        return out

    def format_results(self, preds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Rescoring and OKS-NMS on all 133 keypoints (:meth:`CocoEvaluator.format_results`): the records written
        to the results json."""
        return self._full.format_results(preds)

    @property
    def last_nonfinite(self) -> int:  # type: ignore[override]
        return self._full.last_nonfinite

    def score(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """``AP_<part>``, ``AR_<part>``, ``AP``, ``AR`` (see the class docstring) of the results."""
        metrics: dict[str, float] = {}
        self.last_stats = {}
        for name, ids in self.parts.items():
            part_results = []
            for r in results:
                kpts = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[list(ids)]
                if not np.any(kpts[:, 2] > 0):
                    continue
                part_results.append({**r, "keypoints": kpts.reshape(-1).tolist()})
            stats = self._part_evals[name].compute_stats(part_results)
            self.last_stats[name] = stats
            metrics[f"AP_{name}"] = stats["AP"]
            metrics[f"AR_{name}"] = stats["AR"]
        metrics["AP"] = metrics["AP_wholebody"]
        metrics["AR"] = metrics["AR_wholebody"]
        return metrics


#: The top-down evaluators a dataset config names with its ``evaluator`` key (``mpii``: PCKh,
#: :class:`sar.evaluation.pck.MpiiEvaluator`, which takes the dataset's ``headbox_file``).
#: Evaluators by the names configs used before evaluators were built from ``_target_`` (old checkpoints).
EVALUATORS: dict[str, type] = {
    "coco": CocoEvaluator,
    "crowdpose": CrowdPoseEvaluator,
    "wholebody": WholeBodyEvaluator,
    "mpii": MpiiEvaluator,
}


def evaluator_name(cfg: str | Mapping[str, Any]) -> str:
    """A short name of an evaluator config: the old name itself, or the class name without ``Evaluator``
    (``sar.evaluation.coco_ap.CocoEvaluator`` -> ``coco``)."""
    if isinstance(cfg, str):
        return cfg
    return str(cfg["_target_"]).rsplit(".", 1)[-1].removesuffix("Evaluator").lower()


def build_evaluator(cfg: str | Mapping[str, Any], ann_file: str | os.PathLike[str] | Mapping[str, Any], spec: Any,
                    **kwargs: Any):
    """The evaluator of ``dataset.evaluator`` (its ``_target_`` and options; an old config's name is looked up in
    :data:`EVALUATORS`), called with the ground truth, the dataset's KeypointSpec and ``kwargs`` (the task's
    evaluation settings and the DataModule's dataset-specific options)."""
    if isinstance(cfg, str):
        if cfg not in EVALUATORS:
            raise ValueError(f"unknown evaluator {cfg!r} (known: {', '.join(EVALUATORS)})")
        return EVALUATORS[cfg](ann_file, spec, **kwargs)
    from sar.utils.instantiate import build

    return build(cfg, "dataset.evaluator", ann_file, spec, **kwargs)
