"""Reference COCO numbers computed without sar.evaluation: results lists written by hand, scored by pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def bbox_keypoint_score(kpts: np.ndarray, bbox_score: float, thr: float = 0.2) -> float:
    """MMPose's ``bbox_keypoint`` instance score: bbox score x mean of the keypoint scores above ``thr`` (0 if none)."""
    s = np.asarray(kpts, dtype=np.float64)[:, 2]
    return float(bbox_score) * (float(s[s > thr].mean()) if (s > thr).any() else 0.0)


def hand_results(preds: Sequence[dict[str, Any]], ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """COCO results (category 1) of prediction records, scored on all their keypoints, with the keypoints ``ids``
    (all when None)."""
    results = []
    for p in preds:
        kpts = np.asarray(p["keypoints"], dtype=np.float64)
        part = kpts if ids is None else kpts[list(ids)]
        results.append({"image_id": p["image_id"], "category_id": 1, "keypoints": part.reshape(-1).tolist(),
                        "score": bbox_keypoint_score(kpts, p["bbox_score"])})
    return results


def pycocotools_stats(gt: dict[str, Any], results: list[dict[str, Any]], sigmas: np.ndarray) -> list[float]:
    """``COCOeval(iouType="keypoints").stats`` of ``results`` against the GT dict ``gt`` (not modified)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]

