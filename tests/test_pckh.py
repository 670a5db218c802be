"""MPII PCKh (sar.evaluation.pck): hand-computed values, pelvis/thorax exclusion, official .mat path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from sar.evaluation.pck import MPII_JOINT_NAMES, pckh, pckh_from_mat

DIAGONALS = np.array([10.0, 20.0, 50.0])  # head sizes 0.6 * diag = 6, 12, 30 px


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 persons, GT on a grid; prediction offsets (px, along (0.6, 0.8)) chosen away from the thresholds.

    thresholds: @0.5 -> 3, 6, 15 px; @0.1 -> 0.6, 1.2, 3 px
    person 0: j0 +4 (wrong@.5), j1 +2 (ok@.5, wrong@.1), j6 pelvis +100 (wrong, excluded)
    person 1: j0 +5.9 (ok@.5, wrong@.1), j9 +1.0 (ok@.1), j7 thorax +50 (wrong, excluded), j15 unlabelled (+1000)
    person 2: j0 +20 (wrong@.5), j2 +2.9 (ok@.1), j3 +3.5 (ok@.5, wrong@.1)
    """
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 500, size=(3, 16, 2))
    offsets = np.zeros((3, 16))
    offsets[0, [0, 1, 6]] = [4.0, 2.0, 100.0]
    offsets[1, [0, 9, 7, 15]] = [5.9, 1.0, 50.0, 1000.0]
    offsets[2, [0, 2, 3]] = [20.0, 2.9, 3.5]
    pred = gt + offsets[..., None] * np.array([0.6, 0.8])
    visible = np.ones((3, 16))
    visible[1, 15] = 0
    return pred, gt, visible


def test_perfect_predictions() -> None:
    _, gt, visible = _case()
    out = pckh(gt, gt, visible, DIAGONALS)
    assert out["PCKh@0.5"] == 1.0 and out["PCKh@0.1"] == 1.0
    assert all(v == 1.0 for v in out["per_joint@0.5"].values())
    assert set(out["per_joint@0.1"]) == set(MPII_JOINT_NAMES)


def test_hand_computed_values() -> None:
    pred, gt, visible = _case()
    out = pckh(pred, gt, visible, DIAGONALS)
    # 14 included joints: 13 x 3 labelled + left_wrist 2 = 41
    assert out["PCKh@0.5"] == pytest.approx(39 / 41, abs=1e-15)  # wrong: p0 j0, p2 j0
    assert out["PCKh@0.1"] == pytest.approx(36 / 41, abs=1e-15)  # + p0 j1, p1 j0, p2 j3
    per5, per1 = out["per_joint@0.5"], out["per_joint@0.1"]
    assert per5["right_ankle"] == pytest.approx(1 / 3)
    assert per5["pelvis"] == pytest.approx(2 / 3) and per5["thorax"] == pytest.approx(2 / 3)
    assert per5["left_wrist"] == 1.0 and out["count"]["left_wrist"] == 2
    assert per1["right_ankle"] == 0.0
    assert per1["right_knee"] == pytest.approx(2 / 3) and per1["left_hip"] == pytest.approx(2 / 3)
    assert per1["right_hip"] == 1.0 and per1["head_top"] == 1.0
    assert out["groups@0.5"]["Ankle"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["groups@0.5"]["Head"] == 1.0
    assert out["groups@0.1"]["Hip"] == pytest.approx((1 + 2 / 3) / 2)


def test_pelvis_and_thorax_are_excluded_from_mean() -> None:
    pred, gt, visible = _case()
    fixed = pred.copy()
    fixed[:, [6, 7]] = gt[:, [6, 7]]  # correcting pelvis/thorax leaves the mean unchanged
    a, b = pckh(pred, gt, visible, DIAGONALS), pckh(fixed, gt, visible, DIAGONALS)
    assert a["PCKh@0.5"] == b["PCKh@0.5"] and a["PCKh@0.1"] == b["PCKh@0.1"]
    assert b["per_joint@0.5"]["pelvis"] == 1.0 and a["per_joint@0.5"]["pelvis"] < 1.0
    everything = pckh(pred, gt, visible, DIAGONALS, excluded=())
    assert everything["PCKh@0.5"] == pytest.approx(43 / 47)  # 39 + 4 correct of pelvis/thorax, over 41 + 6


def test_unlabelled_joint_gives_nan_and_bad_input_raises() -> None:
    pred, gt, visible = _case()
    visible[:, 15] = 0
    out = pckh(pred, gt, visible, DIAGONALS)
    assert math.isnan(out["per_joint@0.5"]["left_wrist"])
    assert out["PCKh@0.5"] == pytest.approx(39 / 39 - 2 / 39)
    with pytest.raises(ValueError, match="visible"):
        pckh(pred, gt, visible[:2], DIAGONALS)
    with pytest.raises(ValueError, match="head box"):
        pckh(pred, gt, visible, np.array([10.0, 0.0, 5.0]))


def test_from_official_mat_adds_one_to_zero_based_predictions(tmp_path: Path) -> None:
    pred, gt, visible = _case()
    corners = np.zeros((2, 2, 3))
    corners[1, 0] = DIAGONALS * 0.6  # box (0, 0)-(0.6 d, 0.8 d): diagonal d
    corners[1, 1] = DIAGONALS * 0.8
    path = tmp_path / "mpii_gt_val.mat"
    savemat(
        path,
        {
            "headboxes_src": corners,
            "jnt_missing": 1.0 - visible.T,
            "pos_gt_src": np.transpose(gt + 1.0, (1, 2, 0)),
        },
    )
    out = pckh_from_mat(pred, path)  # pred in 0-based frame, GT file 1-based
    assert out["PCKh@0.5"] == pytest.approx(39 / 41) and out["PCKh@0.1"] == pytest.approx(36 / 41)
    assert pckh_from_mat(gt + 1.0, path, pred_zero_based=False)["PCKh@0.1"] == 1.0
