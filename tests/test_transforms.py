"""Top-down transforms (affine, flip, half-body, random box, normalisation) and the TopDownDataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sar.data import transforms as T
from sar.data.formats.coco import load_coco_instances
from sar.data.spec import load_spec
from sar.data.topdown import AugConfig, TopDownDataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COCO_JSON = SHARED_DATA / "coco" / "test_coco.json"

COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
INPUT_SIZE = (192, 256)  # (w, h)


def coco_spec():
    return load_spec("coco")


class StandInCodec:
    """Minimal codec: the keypoints in crop pixels and the visibility as weights."""

    input_size = INPUT_SIZE

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        return {"keypoint_weights": visible.astype(np.float32), "keypoints_px": keypoints.astype(np.float32)}


def coco_records() -> list[dict]:
    if not COCO_JSON.exists():
        pytest.skip(f"shared COCO sample missing: {COCO_JSON}")
    return load_coco_instances(COCO_JSON, COCO_JSON.parent, coco_spec())


def blob(shape: tuple[int, int], xy: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    return np.exp(-((xs - xy[0]) ** 2 + (ys - xy[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def argmax_xy(image: np.ndarray) -> np.ndarray:
    y, x = np.unravel_index(int(np.argmax(image)), image.shape[:2])
    return np.array([x, y], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Boxes and affine matrices
# ---------------------------------------------------------------------------------------------------
def test_bbox_to_center_scale_fixes_aspect_then_pads():
    center, scale = T.bbox_to_center_scale([10, 20, 30, 100], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(center, [25, 70])
    np.testing.assert_allclose(scale, [75 * 1.25, 100 * 1.25])  # width enlarged to 0.75 * h
    _, scale = T.bbox_to_center_scale([0, 0, 100, 30], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(scale, [100, 100 / 0.75])  # height enlarged


def test_affine_round_trip_and_inverse():
    rng = np.random.default_rng(0)
    for _ in range(50):
        center = rng.uniform(0, 600, 2)
        scale = rng.uniform(20, 400) * np.array([0.75, 1.0])
        rot = rng.uniform(-180, 180)
        size = (int(rng.integers(32, 400)), int(rng.integers(32, 400)))
        fwd = T.get_affine(center, scale, rot, size)
        inv = T.get_affine(center, scale, rot, size, inverse=True)
        pts = rng.uniform(-100, 700, (20, 2))
        np.testing.assert_allclose(T.transform_points(T.transform_points(pts, fwd), inv), pts, atol=1e-4)
        np.testing.assert_allclose(inv, T.invert_affine(fwd), atol=1e-9)
        np.testing.assert_allclose(T.compose_affine(inv, fwd), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


def test_box_centre_maps_to_crop_centre_and_box_fills_crop():
    w, h = INPUT_SIZE
    center, scale = T.bbox_to_center_scale([100.3, 50.7, 80.0, 150.0], w / h)
    for rot in (0.0, 33.0, -120.0):
        m = T.get_affine(center, scale, rot, INPUT_SIZE)
        np.testing.assert_allclose(T.transform_points(center[None], m)[0], [(w - 1) / 2, (h - 1) / 2], atol=1e-9)
    m = T.get_affine(center, scale, 0.0, INPUT_SIZE)
    corners = np.array([center - scale / 2, center + scale / 2])
    np.testing.assert_allclose(T.transform_points(corners, m), [[-0.5, -0.5], [w - 0.5, h - 0.5]], atol=1e-9)
    # positive rotation is counter-clockwise on screen: a point right of the centre moves up
    m = T.get_affine(center, scale, 90.0, INPUT_SIZE)
    right = T.transform_points((center + [10.0, 0.0])[None], m)[0]
    assert right[1] < (h - 1) / 2 - 1 and abs(right[0] - (w - 1) / 2) < 1e-6


def test_keypoint_transform_agrees_with_pixel_warp():
    rng = np.random.default_rng(1)
    shape = (240, 320)
    for trial in range(6):
        kps = rng.uniform([40, 40], [shape[1] - 40, shape[0] - 40], (4, 2))
        center = np.array([shape[1] / 2, shape[0] / 2]) + rng.uniform(-20, 20, 2)
        scale = T.fix_aspect_ratio((shape[1], shape[0]), 0.75) * rng.uniform(0.8, 1.3)
        rot = rng.uniform(-80, 80)
        m = T.get_affine(center, scale, rot, INPUT_SIZE)
        if trial % 2:
            m = T.compose_affine(m, T.flip_matrix(shape[1]))
        expected = T.transform_points(kps, m)
        for k in range(len(kps)):
            warped = T.warp(blob(shape, kps[k]), m, INPUT_SIZE)
            assert warped.shape == (INPUT_SIZE[1], INPUT_SIZE[0])
            assert np.linalg.norm(argmax_xy(warped) - expected[k]) <= 1.0


def test_flip_folded_into_warp_moves_dot_to_swapped_keypoint():
    shape = (200, 300)
    width = shape[1]
    kps = np.array([[150, 60], [130, 50], [170, 50]] + [[150, 100]] * 14, dtype=np.float32)  # 1: left eye
    vis = np.ones(17, np.float32)
    vis[1] = 1.0
    vis[2] = 0.0  # asymmetric visibility to check the permutation
    image = np.zeros((*shape, 3), np.uint8)
    cv2.circle(image, (130, 50), 2, (255, 255, 255), -1)  # bright dot at the left eye only
    center, scale = T.bbox_to_center_scale([100, 20, 100, 160], 0.75)

    f_kps, f_vis, f_center = T.flip_instance(width, kps, vis, center, COCO_FLIP)
    np.testing.assert_allclose(f_center, [width - 1 - center[0], center[1]])
    np.testing.assert_allclose(f_kps[2], [width - 1 - 130, 50])  # left eye became the right eye
    assert f_vis[2] == 1.0 and f_vis[1] == 0.0
    crop_affine = T.get_affine(f_center, scale, 15.0, INPUT_SIZE)
    m = T.compose_affine(crop_affine, T.flip_matrix(width))
    crop = T.warp(image, m, INPUT_SIZE)
    crop_kps = T.transform_points(f_kps, crop_affine)
    assert np.linalg.norm(argmax_xy(crop[..., 0].astype(np.float32)) - crop_kps[2]) <= 1.5
    # same as flipping the image first, then warping with the crop affine
    np.testing.assert_array_equal(crop, T.warp(np.ascontiguousarray(image[:, ::-1]), crop_affine, INPUT_SIZE))
    # flipping twice is the identity
    b_kps, b_vis, b_center = T.flip_instance(width, f_kps, f_vis, f_center, COCO_FLIP)
    np.testing.assert_allclose(b_kps, kps)
    np.testing.assert_array_equal(b_vis, vis)
    np.testing.assert_allclose(b_center, center)


# ---------------------------------------------------------------------------------------------------
# Random augmentations
# ---------------------------------------------------------------------------------------------------
def _person() -> tuple[np.ndarray, np.ndarray]:
    kps = np.array(
        [[100, 40], [95, 35], [105, 35], [90, 38], [110, 38], [80, 60], [120, 60], [70, 90], [130, 90],
         [65, 120], [135, 120], [88, 130], [112, 130], [85, 180], [115, 180], [84, 230], [116, 230]],
        dtype=np.float32,
    )
    return kps, np.ones(17, np.float32)


def _inside(points: np.ndarray, center: np.ndarray, scale: np.ndarray) -> bool:
    return bool(np.all(np.abs(points - center) <= scale / 2 + 1e-6))


def test_half_body_box_covers_the_chosen_half():
    spec = coco_spec()
    kps, vis = _person()
    upper, lower = list(spec.upper_body_ids), list(spec.lower_body_ids)
    for upper_prob, half in ((1.0, upper), (0.0, lower)):
        for seed in range(5):
            box = T.half_body(kps, vis, upper, lower, np.random.default_rng(seed), upper_prob=upper_prob,
                              aspect_ratio=0.75, padding=1.5)
            assert box is not None
            center, scale = box
            assert _inside(kps[half], center, scale)
            assert scale[0] / scale[1] == pytest.approx(0.75)
            other = lower if half is upper else upper
            assert not _inside(kps[other], center, scale)
    # too few visible keypoints -> None; a half lacking keypoints -> the other half
    few = vis.copy()
    few[:10] = 0
    assert T.half_body(kps, few, upper, lower, np.random.default_rng(0)) is None
    no_lower = vis.copy()
    no_lower[lower[:5]] = 0
    center, scale = T.half_body(kps, no_lower, upper, lower, np.random.default_rng(0), upper_prob=0.0)
    assert _inside(kps[upper], center, scale)


def test_random_bbox_transform_ranges_and_probabilities():
    center, scale = np.array([50.0, 60.0]), np.array([75.0, 100.0])
    c, s, r = T.random_bbox_transform(center, scale, np.random.default_rng(0), shift_prob=0, scale_prob=0,
                                      rotation_prob=0)
    np.testing.assert_allclose(c, center)
    np.testing.assert_allclose(s, scale)
    assert r == 0.0
    rng = np.random.default_rng(1)
    for _ in range(200):
        c, s, r = T.random_bbox_transform(center, scale, rng, shift_prob=1, rotation_prob=1)
        assert np.all(np.abs(c - center) <= 0.16 * scale + 1e-9)
        assert 0.5 - 1e-9 <= s[0] / scale[0] <= 1.5 + 1e-9
        assert s[0] / s[1] == pytest.approx(0.75)
        assert abs(r) <= 80.0
    t = T.truncated_normal(np.random.default_rng(2), 10000)
    assert np.abs(t).max() <= 1.0 and abs(t.mean()) < 0.05


def test_photometric_keeps_shape_and_is_seeded():
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    photo = T.Photometric()
    out = photo(image, 3)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, photo(image, 3))


def test_normalize_image():
    mean_pixel = np.round(T.IMAGENET_MEAN * 255).astype(np.uint8)
    image = np.broadcast_to(mean_pixel, (4, 5, 3)).copy()
    out = T.normalize_image(image)
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32 and out.is_contiguous()
    assert out.abs().max() < 0.01
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 0] = 255  # red in RGB
    expected = (np.array([1.0, 0.0, 0.0]) - T.IMAGENET_MEAN) / T.IMAGENET_STD
    np.testing.assert_allclose(T.normalize_image(image)[:, 0, 0].numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(T.normalize_image(image[..., ::-1].copy(), bgr=True).numpy(),
                               T.normalize_image(image).numpy())


def test_uint8_samples_normalised_in_the_model_equal_the_per_sample_numpy_path():
    """The datasets give uint8 RGB crops; the network normalises the batch (PoseModel's first step). The values
    are those of the former per-sample numpy path bit for bit (astype float32, then x scale, then + shift)."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 10, 7, 3), dtype=np.uint8)
    batch = torch.stack([T.image_to_tensor(im, bgr=True) for im in images])
    assert batch.dtype == torch.uint8 and torch.equal(batch[1, 0], torch.from_numpy(images[1, :, :, 2].copy()))
    for i, im in enumerate(images):
        chw = np.ascontiguousarray(im.transpose(2, 0, 1)[::-1]).astype(np.float32)
        chw *= T._NORM_SCALE[:, None, None]
        chw += T._NORM_SHIFT[:, None, None]
        assert np.array_equal(T.normalize_images(batch)[i].numpy(), chw)
        assert np.array_equal(T.normalize_images(batch[i]).numpy(), chw)
    floats = torch.randn(2, 3, 4, 4)
    assert T.normalize_images(floats) is floats  # already normalised (export, callers with float input)
    with pytest.raises(ValueError, match="uint8"):
        T.image_to_tensor(images[0].astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------
def test_dataset_val_shapes_and_inverse_warp():
    records = coco_records()
    ds = TopDownDataset(records, coco_spec(), StandInCodec(), train=False)
    assert len(ds) == len(records) > 0
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (3, 256, 192) and sample["image"].dtype == torch.uint8
        meta, targets = sample["meta"], sample["targets"]
        assert meta["image_id"] == records[i]["image_id"] and meta["ann_id"] == records[i]["ann_id"]
        assert meta["bbox"].shape == (4,) and meta["inv_warp"].shape == (2, 3)
        assert meta["inv_warp"].dtype == torch.float32
        assert targets["keypoint_weights"].shape == (17,)
        back = T.transform_points(targets["keypoints_px"].numpy().astype(np.float64),
                                  meta["inv_warp"].numpy().astype(np.float64))
        vis = records[i]["visible"] > 0
        # float32 matrix entries over ~600 px give ~1e-4 px of rounding
        np.testing.assert_allclose(back[vis], records[i]["keypoints"][vis], atol=1e-3)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 256, 192) and batch["meta"]["inv_warp"].shape == (2, 2, 3)


def test_dataset_train_augmentation_is_consistent_and_reproducible():
    records = coco_records()
    ds = TopDownDataset(records, coco_spec(), StandInCodec(), train=True,
                        aug={"flip_prob": 0.5, "half_body_prob": 0.5, "photometric": True}, seed=7)
    for i in range(len(ds)):
        sample = ds.get_sample(i, np.random.default_rng(i))
        assert sample["image"].shape == (3, 256, 192)
        assert torch.isfinite(sample["image"]).all()
        # inv_warp (including any flip) maps the crop keypoints onto the original keypoints, index-swapped
        back = T.transform_points(sample["targets"]["keypoints_px"].numpy().astype(np.float64),
                                  sample["meta"]["inv_warp"].numpy().astype(np.float64))
        gt = records[i]["keypoints"].astype(np.float64)
        if np.allclose(back, gt, atol=1e-2):
            continue
        np.testing.assert_allclose(back, gt[list(COCO_FLIP)], atol=1e-2)  # a flipped sample
        np.testing.assert_array_equal(sample["targets"]["keypoint_weights"].numpy(),
                                      records[i]["visible"][list(COCO_FLIP)])
    a = ds.get_sample(0, np.random.default_rng(5))
    b = ds.get_sample(0, np.random.default_rng(5))
    assert torch.equal(a["image"], b["image"])
    # the training sampler yields (index, epoch): the augmentation is a function of (seed, epoch, index)
    torch.manual_seed(0)
    first = [ds[(0, epoch)]["image"] for epoch in range(2)]
    torch.manual_seed(1)  # torch's RNG state plays no part
    again = [ds[(0, epoch)]["image"] for epoch in range(2)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], first[1])  # a new augmentation every epoch
    assert torch.equal(ds[0]["image"], first[0])  # a plain index is epoch 0


