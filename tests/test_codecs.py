"""Codec round trips (SAR, MSRA heatmap + DARK), exact flip test merging, keypoint weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keypoint_helpers import FLIP_INDICES, mirror, random_points
from sar.codecs import Codec, MSRAHeatmapCodec, SARCodec, build_codec


def _perfect_sar_outputs(codec: SARCodec, keypoints: np.ndarray) -> dict[str, torch.Tensor]:
    """Head outputs whose decoding is exactly `keypoints`: logits peak at the GT cell, grid - offset = GT."""
    (w_in, h_in), (w, h) = codec.input_size, codec.heatmap_size
    k = len(keypoints)
    norm = torch.as_tensor(keypoints / np.array([w_in, h_in]), dtype=torch.float32)
    logits = torch.full((1, k, h, w), -8.0)
    cols = np.clip(np.floor(keypoints[:, 0] / codec.stride[0]), 0, w - 1).astype(int)
    rows = np.clip(np.floor(keypoints[:, 1] / codec.stride[1]), 0, h - 1).astype(int)
    logits[0, np.arange(k), rows, cols] = 8.0
    gx = torch.arange(w, dtype=torch.float32) / w
    gy = torch.arange(h, dtype=torch.float32) / h
    offsets = torch.empty(1, k, 2, h, w)
    offsets[0, :, 0] = gx[None, None, :] - norm[:, 0, None, None]
    offsets[0, :, 1] = gy[None, :, None] - norm[:, 1, None, None]
    return {"logits": logits, "offsets": offsets}


def _heatmap_outputs(codec: MSRAHeatmapCodec, keypoints: np.ndarray) -> dict[str, torch.Tensor]:
    target = codec.encode(keypoints, np.ones(len(keypoints)))
    return {"heatmap": torch.from_numpy(target["heatmap"])[None]}


# -- SAR --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heatmap_size", [(48, 64), (12, 16)])  # stride 4 and stride 16 at 192x256
def test_sar_perfect_outputs_round_trip(heatmap_size: tuple[int, int]) -> None:
    codec = SARCodec((192, 256), heatmap_size, sigma=2.0)
    rng = np.random.default_rng(0)
    kp = random_points(rng, 40, codec.input_size, margin=0.0)
    coords, scores = codec.decode(_perfect_sar_outputs(codec, kp))
    assert coords.shape == (1, 40, 2) and scores.shape == (1, 40)
    assert np.abs(coords[0].numpy() - kp).max() < 0.05
    # score = max_t w_t = sigmoid(8) / (sigmoid(8) + (HW - 1) sigmoid(-8))
    w, h = heatmap_size
    s_hi, s_lo = 1 / (1 + math.exp(-8)), 1 / (1 + math.exp(8))
    assert torch.allclose(scores, torch.full_like(scores, s_hi / (s_hi + (w * h - 1) * s_lo)), rtol=1e-4)


def test_sar_heatmap_score_samples_the_aux_heatmap_at_the_keypoint() -> None:
    """score='heatmap': sigmoid(aux heatmap) bilinearly interpolated at the decoded keypoint (map units)."""
    codec = SARCodec((64, 64), (16, 16), sigma=2.0, score="heatmap")
    kp = np.array([[10.0, 20.0], [33.0, 6.0], [50.0, 50.0]])
    outputs = _perfect_sar_outputs(codec, kp)
    prob = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    outputs["heatmap"] = torch.log(prob / (1 - prob))  # logits whose sigmoid is `prob`
    coords, scores = codec.decode(outputs)
    assert np.abs(coords[0].numpy() - kp).max() < 0.05
    for i, (x, y) in enumerate(coords[0].tolist()):  # hand-computed bilinear interpolation at (x/4, y/4)
        u, v = x / 4.0, y / 4.0
        j, r = math.floor(u), math.floor(v)
        a, b = u - j, v - r
        p = prob[0, i]
        expect = ((1 - a) * (1 - b) * p[r, j] + a * (1 - b) * p[r, j + 1] + (1 - a) * b * p[r + 1, j]
                  + a * b * p[r + 1, j + 1])
        assert abs(float(scores[0, i]) - float(expect)) < 1e-5
    # the released decoder's score is the selector weight, and the heatmap is ignored
    sel = SARCodec((64, 64), (16, 16), sigma=2.0).decode(outputs)[1]
    assert not torch.allclose(sel, scores)
    assert build_codec({"type": "sar", "input_size": [64, 64], "heatmap_size": [16, 16], "score": "heatmap"}).score == "heatmap"
    with pytest.raises(ValueError, match="selector"):
        SARCodec((64, 64), (16, 16), score="peak")


@pytest.mark.parametrize("heatmap_size", [(48, 64), (12, 16)])
def test_sar_flip_test_is_exact(heatmap_size: tuple[int, int]) -> None:
    codec = SARCodec((192, 256), heatmap_size)
    rng = np.random.default_rng(1)
    kp = random_points(rng, len(FLIP_INDICES), codec.input_size, margin=0.0)
    mirrored = mirror(kp, codec.input_size[0])
    coords, scores = codec.decode_flip(
        _perfect_sar_outputs(codec, kp), _perfect_sar_outputs(codec, mirrored), FLIP_INDICES
    )
    assert np.abs(coords[0].numpy() - kp).max() < 0.05
    assert scores.shape == (1, len(FLIP_INDICES))
    # flip_indices may also come as a tensor
    coords_t, _ = codec.decode_flip(
        _perfect_sar_outputs(codec, kp), _perfect_sar_outputs(codec, mirrored), torch.tensor(FLIP_INDICES)
    )
    assert torch.equal(coords, coords_t)


def test_sar_encode_targets() -> None:
    codec = SARCodec((192, 256), (48, 64), sigma=2.0)
    kp = np.array([[50.3, 77.9], [-100.0, 20.0], [10.0, 10.0], [-10.0, 20.0], [np.nan, 3.0]])
    vis = np.array([1, 1, 0, 2, 1])
    t = codec.encode(kp, vis)
    assert t["keypoints_norm"].dtype == np.float32 and t["heatmap"].dtype == np.float32
    assert t["heatmap"].shape == (5, 64, 48)
    np.testing.assert_array_equal(t["keypoint_weights"], [1, 0, 0, 1, 0])
    np.testing.assert_allclose(t["keypoints_norm"][0], [50.3 / 192, 77.9 / 256], rtol=1e-6)
    np.testing.assert_allclose(t["keypoints_norm"][3], [-10.0 / 192, 20.0 / 256], rtol=1e-6)
    assert np.all(t["keypoints_norm"][[1, 2, 4]] == 0) and np.all(t["heatmap"][[1, 2, 4]] == 0)
    # MSRA target: peak 1 at the rounded cell int(x / 4 + 0.5) = (13, 19), window radius 3 sigma = 6
    hm = t["heatmap"][0]
    assert hm[19, 13] == 1.0 and hm.max() == 1.0
    assert hm[19, 13 + 6] == pytest.approx(math.exp(-36 / 8)) and hm[19, 13 + 7] == 0.0
    assert hm[19 - 6, 13] > 0 and hm[19 - 7, 13] == 0.0
    # keypoint 3: x = -10 px -> centre int(-2.5 + 0.5) = -2, window reaches column 4 -> still weighted
    assert t["heatmap"][3, 5, :5].max() > 0 and t["heatmap"][3, :, 5:].max() == 0


# -- MSRA heatmap -----------------------------------------------------------------------------------
def test_heatmap_dark_round_trip() -> None:
    codec = MSRAHeatmapCodec((192, 256), (48, 64), sigma=2.0, unbiased=True)
    assert codec.blur_kernel == 11
    rng = np.random.default_rng(2)
    kp = random_points(rng, 60, codec.input_size, margin=6 * 4)
    coords, scores = codec.decode(_heatmap_outputs(codec, kp))
    assert np.abs(coords[0].numpy() - kp).max() < 0.3
    assert scores.max() <= 1.0 and scores.min() > 0.9  # unbiased peak close to 1


def test_heatmap_classic_decode_and_encoding() -> None:
    codec = MSRAHeatmapCodec((192, 256), (48, 64), sigma=2.0, unbiased=False)
    rng = np.random.default_rng(3)
    kp = random_points(rng, 60, codec.input_size, margin=8)
    t = codec.encode(kp, np.ones(60))
    # exact MSRA values inside the window (brute force), zero outside
    mu = np.trunc(kp / 4 + 0.5)
    ys, xs = np.mgrid[0:64, 0:48]
    for k in range(3):
        dx, dy = xs - mu[k, 0], ys - mu[k, 1]
        ref = np.exp(-(dx**2 + dy**2) / 8) * ((np.abs(dx) <= 6) & (np.abs(dy) <= 6))
        np.testing.assert_allclose(t["heatmap"][k], ref, atol=1e-6)
    coords, scores = codec.decode({"heatmap": torch.from_numpy(t["heatmap"])[None]})
    # rounding error <= 0.5 cell, the quarter-cell shift goes towards the GT side
    assert np.abs(coords[0].numpy() - kp).max() <= 0.75 * 4 + 1e-4
    assert torch.all(scores == 1.0)


@pytest.mark.parametrize(("input_size", "heatmap_size"), [((192, 256), (48, 64)), ((768, 1024), (48, 64))])
def test_heatmap_flip_test_is_exact(input_size: tuple[int, int], heatmap_size: tuple[int, int]) -> None:
    """Stride 4 and stride 16: the flipped-back map is shifted by 1 - 1/stride cells, not 1 cell."""
    codec = MSRAHeatmapCodec(input_size, heatmap_size, sigma=2.0, unbiased=True)
    stride = codec.stride[0]
    rng = np.random.default_rng(4)
    for _ in range(5):
        kp = random_points(rng, len(FLIP_INDICES), input_size, margin=8 * stride)
        mirrored = mirror(kp, input_size[0])
        coords, _ = codec.decode_flip(
            _heatmap_outputs(codec, kp), _heatmap_outputs(codec, mirrored), FLIP_INDICES
        )
        assert np.abs(coords[0].numpy() - kp).max() < 0.3


def test_heatmap_weights() -> None:
    codec = MSRAHeatmapCodec((192, 256), (48, 64), sigma=2.0, unbiased=True)
    kp = np.array([[100.0, 100.0], [100.0, 100.0], [-100.0, 50.0], [50.0, 300.0], [-20.0, 50.0], [np.inf, 1]])
    t = codec.encode(kp, np.array([1, 0, 1, 1, 1, 1]))
    np.testing.assert_array_equal(t["keypoint_weights"], [1, 0, 0, 0, 1, 0])
    assert t["keypoint_weights"].dtype == np.float32
    assert np.all(t["heatmap"][[1, 2, 3, 5]] == 0) and t["heatmap"][4].max() > 0


def test_decode_is_batched_and_device_agnostic() -> None:
    codec = MSRAHeatmapCodec((192, 256), (48, 64), sigma=2.0)
    rng = np.random.default_rng(5)
    maps = torch.stack(
        [_heatmap_outputs(codec, random_points(rng, 3, (192, 256), 30))["heatmap"][0] for _ in range(4)]
    )
    coords, scores = codec.decode({"heatmap": maps})
    assert coords.shape == (4, 3, 2) and scores.shape == (4, 3)
    single, _ = codec.decode({"heatmap": maps[2:3]})
    assert torch.allclose(coords[2:3], single)


def test_build_codec() -> None:
    sar = build_codec({"type": "sar", "input_size": [192, 256], "heatmap_size": [48, 64]})
    assert isinstance(sar, SARCodec) and isinstance(sar, Codec)
    assert sar.sigma == 3.0 and sar.input_size == (192, 256) and sar.heatmap_size == (48, 64)
    hm = build_codec({"type": "msra_heatmap", "input_size": [288, 384], "heatmap_size": [72, 96], "sigma": 3})
    assert isinstance(hm, MSRAHeatmapCodec) and hm.unbiased and hm.blur_kernel == 17 and hm.stride == (4, 4)
    with pytest.raises(ValueError, match="unexpected keyword argument .unbiased."):
        build_codec({"type": "sar", "input_size": [192, 256], "heatmap_size": [48, 64], "unbiased": True})
    with pytest.raises(ValueError, match="unknown codec type"):
        build_codec({"type": "udp", "input_size": [192, 256], "heatmap_size": [48, 64]})


@pytest.mark.parametrize("kernel", [11, 17])
def test_dark_blur_matches_opencv_reference(kernel: int) -> None:
    """blur_heatmaps == mmpose's gaussian_blur: zero-pad, cv2.GaussianBlur(sigma=0), crop, rescale to max."""
    cv2 = pytest.importorskip("cv2")
    from sar.codecs.heatmap import blur_heatmaps

    maps = np.random.default_rng(6).random((3, 20, 13)).astype(np.float32)
    border = (kernel - 1) // 2
    ref = np.empty_like(maps)
    for k, m in enumerate(maps):
        padded = np.zeros((20 + 2 * border, 13 + 2 * border), np.float32)
        padded[border:-border, border:-border] = m
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        ref[k] = blurred * (m.max() / blurred.max())
    out = blur_heatmaps(torch.from_numpy(maps)[None], kernel)[0].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
