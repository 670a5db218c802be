"""Tests for sar.evaluation: COCO keypoint AP, OKS-NMS, rescoring, keypoint error and atomic result files.

Uses the real COCO keypoint sample in shared/data/coco/test_coco.json (4 images, 14 persons, 12 with keypoints).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from coco_reference import hand_results, pycocotools_stats
from sar.evaluation import (
    METRIC_NAMES,
    CocoEvaluator,
    instance_score,
    keypoint_error,
    oks_iou,
    oks_nms,
    pairwise_oks,
    write_json_atomic,
    write_metrics,
)

COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
     0.089, 0.089]
)  # fmt: skip


def _gt_keypoints(ann: dict[str, Any]) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)


def _gt_predictions(gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Every GT person with keypoints as a perfect prediction (keypoint score 1, bbox score 1)."""
    preds = []
    for ann in gt["annotations"]:
        if ann["num_keypoints"] > 0:
            kpts = _gt_keypoints(ann)
            kpts[:, 2] = 1.0
            preds.append(
                {"image_id": ann["image_id"], "ann_id": ann["id"], "keypoints": kpts, "bbox_score": 1.0,
                 "area": float(ann["area"])}
            )  # fmt: skip
    return preds


def _perturbed_predictions(gt: dict[str, Any]) -> list[dict[str, Any]]:
    """Deterministic perturbation: keypoint k of person i is moved by c_i * sqrt(area) * (cos k, sin k) with
    c_i = 0.03 * (1 + i % 4); keypoint scores 0.3 + 0.05 * (i % 7); bbox score 0.9; person index 3 dropped."""
    preds = []
    persons = [a for a in gt["annotations"] if a["num_keypoints"] > 0]
    for i, ann in enumerate(persons):
        if i == 3:
            continue
        kpts = _gt_keypoints(ann)
        k = np.arange(kpts.shape[0])
        c = 0.03 * (1 + i % 4) * math.sqrt(ann["area"])
        kpts[:, 0] += c * np.cos(k)
        kpts[:, 1] += c * np.sin(k)
        kpts[:, 2] = 0.3 + 0.05 * (i % 7)
        preds.append(
            {"image_id": ann["image_id"], "ann_id": ann["id"], "keypoints": kpts, "bbox_score": 0.9,
             "area": float(ann["area"])}
        )  # fmt: skip
    return preds


def _direct_pycocotools(gt: dict[str, Any], preds: list[dict[str, Any]], sigmas: np.ndarray) -> list[float]:
    """Reference: results list written by hand (bbox_keypoint score), then pycocotools COCO.loadRes + COCOeval."""
    return pycocotools_stats(gt, hand_results(preds), sigmas)


def _subset_keypoints(gt: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """The annotation dict restricted to keypoints ``keep`` (to exercise K != 17)."""
    out = copy.deepcopy(gt)
    for ann in out["annotations"]:
        kpts = _gt_keypoints(ann)[keep]
        ann["keypoints"] = kpts.reshape(-1).astype(int).tolist()
        ann["num_keypoints"] = int((kpts[:, 2] > 0).sum())
    for cat in out["categories"]:
        cat["keypoints"] = [cat["keypoints"][k] for k in keep]
        cat["skeleton"] = []
    return out


# --------------------------------------------------------------------------------------------------------------
# COCO AP
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_nms", [True, False])
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_ground_truth_gives_ap_one(coco_file: Path, coco_gt: dict, use_nms: bool, backend: str) -> None:
    ev = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=use_nms, backend=backend)
    preds = _gt_predictions(coco_gt)
    assert len(preds) == 12
    metrics = ev.evaluate(preds)
    assert set(metrics) == {*METRIC_NAMES, "nonfinite_predictions"}
    assert metrics["nonfinite_predictions"] == 0.0
    for name in METRIC_NAMES:
        assert isinstance(metrics[name], float)
        assert metrics[name] == pytest.approx(1.0, abs=1e-9), name
    assert len(ev.last_results) == 12  # NMS keeps distinct persons


@pytest.mark.parametrize("use_nms", [True, False])
def test_perturbed_matches_direct_pycocotools(coco_file: Path, coco_gt: dict, use_nms: bool) -> None:
    preds = _perturbed_predictions(coco_gt)
    expected = _direct_pycocotools(coco_gt, preds, COCO_SIGMAS)
    metrics = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=use_nms).evaluate(preds)
    assert [metrics[n] for n in METRIC_NAMES] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < metrics["AP"] < 1.0
    assert 0.0 < metrics["AR"] < 1.0