def test_dataloader_workers_reproducible_and_distinct():
    records = coco_records()[:4] * 2
    ds = TopDownDataset(records, coco_spec(), StandInCodec(), train=True, seed=0)

    def run(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, shuffle=False)
        return [b["targets"]["keypoints_px"] for b in loader]

    first, second = run(2), run(0)  # the same samples whatever the worker count
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    # indices 0 and 4 hold the same record but are augmented differently
    assert not torch.equal(first[0][0], first[2][0])


def test_dataset_errors():
    records = coco_records()
    bad = dict(records[0], image_path="/nonexistent/x.jpg")
    ds = TopDownDataset([bad], coco_spec(), StandInCodec(), train=False)
    with pytest.raises(FileNotFoundError, match=r"x\.jpg.*image_id=785"):
        ds[0]
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        AugConfig.from_mapping({"flip_probability": 0.5})
    with pytest.raises(ValueError, match="keypoints"):
        TopDownDataset([dict(records[0], keypoints=np.zeros((5, 2)))], coco_spec(), StandInCodec(), train=False)
    assert AugConfig.from_mapping({"scale_range": [0.75, 1.25]}).scale_range == (0.75, 1.25)
    assert AugConfig().min_kpts_for(17) == 9 and AugConfig().min_kpts_for(16) == 8


def test_dataset_with_real_sar_codec():
    codecs = pytest.importorskip("sar.codecs")
    if not hasattr(codecs, "build_codec"):
        pytest.skip("sar.codecs.build_codec not available yet")
    codec = codecs.build_codec({"type": "sar", "input_size": [192, 256], "heatmap_size": [48, 64], "sigma": 2})
    records = coco_records()
    ds = TopDownDataset(records, coco_spec(), codec, train=True, seed=0)
    sample = ds.get_sample(0, np.random.default_rng(0))
    assert sample["targets"]["heatmap"].shape == (17, 64, 48)
    assert sample["targets"]["keypoints_norm"].shape == (17, 2)
    val = TopDownDataset(records, coco_spec(), codec, train=False)[0]
    kps = val["targets"]["keypoints_norm"].numpy() * np.array(INPUT_SIZE)
    back = T.transform_points(kps.astype(np.float64), val["meta"]["inv_warp"].numpy().astype(np.float64))
    np.testing.assert_allclose(back, records[0]["keypoints"], atol=1e-2)
