"""CrowdPose AP (faster-coco-eval keypoints_crowd) and COCO-WholeBody per-part AP, on the real shared samples."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_coco_eval import COCO as FastCOCO
from faster_coco_eval import COCOeval_faster

from coco_reference import hand_results, pycocotools_stats
from sar.data.spec import load_spec
from sar.evaluation.coco_ap import (
    CROWD_METRIC_NAMES,
    WHOLEBODY_FIELDS,
    CrowdPoseEvaluator,
    WholeBodyEvaluator,
)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())


def _predictions(anns: list[dict[str, Any]], kpts_of: Any, perturb: bool) -> list[dict[str, Any]]:
    """One prediction per GT person with a labelled keypoint. Unlabelled keypoints are put at the box centre.
    ``perturb``: keypoint k of person i moves by c_i (cos k, sin k), c_i = 0.04 (1 + i % 3) sqrt(w h); keypoint
    scores 0.3 + 0.1 (i % 5); bbox score 0.9."""
    preds = []
    persons = [a for a in anns if (kpts_of(a)[:, 2] > 0).any()]
    for i, ann in enumerate(persons):
        kpts = kpts_of(ann).copy()
        x, y, w, h = ann["bbox"]
        kpts[kpts[:, 2] == 0, :2] = [x + w / 2, y + h / 2]
        kpts[:, 2] = 1.0
        bbox_score = 1.0
        if perturb:
            k = np.arange(kpts.shape[0])
            c = 0.04 * (1 + i % 3) * math.sqrt(w * h)
            kpts[:, 0] += c * np.cos(k)
            kpts[:, 1] += c * np.sin(k)
            kpts[:, 2] = 0.3 + 0.1 * (i % 5)
            bbox_score = 0.9
        preds.append(
            {"image_id": ann["image_id"], "ann_id": ann["id"], "keypoints": kpts, "bbox_score": bbox_score,
             "area": float(w * h)}
        )  # fmt: skip
    return preds


# --------------------------------------------------------------------------------------------------------------
# CrowdPose
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crowd_file(shared_data: Path) -> Path:
    return shared_data / "crowdpose" / "test_crowdpose.json"


def _crowd_kpts(ann: dict[str, Any]) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)


def test_crowdpose_perfect(crowd_file: Path) -> None:
    gt = _load(crowd_file)
    ev = CrowdPoseEvaluator(crowd_file, load_spec("crowdpose"))
    preds = _predictions(gt["annotations"], _crowd_kpts, perturb=False)
    assert len(preds) == 4
    metrics = ev.evaluate(preds)
    assert list(metrics) == [*CROWD_METRIC_NAMES, "nonfinite_predictions"]
    for name in ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_medium"):
        assert metrics[name] == pytest.approx(1.0, abs=1e-9), name
    # both sample images have crowdIndex 0.33 / 0.39: easy (< 0.2) and hard (>= 0.8) are empty
    assert metrics["AP_easy"] == -1.0 and metrics["AP_hard"] == -1.0


def test_crowdpose_perturbed_matches_direct_faster_coco_eval(crowd_file: Path) -> None:
    gt = _load(crowd_file)
    spec = load_spec("crowdpose")
    preds = _predictions(gt["annotations"], _crowd_kpts, perturb=True)
    metrics = CrowdPoseEvaluator(crowd_file, spec, use_nms=False).evaluate(preds)
    results = hand_results(preds)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = FastCOCO(str(crowd_file))
        ref = COCOeval_faster(
            coco, coco.loadRes(results), iouType="keypoints_crowd", kpt_oks_sigmas=np.asarray(spec.sigmas),
            use_area=False, print_function=lambda *a, **k: None,
        )  # fmt: skip
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    assert [metrics[n] for n in CROWD_METRIC_NAMES] == pytest.approx([float(v) for v in ref.stats], abs=1e-12)
    assert 0.0 < metrics["AP"] < 1.0


def test_crowdpose_needs_crowd_index(shared_data: Path) -> None:
    with pytest.raises(ValueError, match="crowdIndex"):
        CrowdPoseEvaluator(shared_data / "coco" / "test_coco.json", load_spec("coco"))


# --------------------------------------------------------------------------------------------------------------
# COCO-WholeBody
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wb_file(shared_data: Path) -> Path:
    return shared_data / "coco" / "test_coco_wholebody.json"


def _wb_kpts(ann: dict[str, Any]) -> np.ndarray:
    flat: list[float] = []
    for field in WHOLEBODY_FIELDS:
        flat.extend(ann[field])
    return np.asarray(flat, dtype=np.float64).reshape(-1, 3)


def _direct_part(
    gt: dict[str, Any], preds: list[dict[str, Any]], ids: list[int], sigmas: np.ndarray
) -> list[float]:
    """Reference: GT restricted to ``ids`` (full-body area, num_keypoints recounted), pycocotools COCOeval."""
    part_gt = copy.deepcopy(gt)
    for ann in part_gt["annotations"]:
        kpts = _wb_kpts(ann)[ids]
        for field in WHOLEBODY_FIELDS:
            ann.pop(field)
        ann["keypoints"] = kpts.reshape(-1).tolist()
        ann["num_keypoints"] = int((kpts[:, 2] > 0).sum())
    for cat in part_gt["categories"]:
        cat["keypoints"] = [str(i) for i in ids]
        cat["skeleton"] = []
    return pycocotools_stats(part_gt, hand_results(preds, ids), sigmas[ids])


def test_wholebody_perfect(wb_file: Path) -> None:
    gt = _load(wb_file)
    spec = load_spec("coco_wholebody")
    ev = WholeBodyEvaluator(wb_file, spec)
    metrics = ev.evaluate(_predictions(gt["annotations"], _wb_kpts, perturb=False))
    for part in ("body", "foot", "face", "left_hand", "right_hand", "wholebody"):
        assert metrics[f"AP_{part}"] == pytest.approx(1.0, abs=1e-9), part
        assert metrics[f"AR_{part}"] == pytest.approx(1.0, abs=1e-9), part
    assert metrics["AP"] == metrics["AP_wholebody"]


def test_wholebody_perturbed_matches_direct_pycocotools(wb_file: Path, tmp_path: Path) -> None:
    gt = _load(wb_file)
    spec = load_spec("coco_wholebody")
    sigmas = np.asarray(spec.sigmas)
    preds = _predictions(gt["annotations"], _wb_kpts, perturb=True)
    ev = WholeBodyEvaluator(wb_file, spec, use_nms=False)
    metrics = ev.evaluate(preds, out_dir=tmp_path)
    assert len(json.loads((tmp_path / "results_keypoints.json").read_text())) == len(preds)
    parts = {**{k: list(v) for k, v in spec.parts.items()}, "wholebody": list(range(133))}
    assert set(parts) == {"body", "foot", "face", "left_hand", "right_hand", "wholebody"}
    for part, ids in parts.items():
        ref = _direct_part(gt, preds, ids, sigmas)
        assert metrics[f"AP_{part}"] == pytest.approx(ref[0], abs=1e-12), part
        assert metrics[f"AR_{part}"] == pytest.approx(ref[5], abs=1e-12), part
        assert list(ev.last_stats[part].values()) == pytest.approx(ref, abs=1e-12)
    assert 0.0 < metrics["AP_wholebody"] < 1.0
    assert len({round(metrics[f"AP_{p}"], 6) for p in parts}) > 1  # parts really differ


def test_wholebody_part_without_gt_gives_minus_one(wb_file: Path) -> None:
    gt = _load(wb_file)
    for ann in gt["annotations"]:
        ann["foot_kpts"] = [0] * 18
    spec = load_spec("coco_wholebody")
    metrics = WholeBodyEvaluator(gt, spec).evaluate(_predictions(gt["annotations"], _wb_kpts, perturb=False))
    assert metrics["AP_foot"] == -1.0 and metrics["AR_foot"] == -1.0
    assert metrics["AP_body"] == pytest.approx(1.0)