def test_faster_coco_eval_matches_pycocotools(coco_file: Path, coco_gt: dict) -> None:
    preds = _perturbed_predictions(coco_gt)
    ref = CocoEvaluator(coco_file, COCO_SIGMAS, backend="pycocotools").evaluate(preds)
    fast = CocoEvaluator(coco_file, COCO_SIGMAS, backend="faster_coco_eval").evaluate(preds)
    for name in METRIC_NAMES:
        assert fast[name] == pytest.approx(ref[name], abs=1e-6), name


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_any_number_of_keypoints(coco_gt: dict, backend: str) -> None:
    keep = [0, 5, 6, 11, 12, 15]
    gt = _subset_keypoints(coco_gt, keep)
    sigmas = COCO_SIGMAS[keep]
    gt_preds = _gt_predictions(gt)
    ev = CocoEvaluator(gt, sigmas, backend=backend)  # in-memory dict
    assert ev.evaluate(gt_preds)["AP"] == pytest.approx(1.0, abs=1e-9)
    preds = [
        {**p, "keypoints": p["keypoints"][keep]} for p in _perturbed_predictions(coco_gt)
    ]  # same persons as gt_preds minus one
    expected = _direct_pycocotools(gt, preds, sigmas)
    metrics = ev.evaluate(preds)
    assert [metrics[n] for n in METRIC_NAMES] == pytest.approx(expected, abs=1e-6)


def test_accepts_spec_like_sigmas_and_images_without_predictions(coco_file: Path, coco_gt: dict) -> None:
    spec = SimpleNamespace(sigmas=COCO_SIGMAS)
    # 1 of the 12 persons; the other three images get no prediction at all
    preds = [p for p in _gt_predictions(coco_gt) if p["image_id"] == 785]
    metrics = CocoEvaluator(coco_file, spec).evaluate(preds)
    assert metrics["AR"] == pytest.approx(1 / 12)
    assert 0.0 < metrics["AP"] < 1.0


def test_empty_predictions(coco_file: Path, tmp_path: Path) -> None:
    for backend in ("pycocotools", "faster_coco_eval"):
        metrics = CocoEvaluator(coco_file, COCO_SIGMAS, backend=backend).evaluate([], out_dir=tmp_path)
        assert metrics["AP"] == 0.0 and metrics["AR"] == 0.0
        assert json.loads((tmp_path / "results_keypoints.json").read_text()) == []


def test_invalid_predictions_raise(coco_file: Path, coco_gt: dict) -> None:
    ev = CocoEvaluator(coco_file, COCO_SIGMAS)
    pred = _gt_predictions(coco_gt)[0]
    with pytest.raises(ValueError, match="image_id"):
        ev.evaluate([{**pred, "image_id": 123456789}])
    with pytest.raises(ValueError, match="shape"):
        ev.evaluate([{**pred, "keypoints": pred["keypoints"][:, :2]}])
    with pytest.raises(ValueError, match="sigmas"):
        CocoEvaluator(coco_file, COCO_SIGMAS[:5])


def test_results_json_written_and_readable(coco_file: Path, coco_gt: dict, tmp_path: Path) -> None:
    preds = _perturbed_predictions(coco_gt)
    ev = CocoEvaluator(coco_file, COCO_SIGMAS)
    metrics = ev.evaluate(preds, out_dir=tmp_path / "eval", prefix="val")
    path = tmp_path / "eval" / "val_keypoints.json"
    results = json.loads(path.read_text())
    assert len(results) == len(preds)
    # written in MMPose's order (per image, by decreasing score): match each result to its prediction
    by_pose = {(p["image_id"], round(float(p["keypoints"][0, 0]), 6)): p for p in preds}
    assert len(by_pose) == len(preds)
    for r in results:
        p = by_pose[(r["image_id"], round(r["keypoints"][0], 6))]
        assert set(r) == {"image_id", "category_id", "keypoints", "score"}
        assert r["category_id"] == 1 and r["image_id"] == p["image_id"]
        assert len(r["keypoints"]) == 3 * 17
        assert np.allclose(np.reshape(r["keypoints"], (17, 3)), p["keypoints"])
        assert r["score"] == pytest.approx(0.9 * p["keypoints"][0, 2])
    assert sorted(x.name for x in path.parent.iterdir()) == ["val_keypoints.json"]  # no temp file left
    # Re-evaluating the written file directly with pycocotools gives the same numbers.
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_file))
        ce = COCOeval(coco, coco.loadRes(str(path)), "keypoints")
        ce.params.kpt_oks_sigmas = COCO_SIGMAS
        ce.evaluate()
        ce.accumulate()
        ce.summarize()
    assert [metrics[n] for n in METRIC_NAMES] == pytest.approx(list(ce.stats), abs=1e-12)

    out = write_metrics({"AP": metrics["AP"], "epoch": np.int64(3), "per_kpt": np.arange(2.0)}, tmp_path)
    assert out == tmp_path / "metrics.json"
    assert json.loads(out.read_text()) == {"AP": metrics["AP"], "epoch": 3, "per_kpt": [0.0, 1.0]}
    write_metrics({"AP": 0.5}, tmp_path)  # overwrite, no merge
    assert json.loads(out.read_text()) == {"AP": 0.5}


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = write_json_atomic({"a": 1}, tmp_path / "sub" / "x.json")
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


