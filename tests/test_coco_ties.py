"""sar's COCO evaluation against MMPose's CocoMetric: tie order, RLE rescoring, vectorised OKS-NMS.

The reference numbers (tests/data/tie_heavy_mmpose.json) were computed with mmpose 1.3.2's ``CocoMetric`` on the
tie-heavy prediction set of tests/tie_heavy.py (real COCO sample, 228 predictions, 54 of them scored 0 by the
keypoint threshold); ``python tests/tie_heavy.py --peer-python <mmpose python>`` recomputes them. Before the
evaluator wrote results in MMPose's order, its AP on the ``bbox_keypoint/oks_nms`` case was 0.62709 against
MMPose's 0.62552.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from sar.evaluation import METRIC_NAMES, CocoEvaluator, coco_ap, instance_score
from sar.evaluation.coco_ap import instance_scores, nms_order, pairwise_oks
from tie_heavy import CASES, REFERENCE, tie_heavy_set

COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
     0.089, 0.089]
)  # fmt: skip


@pytest.fixture
def tie_set(coco_gt: dict) -> tuple[dict, list[dict]]:
    return tie_heavy_set(coco_gt)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
@pytest.mark.parametrize(("score_mode", "use_nms"), CASES)
def test_tie_heavy_file_scores_as_mmpose(tie_set: tuple[dict, list[dict]], backend: str, score_mode: str,
                                         use_nms: bool) -> None:
    gt, preds = tie_set
    ref = json.loads(REFERENCE.read_text())
    assert ref["n_predictions"] == len(preds) == 228
    expected = ref["cases"][f"{score_mode}/{'oks_nms' if use_nms else 'none'}"]
    ev = CocoEvaluator(gt, COCO_SIGMAS, use_nms=use_nms, score_mode=score_mode, backend=backend)
    metrics = ev.evaluate(preds)
    for name in METRIC_NAMES:
        assert metrics[name] == pytest.approx(expected[name], abs=1e-9), name


def test_equal_scores_are_written_in_mmpose_order(coco_file: Path, coco_gt: dict) -> None:
    """Three predictions of one image with equal scores: MMPose's oks_nms visits argsort()[::-1], i.e. the last
    first, and writes them in that order; without NMS they keep the dataset order (MMPose's sort by id)."""
    ann = next(a for a in coco_gt["annotations"] if a["num_keypoints"] > 0)
    k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    preds = []
    for j in range(3):
        kp = np.concatenate([k[:, :2] + 40.0 * j, np.full((17, 1), 0.1)], axis=1)  # all below 0.2: score 0
        preds.append({"image_id": ann["image_id"], "keypoints": kp, "bbox_score": 0.9, "area": 1000.0})
    ev = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=True)
    ev.evaluate(preds)
    assert [r["keypoints"][0] - k[0, 0] for r in ev.last_results] == pytest.approx([80.0, 40.0, 0.0])
    ev = CocoEvaluator(coco_file, COCO_SIGMAS, use_nms=False)
    ev.evaluate(preds)
    assert [r["keypoints"][0] - k[0, 0] for r in ev.last_results] == pytest.approx([0.0, 40.0, 80.0])


# --------------------------------------------------------------------------------------------------------------
# Rescoring
# --------------------------------------------------------------------------------------------------------------
def test_bbox_rle_score_hand_computed() -> None:
    # official RLE (rlepose/trainer.py validate): bbox score + mean + max of all keypoint scores, no threshold
    assert instance_score([0.9, 0.1, 0.5], 0.8, "bbox_rle") == pytest.approx(0.8 + 0.5 + 0.9, abs=1e-15)
    assert instance_score([0.05, 0.1, 0.15], 0.6, "bbox_rle", 0.2) == pytest.approx(0.6 + 0.1 + 0.15, abs=1e-15)
    got = instance_scores([[0.9, 0.1, 0.5], [0.2, 0.2, 0.8]], [0.8, 0.0], "bbox_rle")
    assert got == pytest.approx([2.2, 0.4 + 0.8], abs=1e-15)


def test_instance_scores_match_the_scalar_rule_and_sum_left_to_right() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((50, 17))
    b = rng.random(50)
    for mode in coco_ap.SCORE_MODES:
        vec = instance_scores(s, b, mode, 0.2)
        assert vec.tolist() == [instance_score(s[i], b[i], mode, 0.2) for i in range(50)]
    # bbox_keypoint: the valid scores summed left to right, as MMPose's loop (bit for bit)
    for i in range(50):
        total, n = 0.0, 0
        for v in s[i]:
            if v > 0.2:
                total += v
                n += 1
        assert instance_scores(s[i:i + 1], b[i:i + 1], "bbox_keypoint", 0.2)[0] == b[i] * (total / n)


