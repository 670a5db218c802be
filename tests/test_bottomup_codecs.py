"""Bottom-up codecs (sar.codecs.bottomup): fixed-shape encoding, round trips through oracle outputs, flip merge,
and the oracle AP on the real COCO / CrowdPose / OCHuman samples (issue 12 section 3).

The oracle turns encoded targets into the outputs a perfect network would give (each codec's ``oracle_outputs``,
sar.codecs.bottomup.oracle).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sar.codecs.bottomup import AECodec, DEKRCodec, SARAECodec, SARCenterCodec
from sar.codecs.bottomup.center import refine_to_peaks
from sar.codecs.bottomup.common import flip_back_maps, flip_back_offsets, pose_nms
from sar.codecs.sar import sar_grid
from sar.data.spec import load_spec
from sar.evaluation.coco_ap import CocoEvaluator


# ---------------------------------------------------------------------------------------------------------------
# Oracle outputs (the codecs' oracle_outputs, sar.codecs.bottomup.oracle)
# ---------------------------------------------------------------------------------------------------------------
def _batch(targets: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v)[None] for k, v in targets.items()}


def make_codec(name: str, input_size: tuple[int, int], sigmas: np.ndarray | None = None, **kw):
    hm = (input_size[0] // 4, input_size[1] // 4)
    cls = {"sar_center": SARCenterCodec, "dekr": DEKRCodec, "sar_ae": SARAECodec, "ae": AECodec}[name]
    codec = cls(input_size, hm, sigmas=None if sigmas is None else list(sigmas), **kw)
    return codec, codec.oracle_outputs


HEADS = ("sar_center", "dekr", "sar_ae", "ae")


# ---------------------------------------------------------------------------------------------------------------
# Hand-made PersonSets
# ---------------------------------------------------------------------------------------------------------------
def person_set() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four people, K = 3, input 128x96: two overlapping, one small, one with a hidden keypoint."""
    kp = np.array([
        [[20.3, 15.2], [30.6, 40.1], [25.0, 70.4]],     # tall
        [[34.1, 22.7], [47.9, 44.2], [41.2, 75.3]],     # overlaps the first
        [[100.2, 60.5], [104.7, 63.1], [101.9, 67.8]],  # small
        [[70.0, 20.0], [80.5, 30.5], [90.0, 50.0]],     # keypoint 1 hidden
    ])
    vis = np.ones((4, 3))
    vis[3, 1] = 0
    areas = np.array([1500.0, 1400.0, 40.0, 900.0])
    return kp, vis, areas


SIG3 = np.array([0.08, 0.08, 0.08])


