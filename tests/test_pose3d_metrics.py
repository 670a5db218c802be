"""MPJPE / PA-MPJPE (sar.evaluation.mpjpe): hand-computed values, Procrustes recovers a known similarity exactly,
PA-MPJPE is invariant to rotation, scale and translation of the prediction, per-action means."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sar.evaluation.mpjpe import Pose3DEvaluator, back_project, mpjpe, pa_mpjpe, procrustes_align, project


def _pose(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 300, (17, 3))


def test_mpjpe_by_hand() -> None:
    gt = np.zeros((3, 3))
    gt[1] = [100, 0, 0]
    gt[2] = [0, 100, 0]
    pred = gt.copy()
    pred[1] += [0, 30, 40]  # 50 mm off
    pred += [5, 5, 5]       # a global shift: removed by root alignment
    assert mpjpe(pred, gt) == pytest.approx(50.0 / 3)  # the root's 0 counts in the mean


def test_procrustes_recovers_a_known_similarity_exactly() -> None:
    x = _pose(1)
    rot = Rotation.from_euler("xyz", [30, -50, 120], degrees=True).as_matrix()
    y = 1.7 * x @ rot.T + np.array([10.0, -200.0, 4000.0])
    np.testing.assert_allclose(procrustes_align(x, y), y, atol=1e-8)
    assert pa_mpjpe(x, y) == pytest.approx(0.0, abs=1e-8)


def test_pa_mpjpe_invariances_and_no_reflection() -> None:
    gt, pred = _pose(2), _pose(2) + np.random.default_rng(3).normal(0, 20, (17, 3))
    base = pa_mpjpe(pred, gt)
    rot = Rotation.from_euler("zyx", [77, 12, -33], degrees=True).as_matrix()
    assert pa_mpjpe(0.4 * pred @ rot.T + 1000.0, gt) == pytest.approx(base, rel=1e-9)
    aligned = procrustes_align(pred, gt)  # least squares: the summed squared error never grows (the mean error may)
    assert 0 < base and ((aligned - gt) ** 2).sum() <= ((pred - pred.mean(0) + gt.mean(0) - gt) ** 2).sum()
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection is not a similarity: not undone
    assert pa_mpjpe(mirrored, gt) > 1.0


def test_back_projection_inverts_projection() -> None:
    pts = _pose(4) + np.array([0, 0, 5000.0])
    f, c = [1145.0, 1143.8], [512.5, 515.4]
    np.testing.assert_allclose(back_project(project(pts, f, c), pts[:, 2], f, c), pts, atol=1e-9)


def test_evaluator_overall_and_per_action() -> None:
    gt = _pose(5)
    off = np.zeros_like(gt)
    off[3] = [0, 0, 170.0]
    nan = np.full_like(gt, np.nan)
    records = [{"pred": gt + off, "gt": gt, "action": "Walking"}, {"pred": gt, "gt": gt, "action": "Sitting"},
               {"pred": gt, "gt": gt, "action": "Sitting"}, {"pred": nan, "gt": gt, "action": "Sitting"}]
    m = Pose3DEvaluator(root=0).evaluate(records)
    assert m["MPJPE_Walking"] == pytest.approx(10.0) and m["MPJPE_Sitting"] == 0.0
    assert m["MPJPE"] == pytest.approx(10.0 / 3) and m["MPJPE_action_mean"] == pytest.approx(5.0)
    assert m["num_poses"] == 3 and m["nonfinite_predictions"] == 1 and m["PA_MPJPE_Sitting"] == pytest.approx(0.0, abs=1e-9) and m["PA_MPJPE_Walking"] > 0
    assert m["PA_MPJPE"] == pytest.approx(m["PA_MPJPE_Walking"] / 3)
    with pytest.raises(ValueError, match="no predictions"):
        Pose3DEvaluator().evaluate([])