def test_rescoring_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown score_mode"):
        instance_scores([[0.5]], [1.0], "rle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        instance_scores([[0.5, 0.4]], [1.0, 0.5], "bbox")
    with pytest.raises(ValueError, match="unknown score_mode"):
        CocoEvaluator({"images": [], "annotations": []}, COCO_SIGMAS, score_mode="rle")  # type: ignore[arg-type]


def test_rle_experiments_use_the_rle_rescoring() -> None:
    from sar.utils.config import compose_train_config

    for name in ("coco_r50_rle", "coco_hrnet_w32_rle", "ablation_r50_rle"):
        cfg = compose_train_config(f"experiment={name}")
        assert cfg.task.evaluation.score_mode == "bbox_rle", name
    assert compose_train_config("experiment=coco_r50_heatmap").task.evaluation.score_mode == "bbox_keypoint"


# --------------------------------------------------------------------------------------------------------------
# Vectorised OKS-NMS
# --------------------------------------------------------------------------------------------------------------
def _loop_nms(image_ids, kpts, areas, scores, thr, sigmas, mmpose_ties: bool) -> list[int]:
    """The per-prediction loop: sar's implementation before vectorisation (``mmpose_ties=False``: stable order,
    float64 threshold test, sorted indices), or the same loop with MMPose's visiting order and float32 test,
    returning indices in the written order (images by first appearance)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, im in enumerate(image_ids):
        groups[int(im)].append(i)
    keep: list[int] = []
    for idx in groups.values():
        oks = pairwise_oks(kpts[idx], areas[idx], sigmas)
        s = scores[idx]
        order = np.argsort(s)[::-1] if mmpose_ties else np.argsort(-s, kind="stable")
        suppressed = np.zeros(len(idx), dtype=bool)
        for j in order:
            if suppressed[j]:
                continue
            keep.append(idx[j])
            over = oks[j].astype(np.float32) > np.float32(thr) if mmpose_ties else oks[j] > thr
            suppressed |= over
    return keep if mmpose_ties else sorted(keep)


def _random_set(rng: np.random.Generator, n_images: int, max_per_image: int, tied: bool):
    sizes = rng.integers(1, max_per_image + 1, n_images)
    image_ids = rng.permutation(np.repeat(np.arange(n_images) * 7 + 3, sizes))
    n = image_ids.size
    centres = rng.random((n_images * 7 + 3, 17, 2)) * 200.0
    kpts = np.concatenate([centres[image_ids] + rng.normal(0, 1.0, (n, 17, 2)) * rng.choice([0.3, 1.0, 5.0, 30.0], (n, 1, 1)), rng.random((n, 17, 1))], axis=2)
    areas = rng.uniform(500.0, 5000.0, n)
    scores = rng.choice([0.0, 0.3, 0.5], n) if tied else rng.random(n)
    return image_ids, kpts, areas, scores


@pytest.mark.parametrize("thr", [0.5, 0.9])
def test_vectorised_nms_keeps_what_the_loop_keeps(thr: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco_ap, "NMS_BLOCK_BYTES", 20_000)  # several chunks per group size
    rng = np.random.default_rng(1)
    image_ids, kpts, areas, scores = _random_set(rng, 300, 12, tied=False)
    order = nms_order(image_ids, kpts, areas, scores, thr, COCO_SIGMAS)
    assert 0 < order.size < image_ids.size
    assert sorted(order.tolist()) == _loop_nms(image_ids, kpts, areas, scores, thr, COCO_SIGMAS, False)
    assert order.tolist() == _loop_nms(image_ids, kpts, areas, scores, thr, COCO_SIGMAS, True)


def test_vectorised_nms_ties_follow_mmpose_visiting_order() -> None:
    rng = np.random.default_rng(2)
    image_ids, kpts, areas, scores = _random_set(rng, 200, 70, tied=True)
    order = nms_order(image_ids, kpts, areas, scores, 0.9, COCO_SIGMAS)
    assert order.tolist() == _loop_nms(image_ids, kpts, areas, scores, 0.9, COCO_SIGMAS, True)
    # images in order of first appearance, input order within each without NMS
    plain = nms_order(image_ids, kpts, areas, scores, None)
    first = {int(im): i for i, im in reversed(list(enumerate(image_ids)))}
    assert plain.tolist() == sorted(range(image_ids.size), key=lambda i: (first[int(image_ids[i])], i))


def test_nms_order_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="bad shapes"):
        nms_order([1, 1], np.zeros((3, 17, 3)), [1.0, 1.0], [0.5, 0.5], 0.9, COCO_SIGMAS)
    with pytest.raises(ValueError, match="sigmas"):
        nms_order([1, 1], np.zeros((2, 17, 3)), [1.0, 1.0], [0.5, 0.5], 0.9, None)
    with pytest.raises(ValueError, match="keypoint count"):
        nms_order([1, 1], np.zeros((2, 5, 3)), [1.0, 1.0], [0.5, 0.5], 0.9, COCO_SIGMAS)
    assert nms_order([], np.zeros((0, 17, 3)), [], [], 0.9, COCO_SIGMAS).size == 0