def _match(poses: np.ndarray, kp: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """For each GT person, the max keypoint error (px, over visible keypoints) of its best decoded pose."""
    out = []
    for g in range(kp.shape[0]):
        err = np.abs(poses[:, :, :2] - kp[g][None]).max(-1)  # (M,K)
        err = np.where(vis[g][None] > 0, err, 0).max(-1)
        out.append(err.min() if err.size else np.inf)
    return np.asarray(out)


@pytest.mark.parametrize("name", HEADS)
def test_encode_shapes_fixed_and_padding(name: str) -> None:
    kp, vis, areas = person_set()
    codec, _ = make_codec(name, (128, 96), SIG3, max_people=3)
    full = codec.encode(kp, vis, areas, np.ones((24, 32)))
    empty = codec.encode(np.zeros((0, 3, 2)), np.zeros((0, 3)), np.zeros(0), np.ones((24, 32)))
    assert {k: v.shape for k, v in full.items()} == {k: v.shape for k, v in empty.items()}
    assert int(full["people_dropped"]) == 1 and int(empty["people_dropped"]) == 0
    np.testing.assert_array_equal(full["person_valid"], [1, 1, 1])
    assert empty["person_valid"].sum() == 0 and empty["heatmap"].max() == 0
    np.testing.assert_allclose(full["keypoints_norm"][0, 1], [30.6 / 128, 40.1 / 96], rtol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        codec.encode(kp, vis, areas, np.ones((32, 24)))


def test_encode_values_centre_and_dekr_offsets() -> None:
    kp, vis, areas = person_set()
    codec = DEKRCodec((128, 96), (32, 24), sigmas=list(SIG3))
    t = codec.encode(kp, vis, areas, np.ones((24, 32)))
    # person 3: centre = mean of keypoints 0 and 2 = (80, 35) px -> cell (20, 9) (floor(8.75 + 0.5) = 9)
    assert int(t["center_cells"][3]) == 9 * 32 + 20
    # offsets at its centre cell: cell - keypoint / 4; keypoint 1 hidden -> weight 0
    np.testing.assert_allclose(t["offsets"][0, :, 9, 20], [20 - 70 / 4, 9 - 20 / 4], rtol=1e-6)
    np.testing.assert_allclose(t["offset_weight"][:, 9, 20], [1 / math.sqrt(900 / 16), 0, 1 / math.sqrt(900 / 16)],
                               rtol=1e-6)
    assert t["heatmap"][3, 9, 20] == 1.0 and t["heatmap_weight"][0, 23, 31] == pytest.approx(0.1)
    sc = SARCenterCodec((128, 96), (32, 24)).encode(kp, vis, areas)
    assert sc["scale"][0] == pytest.approx(math.sqrt(1500 / (128 * 96)))
    np.testing.assert_array_equal(sc["region"][3], [17, 4, 24, 14])  # cells (18,5), (23,13) grown by 1


@pytest.mark.parametrize("name", HEADS)
def test_round_trip_hand_made(name: str) -> None:
    """Encode -> oracle outputs -> decode recovers every person (ae: within stride / 2 per axis)."""
    kp, vis, areas = person_set()
    codec, oracle = make_codec(name, (128, 96), SIG3)
    t = _batch(codec.encode(kp, vis, areas, np.ones((24, 32))))
    (poses, scores), = codec.decode(oracle(t))
    assert poses.dtype == np.float32 and scores.dtype == np.float32
    assert poses.shape == (4, 3, 3) and np.all(np.diff(scores) <= 0)
    err = _match(poses, kp, vis)
    tol = 2.0 + 1e-6 if name == "ae" else 1e-3
    assert np.all(err <= tol), err
    # nobody: no pose
    t0 = _batch(codec.encode(np.zeros((0, 3, 2)), np.zeros((0, 3)), np.zeros(0), np.ones((24, 32))))
    (p0, s0), = codec.decode(oracle(t0))
    assert p0.shape == (0, 3, 3) and s0.shape == (0,)


def _mirror(outputs: dict[str, torch.Tensor], flip: list[int], shift_norm: float, shift_cell: float,
            cell_offsets: bool) -> dict[str, torch.Tensor]:
    """The exactly mirrored outputs (flip-back is an involution, so it also mirrors)."""
    out = {}
    for key, v in outputs.items():
        if key == "offsets":
            out[key] = flip_back_offsets(v, flip, shift_cell if cell_offsets else shift_norm)
        else:
            out[key] = flip_back_maps(v, None if key == "center_logits" else flip)
    return out


@pytest.mark.parametrize("name", HEADS)
def test_flip_merge_with_exact_mirror_is_identity(name: str) -> None:
    kp, vis, areas = person_set()
    flip = [0, 2, 1]
    codec, oracle = make_codec(name, (128, 96), SIG3)
    out = oracle(_batch(codec.encode(kp, vis, areas)))
    mirrored = _mirror(out, flip, 1 / 32 - 1 / 128, 1 - 1 / 4, name == "dekr")
    (p1, s1), = codec.decode(out)
    (p2, s2), = codec.decode(out, mirrored, flip)
    np.testing.assert_allclose(p2, p1, atol=1e-4)
    np.testing.assert_allclose(s2, s1, atol=1e-6)


def test_flip_back_offsets_maps_mirrored_points() -> None:
    """A hypothesis made on the mirrored input lands on the mirrored pixel: x -> w - 1 - x."""
    w_in, w_map = 128, 32
    x_px = 50.3  # original point; its mirror 128 - 1 - 50.3 = 76.7 is regressed from mirrored cell 19
    j_m = 19
    o_m = j_m / w_map - (w_in - 1 - x_px) / w_in  # normalised offset on the mirrored map
    off = torch.zeros(1, 1, 2, 1, w_map)
    off[0, 0, 0, 0, j_m] = o_m
    back = flip_back_offsets(off, [0], 1 / w_map - 1 / w_in)
    j = w_map - 1 - j_m
    assert (j / w_map - back[0, 0, 0, 0, j].item()) * w_in == pytest.approx(x_px, abs=1e-4)


def test_refine_to_peaks_moves_to_the_nearby_peak_with_quarter_offset() -> None:
    maps = torch.zeros(2, 20, 20)
    maps[0, 12, 10], maps[0, 12, 11], maps[0, 12, 9] = 0.9, 0.5, 0.2  # peak (x 10, y 12), higher right neighbour
    maps[0, 13, 10], maps[0, 11, 10] = 0.3, 0.6                         # higher upper neighbour
    maps[0, 2, 2] = 1.0                                                 # a stronger peak far away
    maps[1, 5, 5] = 0.05                                                # below the threshold
    points = torch.tensor([[[8.0, 11.0], [5.5, 5.0]]])
    out, moved = refine_to_peaks(points, maps, torch.tensor([3.0]), thr=0.1)
    np.testing.assert_allclose(out[0, 0].numpy(), [10.25, 11.75])
    np.testing.assert_allclose(out[0, 1].numpy(), [5.5, 5.0])  # nothing above 0.1 in reach: unchanged
    assert moved.tolist() == [[True, False]]
    far = torch.tensor([[[6.0, 11.0], [5.5, 5.0]]])  # nothing above 0.1 within 2 cells
    out, moved = refine_to_peaks(far, maps, torch.tensor([2.0]), thr=0.1)
    assert torch.equal(out, far) and not moved.any()


def test_refine_to_peaks_best_rule_breaks_ties_towards_the_nearer_peak() -> None:
    """Two equal peaks in reach (e.g. the same joint of two people in the GT maps): ``best`` takes the nearer one,
    on either side."""
    maps = torch.zeros(1, 20, 20)
    maps[0, 10, 4] = maps[0, 10, 12] = 1.0
    for x, want in ((7.0, 4.0), (9.0, 12.0)):
        out, _ = refine_to_peaks(torch.tensor([[[x, 10.0]]]), maps, torch.tensor([6.0]), thr=0.1)
        np.testing.assert_allclose(out[0, 0].numpy(), [want, 10.0])


def test_refine_reach_per_keypoint_grows_with_the_distance_from_the_centre() -> None:
    """``refine_to_peaks`` takes a reach per keypoint; ``refine_far`` widens a keypoint's reach to that multiple
    of its distance from its pose's centre cell, and leaves keypoints near the centre on the pose-size reach."""
    maps = torch.zeros(2, 40, 40)
    maps[0, 20, 24] = 0.9  # keypoint 0 regressed at (20, 20): its peak 4 cells right
    maps[1, 30, 34] = 0.9  # keypoint 1 regressed at (30, 30): its peak 4 cells right
    cells = torch.tensor([[[20.0, 20.0], [30.0, 30.0]]])
    out, moved = refine_to_peaks(cells, maps, torch.tensor([[2.0, 5.0]]), thr=0.1, rule="gauss")
    assert moved.tolist() == [[False, True]] and out[0, 1, 0].item() == pytest.approx(34.0)
    # through the codec: pose size sqrt(10 x 10) = 10 cells, refine_radius 0.25 -> a 2.5-cell reach for both;
    # the centre cell (19, 19): keypoint 0 lies 1.4 cells off it, keypoint 1 15.6 cells -> 0.5 x 15.6 = 7.8 cells
    codec, _ = make_codec("sar_center", (160, 160), refine="heatmap", refine_rule="gauss", refine_radius=0.25,
                          refine_thr=0.1, refine_far=0.5)
    stride = codec.stride[0]
    centre = torch.tensor([19 * 40 + 19])  # flat cell (19, 19) of the 40-wide maps
    out = codec._refined(cells * stride, maps, centre) / stride
    assert out[0, 0].tolist() == [20.0, 20.0] and out[0, 1, 0].item() == pytest.approx(34.0)
    codec.refine_far = 0.0
    assert torch.equal(codec._refined(cells * stride, maps, centre), cells * stride)
    with pytest.raises(ValueError, match="refine_far"):
        make_codec("sar_center", (160, 160), refine_far=-1.0)


@pytest.mark.parametrize("aux_loss", ["focal", "mse"])
def test_refine_keep_leaves_near_keypoints_on_their_regressed_positions(aux_loss: str) -> None:
    """``refine: heatmap`` with ``refine_keep: 1``: the oracle's regressed keypoints (each within half a cell of its
    Gaussian's peak) all stay exactly where they were regressed (without the keep rule they move to the peak cells);
    a keypoint displaced by 3 cells still snaps to its peak. The same with the raw maps of ``aux_loss: mse``
    (the oracle writes them as the targets, not their logits)."""
    kp, vis, areas = person_set()
    codec, oracle = make_codec("sar_center", (128, 96), SIG3, refine="heatmap", refine_radius=0.5, refine_keep=1.0,
                               aux_loss=aux_loss)
    t = _batch(codec.encode(kp, vis, areas))
    out = oracle(t)
    # the maps searched are the targets (through the sigmoid of the focal logits, or raw)
    np.testing.assert_allclose(codec._refine_maps(out).numpy(), t["heatmap"][:, :-1].numpy(), atol=2e-4)
    (poses, _), = codec.decode(out)
    assert np.all(_match(poses, kp, vis) <= 1e-3)
    codec.refine_keep = 0.0
    (snapped, _), = codec.decode(out)
    assert _match(snapped, kp, vis).max() > 0.2
    codec.refine_keep = 1.0
    moved = out["offsets"].clone()
    moved[0, 2, 0] += 3 / 32  # every cell regresses keypoint 2 three cells (12 px) further left
    (fixed, _), = codec.decode({**out, "offsets": moved})
    best = np.abs(fixed[:, 0, :2] - kp[0, 0]).sum(-1).argmin()  # person 0's pose
    peak = np.floor(kp[0, 2] / 4 + 0.5) * 4
    assert np.abs(fixed[best, 2, :2] - peak).max() <= 1.0 + 1e-4  # its peak cell (+ a quarter-cell step)


def test_keypoint_score_heatmap_multiplies_by_the_auxiliary_map() -> None:
    """``keypoint_score: heatmap``: same poses and order, each keypoint score times the auxiliary keypoint map at
    the decoded point (constant maps 0.5 / 0.25 / 0.8 here), the instance score times their mean (0.5167)."""
    kp, vis, areas = person_set()
    codec, oracle = make_codec("sar_center", (128, 96), SIG3)
    out = oracle(_batch(codec.encode(kp, vis, areas)))
    (p0, s0), = codec.decode(out)
    heat = torch.tensor([0.5, 0.25, 0.8, 0.5])
    const = torch.log(heat / (1 - heat))[None, :, None, None].expand_as(out["heatmap"])
    scored, _ = make_codec("sar_center", (128, 96), SIG3, keypoint_score="heatmap")
    (p1, s1), = scored.decode({**out, "heatmap": const})
    np.testing.assert_allclose(p1[..., :2], p0[..., :2])
    np.testing.assert_allclose(p1[..., 2], p0[..., 2] * np.array([0.5, 0.25, 0.8]), rtol=1e-5)
    np.testing.assert_allclose(s1, s0 * (1.55 / 3), rtol=1e-5)
    with pytest.raises(ValueError, match="keypoint_score"):
        make_codec("sar_center", (128, 96), keypoint_score="tags")
    with pytest.raises(ValueError, match="with_heatmap"):  # a head without the auxiliary branch
        scored.decode({k: v for k, v in out.items() if k != "heatmap"})


@pytest.mark.parametrize("name", HEADS)
def test_at_size_decodes_a_network_trained_at_another_input_size(name: str) -> None:
    """Multi-scale test: a network trained at 128x96 run on a 2x input regresses ``norm`` offsets in units of
    its training input (half the 2x input's fractions); ``at_size`` rescales them, so the 2x people come back
    exactly; ``cell`` offsets (DEKR) and heatmap heads are unchanged."""
    kp, vis, areas = person_set()
    base, _ = make_codec(name, (128, 96), SIG3)
    big, oracle = make_codec(name, (256, 192), SIG3)
    out = oracle(_batch(big.encode(kp * 2, vis, areas * 4)))
    scaled = base.at_size((256, 192), (64, 48))
    assert scaled.stride == (4.0, 4.0) and base.input_size == (128, 96)
    if "offsets" in out and base.offset_unit == "norm":
        assert scaled._offset_factor == (0.5, 0.5)
        out = {**out, "offsets": out["offsets"] * 2}  # in the training input's units
    (poses, _), = scaled.decode(out)
    tol = 4.0 + 1e-6 if name == "ae" else 2e-3
    assert np.all(_match(poses, kp * 2, vis) <= tol)


def test_refine_to_peaks_nearest_rule_takes_the_closest_peak_not_the_strongest() -> None:
    """``rule="nearest"``: the closest local maximum above the threshold (a neighbour's stronger joint within reach
    does not pull the keypoint away); ``best`` takes the strongest cell."""
    maps = torch.zeros(1, 20, 20)
    maps[0, 10, 6] = 0.4                          # weak peak 1 cell from the point
    maps[0, 10, 9], maps[0, 10, 10] = 0.5, 0.95   # a stronger peak 4 cells away, with its shoulder at x 9
    points = torch.tensor([[[5.0, 10.0]]])
    radius = torch.tensor([6.0])
    best, _ = refine_to_peaks(points, maps, radius, thr=0.1, rule="best")
    near, moved = refine_to_peaks(points, maps, radius, thr=0.1, rule="nearest")
    np.testing.assert_allclose(best[0, 0].numpy(), [9.75, 10.0])  # x 10, a quarter cell towards the 0.5 at x 9
    np.testing.assert_allclose(near[0, 0].numpy(), [6.0, 10.0])   # x 6: neighbours equal (0), no quarter step
    assert moved.tolist() == [[True]]
    # the shoulder cell (x 9, 0.5) is no local maximum, so it is never the nearest peak
    near, _ = refine_to_peaks(torch.tensor([[[8.6, 10.0]]]), maps, radius, thr=0.45, rule="nearest")
    np.testing.assert_allclose(near[0, 0].numpy(), [9.75, 10.0])
    with pytest.raises(ValueError, match="rule"):
        refine_to_peaks(points, maps, radius, thr=0.1, rule="closest")


def test_refine_to_peaks_gauss_rule_weighs_peaks_by_their_distance() -> None:
    """``rule="gauss"``: among the cells above the threshold in reach, the highest map value x exp(-d^2 / (2
    sigma^2)), sigma = radius / 2 = 3 cells. From x 5: the 0.4 peak 1 cell away (0.4 e^(-1/18) = 0.378) beats the
    0.95 peak 5 cells away (0.95 e^(-25/18) = 0.237) and its 0.5 shoulder (0.5 e^(-16/18) = 0.206); from x 8 both
    peaks are 2 cells away and the 0.95 one wins (quarter step towards the 0.5 at x 9); above a threshold of 0.45
    the 0.4 peak is no candidate, so the best of the rest (the 0.95 peak) is taken."""
    maps = torch.zeros(1, 20, 20)
    maps[0, 10, 6] = 0.4
    maps[0, 10, 9], maps[0, 10, 10] = 0.5, 0.95
    radius = torch.tensor([6.0])
    out, moved = refine_to_peaks(torch.tensor([[[5.0, 10.0]]]), maps, radius, thr=0.1, rule="gauss")
    np.testing.assert_allclose(out[0, 0].numpy(), [6.0, 10.0])
    assert moved.tolist() == [[True]]
    out, _ = refine_to_peaks(torch.tensor([[[8.0, 10.0]]]), maps, radius, thr=0.1, rule="gauss")
    np.testing.assert_allclose(out[0, 0].numpy(), [9.75, 10.0])
    out, _ = refine_to_peaks(torch.tensor([[[5.0, 10.0]]]), maps, radius, thr=0.45, rule="gauss")
    np.testing.assert_allclose(out[0, 0].numpy(), [9.75, 10.0])
    # nothing above the threshold in reach: the point stays
    out, moved = refine_to_peaks(torch.tensor([[[5.0, 10.0]]]), maps, radius, thr=0.96, rule="gauss")
    np.testing.assert_allclose(out[0, 0].numpy(), [5.0, 10.0])
    assert moved.tolist() == [[False]]


@pytest.mark.parametrize("name", ["sar_center", "dekr"])
def test_pose_window_averages_hypotheses_weighted_by_the_centre_confidence(name: str) -> None:
    """``pose_window: 3``: the pose decoded at a centre peak is the confidence-weighted mean of the pose hypotheses
    of the 3x3 cells around it that agree with the peak's (``pose_window_gate``; hand-computed); the sar_center oracle (every cell within 2 of a centre regressing
    its person's pose) decodes unchanged. (DEKR's oracle gives a cell claimed by two people the smaller one's
    offsets, so a window across two close centres mixes them.)"""
    if name == "sar_center":
        kp, vis, areas = person_set()
        codec, oracle = make_codec(name, (128, 96), SIG3, pose_window=3, smooth_kernel=1, nms_thr=1.0)
        (poses, _), = codec.decode(oracle(_batch(codec.encode(kp, vis, areas))))
        assert np.all(_match(poses, kp, vis) <= 1e-3)

    # hypotheses known per cell: the centre cell (x 10, y 8) says keypoints (40, 30), (40, 90), (100, 60) px; its
    # right neighbour, at a third of its confidence, says the same pose 4 px to the right (mean distance 4 px <= the
    # gate 0.1 x the 60 px pose size): the window mean of keypoint 0 is (41, 30)
    codec1, _ = make_codec(name, (128, 96), SIG3, pose_window=3, smooth_kernel=1, nms_thr=1.0)
    h, w = 24, 32
    stride = 4.0
    gx, gy = sar_grid(w, h, torch.device("cpu"), torch.float32)

    def outputs_for(shift: float) -> dict[str, torch.Tensor]:
        conf = torch.full((1, 1, h, w), 1e-6)
        conf[0, 0, 8, 10], conf[0, 0, 8, 11] = 0.9, 0.3
        offsets = torch.zeros(1, 3, 2, h, w)
        pose = torch.tensor([[40.0, 30.0], [40.0, 90.0], [100.0, 60.0]])
        for x, hyp in ((10, pose), (11, pose + torch.tensor([shift, 0.0]))):
            if name == "dekr":  # offsets in cells: cell - keypoint
                offsets[0, :, 0, 8, x], offsets[0, :, 1, 8, x] = x - hyp[:, 0] / stride, 8 - hyp[:, 1] / stride
            else:  # normalised: grid - keypoint / input size
                offsets[0, :, 0, 8, x], offsets[0, :, 1, 8, x] = gx[8, x] - hyp[:, 0] / 128, gy[8, x] - hyp[:, 1] / 96
        if name == "sar_center":
            return {"center_logits": torch.log(conf / (1 - conf)), "offsets": offsets}
        return {"heatmap": torch.cat([torch.zeros(1, 3, h, w), conf], 1), "offsets": offsets}

    (poses, _), = codec1.decode(outputs_for(4.0))
    np.testing.assert_allclose(poses[0, 0, :2], [41.0, 30.0], atol=1e-3)
    # a neighbour regressing another pose (30 px away: another person) stays out of the mean
    (poses, _), = codec1.decode(outputs_for(30.0))
    np.testing.assert_allclose(poses[0, 0, :2], [40.0, 30.0], atol=1e-3)
    if name == "dekr":  # a raw MSE centre map may dip below 0 around the peak: such a cell weighs nothing
        out = outputs_for(4.0)
        out["heatmap"][0, -1, 8, 11] = -0.3
        (poses, _), = codec1.decode(out)
        np.testing.assert_allclose(poses[0, 0, :2], [40.0, 30.0], atol=1e-3)
    codec1.pose_window_gate = 1.0  # a gate wide enough to let it in: (3 x 40 + 70) / 4
    (poses, _), = codec1.decode(outputs_for(30.0))
    np.testing.assert_allclose(poses[0, 0, :2], [47.5, 30.0], atol=1e-3)
    codec1.pose_window = 1
    (poses, _), = codec1.decode(outputs_for(4.0))
    np.testing.assert_allclose(poses[0, 0, :2], [40.0, 30.0], atol=1e-3)
    codec1.pose_window = 3  # no peak above the threshold: no pose, no error
    empty = {k: v * 0 - 20 if k in ("center_logits", "heatmap") else v for k, v in outputs_for(4.0).items()}
    (poses, scores), = codec1.decode(empty)
    assert poses.shape == (0, 3, 3) and scores.shape == (0,)
    with pytest.raises(ValueError, match="pose_window"):
        make_codec(name, (128, 96), SIG3, pose_window=2)


@pytest.mark.parametrize("name", ["sar_center", "dekr"])
def test_refine_keeps_oracle_poses_on_their_cells(name: str) -> None:
    """GT targets through ``refine: heatmap``: every keypoint snaps to its own Gaussian's peak, i.e. within a
    quarter cell of the cell the keypoint was encoded on (plus the quarter-cell step)."""
    kp, vis, areas = person_set()
    codec, oracle = make_codec(name, (128, 96), SIG3)
    out = oracle(_batch(codec.encode(kp, vis, areas)))
    codec.refine = "heatmap"
    (poses, _), = codec.decode(out)
    stride = np.asarray(codec.stride)
    for person, visible in zip(kp, vis, strict=True):
        best = np.abs(poses[:, :, :2] - person[None]).sum((1, 2)).argmin()
        err = np.abs(poses[best, :, :2] - np.floor(person / stride + 0.5) * stride)[visible > 0]
        assert err.max() <= 0.25 * stride.max() + 1e-4


def test_pose_nms_suppresses_duplicates() -> None:
    a = np.array([[10.0, 10, 1], [30, 40, 1], [20, 60, 1]])
    poses = np.stack([a, a + [0.5, 0.5, 0], a + [60, 0, 0]])
    keep = pose_nms(poses, np.array([0.5, 0.9, 0.7]), np.full(3, 0.08), 0.8)
    np.testing.assert_array_equal(keep, [1, 2])


# ---------------------------------------------------------------------------------------------------------------
# Oracle AP on real samples
def test_oracle_places_unlabelled_keypoints_on_the_body_and_regresses_near_the_centre() -> None:
    """The oracle's stand-ins: a person's unlabelled keypoint at the mean of its labelled ones (not the image
    corner, where every person's would meet and trip the pose NMS), and the sar_center pose regressed by the cells
    around the centre too (the codec's smoothing can move the peak one cell)."""
    kp, vis, areas = person_set()
    codec, oracle = make_codec("sar_center", (128, 96), SIG3)
    t = _batch(codec.encode(kp, vis, areas))
    out = oracle(t)
    w, h = codec.heatmap_size
    c = int(t["center_cells"][0, 3])
    for cell in (c, c + 1, c - w):  # the centre, its right neighbour, the cell above
        pose = (sar_grid(w, h).flatten(1)[:, cell][None] - out["offsets"][0, :, :, cell // w, cell % w]).numpy()
        pose_px = pose * np.array([128, 96])
        np.testing.assert_allclose(pose_px[[0, 2]], kp[3][[0, 2]], atol=1e-3)
        np.testing.assert_allclose(pose_px[1], kp[3][[0, 2]].mean(0), atol=1e-3)  # hidden: the labelled mean


# ---------------------------------------------------------------------------------------------------------------
DATASETS = {
    "coco": ("coco/test_coco.json", "coco"),
    "crowdpose": ("crowdpose/test_crowdpose.json", "crowdpose"),
    "ochuman": ("ochuman/test_ochuman.json", "coco"),
}
MIN_AREA = 32.0**2


def _area(ann: dict) -> float:
    return float(ann["area"]) if ann.get("area") else float(ann["bbox"][2] * ann["bbox"][3])


def run_oracle(root: Path, dataset: str, name: str) -> dict[str, float]:
    """Oracle predictions of head ``name`` on ``dataset``; AP over the persons with area >= 32^2 (smaller ones
    and persons without keypoints are marked crowd, so COCOeval ignores what matches them)."""
    rel, spec_name = DATASETS[dataset]
    gt = json.loads((root / rel).read_text())
    spec = load_spec(spec_name)
    k = spec.num_keypoints
    preds, n_large, n_small = [], 0, 0
    worst_ae = 0.0
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and not a.get("iscrowd")]
        w_in, h_in = 4 * math.ceil(img["width"] / 4), 4 * math.ceil(img["height"] / 4)
        kps = np.array([np.asarray(a["keypoints"], float).reshape(k, 3) for a in anns]).reshape(-1, k, 3)
        vis = (kps[..., 2] > 0).astype(float)
        areas = np.array([_area(a) for a in anns])
        codec, oracle = make_codec(name, (w_in, h_in), spec.sigmas)
        t = _batch(codec.encode(kps[..., :2], vis, areas, None))
        (poses, scores), = codec.decode(oracle(t))
        for pose, score in zip(poses, scores, strict=True):
            span = pose[:, :2].max(0) - pose[:, :2].min(0)
            preds.append({"image_id": img["id"], "keypoints": pose, "bbox_score": float(score),
                          "area": float(max(span[0] * span[1], 1.0))})
        for a, kp_, v in zip(anns, kps, vis, strict=True):
            if v.sum() == 0:
                continue
            if _area(a) >= MIN_AREA:
                n_large += 1
                if name == "ae":  # grouping + accuracy: some decoded pose within stride / 2 on every keypoint
                    worst_ae = max(worst_ae, float(_match(poses, kp_[None, :, :2], v[None])[0]))
            else:
                n_small += 1
    for a in gt["annotations"]:
        if _area(a) < MIN_AREA or not a.get("num_keypoints"):
            a["iscrowd"] = 1
    ev = CocoEvaluator(gt, spec.sigmas, use_nms=False, score_mode="bbox")
    metrics = ev.evaluate(preds)
    return {"AP": metrics["AP"], "persons": n_large, "smaller": n_small, "ae_worst_px": worst_ae,
            "poses": len(preds)}


ORACLE_EXPECTED = {  # persons with area >= 32^2 / smaller persons with keypoints, per dataset
    "coco": (12, 0),
    "crowdpose": (4, 0),
    "ochuman": (5, 0),
}


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("name", HEADS)
def test_oracle_ap_real_samples(shared_data: Path, dataset: str, name: str) -> None:
    res = run_oracle(shared_data, dataset, name)
    assert (res["persons"], res["smaller"]) == ORACLE_EXPECTED[dataset]
    if name == "ae":
        assert res["ae_worst_px"] <= 2.0 + 1e-6, res  # every person grouped, every keypoint within stride / 2
    else:
        assert res["AP"] >= 0.99, res


def oracle_table(root: Path) -> dict[str, dict[str, dict[str, float]]]:
    """All oracle numbers (for the report): ``{head: {dataset: run_oracle(...)}}``."""
    return {name: {ds: run_oracle(root, ds, name) for ds in DATASETS} for name in HEADS}




# ---------------------------------------------------------------------------------------------------------------
# Short-range offsets (refine: local, PersonLab's refinement)
# ---------------------------------------------------------------------------------------------------------------
def test_local_offset_targets_hand_values() -> None:
    """Keypoint 0 at (10, 6) px, stride 4 -> map position (2.5, 1.5); radius 1 cell reaches the four cells around
    it, each pointing at it in units of the radius; a second person's keypoint 0 at (18, 6) px -> (4.5, 1.5) takes
    the cells nearer to it; keypoint 1 is hidden for both (no target)."""
    codec = SARCenterCodec((32, 16), (8, 4), local_radius=1.0)
    kp = np.array([[[10.0, 6.0], [0.0, 0.0]], [[18.0, 6.0], [0.0, 0.0]]])
    vis = np.array([[1.0, 0.0], [1.0, 0.0]])
    t = codec.encode(kp, vis, np.array([100.0, 100.0]))
    w = t["local_weight"]
    assert w[1].sum() == 0
    assert sorted(zip(*np.nonzero(w[0]), strict=True)) == [(1, 2), (1, 3), (1, 4), (1, 5), (2, 2), (2, 3), (2, 4),
                                                           (2, 5)]
    off = t["local_offsets"][0]  # (2,H,W), indexed [axis, y, x]
    np.testing.assert_allclose(off[:, 1, 2], [0.5, 0.5])
    np.testing.assert_allclose(off[:, 2, 3], [-0.5, -0.5])
    np.testing.assert_allclose(off[:, 1, 4], [0.5, 0.5])  # the second person's (cell (4, 1) is nearer to it)
    np.testing.assert_allclose(off[:, 2, 5], [-0.5, -0.5])
    assert off[:, 0].sum() == 0 and off[:, 3].sum() == 0
    # the loss mask zeroes the weight
    mask = np.ones((4, 8), dtype=np.float32)
    mask[1, :] = 0
    assert codec.encode(kp, vis, np.array([100.0, 100.0]), mask)["local_weight"][0].sum() == 4


@pytest.mark.parametrize("name", ["sar_center", "dekr"])
def test_refine_local_pulls_displaced_poses_back_to_the_ground_truth(name: str) -> None:
    """Oracle outputs whose pose offsets are displaced by (1.5, -1.25) cells: without refinement every keypoint is
    that far off; ``refine: local`` (radius 4 cells) reads the exact short-range field and lands on the GT, with and
    without the flip merge (the mirrored pass's field is the exact mirror, read shifted by ``1 - 1/stride``)."""
    kp, vis, areas = person_set()
    flip = [0, 2, 1]
    codec, oracle = make_codec(name, (128, 96), SIG3, local_radius=4.0)
    out = oracle(_batch(codec.encode(kp, vis, areas)))
    out["local_offsets"] = _batch(codec.encode(kp, vis, areas))["local_offsets"]
    displaced = dict(out)
    step = torch.tensor([1.5, -1.25])  # cells
    unit = step if name == "dekr" else step / torch.tensor([32.0, 24.0])
    displaced["offsets"] = out["offsets"] - unit[None, None, :, None, None]  # pose = cell - offset moves by +step
    (plain, _), = codec.decode(displaced)
    assert np.all(_match(plain, kp, vis) > 4.0)  # 1.5 cells x stride 4 = 6 px in x
    codec.refine = "local"
    (refined, _), = codec.decode(displaced)
    assert np.all(_match(refined, kp, vis) <= 1e-3), _match(refined, kp, vis)
    shift = 1.0 - 1.0 / 4
    mirrored = _mirror(displaced, flip, 1 / 32 - 1 / 128, shift, name == "dekr")
    mirrored["local_offsets"] = flip_back_offsets(out["local_offsets"], flip, -shift / codec.local_radius)
    (both, _), = codec.decode(displaced, mirrored, flip)
    assert np.all(_match(both, kp, vis) <= 1e-3), _match(both, kp, vis)


def test_refine_local_needs_its_radius_and_the_head_output() -> None:
    with pytest.raises(ValueError, match="local_radius"):
        SARCenterCodec((64, 64), (16, 16), refine="local")
    codec = SARCenterCodec((64, 64), (16, 16), refine="local", local_radius=3.0)
    kp, vis, areas = person_set()
    out = codec.oracle_outputs(_batch(SARCenterCodec((64, 64), (16, 16)).encode(kp, vis, areas)))
    with pytest.raises(ValueError, match="local_offsets"):
        codec.decode(out)
