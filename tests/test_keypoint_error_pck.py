"""Strict PCK (`sar.evaluation.keypoint_error.pck`) against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sar.evaluation.keypoint_error import keypoint_error, pck


def _gt() -> dict:
    # Two people with 3 keypoints each. Box sizes: max(100, 200) = 200 and max(40, 20) = 40.
    return {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 200],
             "keypoints": [10, 10, 2, 50, 50, 2, 90, 190, 0]},  # third keypoint unlabelled
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [300, 300, 40, 20],
             "keypoints": [310, 305, 2, 320, 310, 1, 330, 315, 2]},
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
             "keypoints": [0, 0, 0, 0, 0, 0, 0, 0, 0]},  # nothing labelled: skipped
        ],
    }


def _preds() -> list[dict]:
    return [
        # person 10, threshold 0.05 * 200 = 10 px: errors 10 (3-4-5 scaled: 6, 8) -> hit; 10.5 -> miss;
        # the unlabelled keypoint is ignored however far off it is.
        {"ann_id": 10, "keypoints": np.array([[16.0, 18.0, 0.9], [60.5, 50.0, 0.9], [900.0, 900.0, 0.1]])},
        # person 11, threshold 0.05 * 40 = 2 px: errors 0, 2.0 -> hit, 3 -> miss.
        {"ann_id": 11, "keypoints": np.array([[310.0, 305.0, 1.0], [322.0, 310.0, 1.0], [330.0, 318.0, 1.0]])},
        {"ann_id": 12, "keypoints": np.zeros((3, 3))},
        # a detector-box prediction (ann_id -1) is ignored.
        {"ann_id": -1, "keypoints": np.zeros((3, 3))},
    ]


def test_pck_hand_computed(tmp_path: Path) -> None:
    gt = _gt()
    # 5 labelled keypoints; hits: person 10 -> 1 (error 10 <= 10), person 11 -> 2 (0 and 2 <= 2).
    assert pck(_preds(), gt) == pytest.approx(3 / 5)
    # alpha = 0.1: thresholds 20 and 4 -> every labelled keypoint is a hit.
    assert pck(_preds(), gt, alpha=0.1) == pytest.approx(1.0)
    # alpha = 0.01: thresholds 2 and 0.4 -> only the exact keypoint of person 11.
    assert pck(_preds(), gt, alpha=0.01) == pytest.approx(1 / 5)
    # same numbers from a file, and the matching is the one keypoint_error uses.
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert pck(_preds(), path) == pytest.approx(3 / 5)
    mean, count = keypoint_error(_preds(), path, return_count=True)
    assert count == 5
    assert mean == pytest.approx((10.0 + 10.5 + 0.0 + 2.0 + 3.0) / 5)


def test_pck_edge_cases() -> None:
    gt = _gt()
    assert math.isnan(pck([], gt))
    with pytest.raises(ValueError, match="ann_id 99"):
        pck([{"ann_id": 99, "keypoints": np.zeros((3, 2))}], gt)
    no_box = {"annotations": [{"id": 1, "keypoints": [1, 1, 2]}]}
    with pytest.raises(ValueError, match="bbox"):
        pck([{"ann_id": 1, "keypoints": [[1.0, 1.0]]}], no_box)


def test_oks_matched_errors_pairs_people_by_oks_and_averages_pixel_errors():
    """Two people in image 1 (predictions given in the other order), one in image 2 with no prediction, a crowd
    region ignored: the Hungarian OKS matching pairs each prediction with its own person; the error is the
    hand-computed 5 px (a 3-4-5 shift) on A's labelled keypoints and 0 on B's."""
    from sar.evaluation.keypoint_error import area_range, oks_matched_errors

    sigmas = [0.05] * 4
    a = np.array([[10, 10, 2], [30, 10, 2], [10, 40, 2], [30, 40, 0]], dtype=float)  # 3 labelled
    b = np.array([[100, 10, 2], [120, 10, 2], [100, 40, 2], [120, 40, 2]], dtype=float)  # 4 labelled
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1}], "annotations": [
        {"id": 1, "image_id": 1, "keypoints": a.ravel().tolist(), "area": 600.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "keypoints": b.ravel().tolist(), "area": 600.0, "iscrowd": 0},
        {"id": 3, "image_id": 1, "keypoints": [0] * 12, "area": 50.0, "iscrowd": 1},
        {"id": 4, "image_id": 2, "keypoints": a.ravel().tolist(), "area": 600.0, "iscrowd": 0},
    ]}
    shifted = a.copy()
    shifted[:, :2] += [3.0, 4.0]
    shifted[3, :2] = np.nan  # an unlabelled keypoint's prediction does not count, finite or not
    preds = [{"image_id": 1, "keypoints": b.ravel().tolist()}, {"image_id": 1, "keypoints": shifted.ravel().tolist()}]
    out = oks_matched_errors(preds, gt, sigmas)
    assert out["matched"] == 2 and out["unmatched"] == 1
    assert out["kpt_error_px"] == pytest.approx(5.0 * 3 / 7)
    assert out["per_keypoint"] == pytest.approx([2.5, 2.5, 2.5, 0.0])
    assert out["median_per_keypoint"] == pytest.approx([2.5, 2.5, 2.5, 0.0])
    # per COCO area range: all three people are small (600 px^2); a 40 x 40 person (1600: medium) is its own
    assert out["by_area"]["small"]["matched"] == 2 and out["by_area"]["small"]["unmatched"] == 1
    assert out["by_area"]["small"]["median_per_keypoint"] == pytest.approx([2.5, 2.5, 2.5, 0.0])
    assert out["by_area"]["medium"]["matched"] == 0 and np.isnan(out["by_area"]["large"]["median_per_keypoint"]).all()
    gt["annotations"][1]["area"] = 1600.0  # B becomes medium: the split follows the GT's area
    split = oks_matched_errors(preds, gt, sigmas)["by_area"]
    assert split["small"]["median_per_keypoint"] == pytest.approx([5.0, 5.0, 5.0, float("nan")], nan_ok=True)
    assert split["medium"]["matched"] == 1 and split["medium"]["median_per_keypoint"] == pytest.approx([0.0] * 4)
    assert [area_range(a) for a in (0.0, 32.0**2, 32.0**2 + 1, 96.0**2, 1e9)] == [
        "small", "small", "medium", "medium", "large"]  # COCOeval's bounds, upper inclusive
    gt["annotations"][1]["area"] = 600.0
    # a prediction far from everyone (OKS ~0) matches nobody
    far = {"image_id": 2, "keypoints": (a + [5000.0, 5000.0, 0.0]).ravel().tolist()}
    assert oks_matched_errors([far], gt, sigmas)["unmatched"] == 3
    with pytest.raises(ValueError, match="has 3 keypoints, expected 4"):
        oks_matched_errors([{"image_id": 1, "keypoints": [0.0] * 9}], gt, sigmas)