# --------------------------------------------------------------------------------------------------------------
# OKS and OKS-NMS
# --------------------------------------------------------------------------------------------------------------
def test_oks_iou_hand_computed() -> None:
    sigmas = np.array([0.5, 0.5])  # (2 sigma)^2 = 1
    a = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]])
    b = np.array([[3.0, 4.0, 1.0], [10.0, 0.0, 1.0]])
    # s^2 = (100 + 100) / 2 = 100; d^2 = 25 for keypoint 0, 0 for keypoint 1
    expected = (math.exp(-25 / (2 * 100 * 1.0)) + 1.0) / 2
    assert oks_iou(a, b, 100.0, 100.0, sigmas) == pytest.approx([expected], abs=1e-12)
    assert oks_iou(a, np.stack([a, b]), 100.0, [100.0, 100.0], sigmas) == pytest.approx([1.0, expected])
    # keypoint 1 of b below the visibility threshold: only keypoint 0 counts
    b_low = b.copy()
    b_low[1, 2] = 0.1
    assert oks_iou(a, b_low, 100.0, 100.0, sigmas, vis_thr=0.5) == pytest.approx([math.exp(-0.125)])
    mat = pairwise_oks(np.stack([a, b]), [100.0, 100.0], sigmas)
    assert mat == pytest.approx(np.array([[1.0, expected], [expected, 1.0]]))


def test_oks_nms() -> None:
    kpts = np.array([[10.0, 10.0, 0.9], [20.0, 30.0, 0.8], [15.0, 40.0, 0.7]])
    far = kpts.copy()
    far[:, :2] += 500.0
    sigmas = COCO_SIGMAS[:3]

    def rec(image_id: int, k: np.ndarray, score: float) -> dict[str, Any]:
        return {"image_id": image_id, "keypoints": k, "area": 400.0, "score": score}

    preds = [rec(1, kpts, 0.5), rec(1, kpts.copy(), 0.7), rec(1, far, 0.6), rec(2, kpts.copy(), 0.1)]
    # identical pair on image 1: the higher score (index 1) is kept; the distant one and image 2 stay
    assert oks_nms(preds, 0.9, sigmas) == [1, 2, 3]
    assert oks_nms(preds[:1], 0.9, sigmas) == [0]
    assert oks_nms([], 0.9, sigmas) == []


def test_nms_removes_duplicates_in_evaluator(coco_file: Path, coco_gt: dict) -> None:
    preds = _gt_predictions(coco_gt)
    dup = {**preds[0], "bbox_score": 0.5}
    ev = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=True)
    assert ev.evaluate([*preds, dup])["AP"] == pytest.approx(1.0, abs=1e-9)
    assert len(ev.last_results) == len(preds)
    ev_no = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=False)
    ev_no.evaluate([*preds, dup])
    assert len(ev_no.last_results) == len(preds) + 1


# --------------------------------------------------------------------------------------------------------------
# Rescoring
# --------------------------------------------------------------------------------------------------------------
def test_instance_score_modes() -> None:
    s = [0.9, 0.1, 0.5]
    assert instance_score(s, 0.8, "bbox_keypoint", 0.2) == pytest.approx(0.8 * 0.7)
    assert instance_score(s, 0.8, "bbox") == 0.8
    assert instance_score(s, 0.8, "keypoint") == pytest.approx(0.5)
    # SAR pitfall: no keypoint score above the threshold -> instance score 0 (documented behaviour)
    assert instance_score([0.2, 0.1, 0.15], 0.8, "bbox_keypoint", 0.2) == 0.0
    with pytest.raises(ValueError):
        instance_score(s, 0.8, "nope")  # type: ignore[arg-type]


def test_zero_scored_instances_are_kept_and_logged(
    coco_file: Path, coco_gt: dict, caplog: pytest.LogCaptureFixture
) -> None:
    preds = _gt_predictions(coco_gt)
    low = [
        {**p, "keypoints": np.concatenate([p["keypoints"][:, :2], np.full((17, 1), 0.1)], 1)} for p in preds
    ]
    ev = CocoEvaluator(coco_file, COCO_SIGMAS)
    with caplog.at_level("WARNING", logger="sar.evaluation.coco_ap"):
        ev.evaluate(low)
    assert all(r["score"] == 0.0 for r in ev.last_results)
    assert len(ev.last_results) == len(preds)
    assert "score 0" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# Keypoint error
# --------------------------------------------------------------------------------------------------------------
def test_keypoint_error(coco_file: Path, coco_gt: dict) -> None:
    preds = _gt_predictions(coco_gt)
    assert keypoint_error(preds, coco_file) == 0.0
    mean, count = keypoint_error(preds, coco_gt, return_count=True)
    assert mean == 0.0 and count == 181
    shifted = []
    for p in preds:
        k = p["keypoints"].copy()
        k[:, 0] += 3.0
        k[:, 1] += 4.0
        shifted.append({**p, "keypoints": k})
    detector_box = {**preds[0], "ann_id": -1, "keypoints": preds[0]["keypoints"] + 100.0}  # ignored
    assert keypoint_error([*shifted, detector_box], coco_file) == pytest.approx(5.0, abs=1e-12)
    with pytest.raises(ValueError, match="ann_id"):
        keypoint_error([{**preds[0], "ann_id": 987654321}], coco_file)
    assert math.isnan(keypoint_error([], coco_file))
