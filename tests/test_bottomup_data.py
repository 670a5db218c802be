"""Multi-person samples: records of the real COCO sample, the whole-image warp, augmentation, the loss mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar.data import transforms as T
from sar.data.bottomup import BottomUpAug, BottomUpDataset, dataset_augmentation, ignore_mask, input_warp
from sar.data.formats.coco import load_coco_people
from sar.data.spec import load_spec

SPEC = load_spec("coco")


class RecordingCodec:
    """Stands in for a multi-person codec: records what the dataset hands it."""

    def __init__(self, size: int = 128, stride: int = 4) -> None:
        self.input_size = (size, size)
        self.heatmap_size = (size // stride, size // stride)
        self.calls: list[tuple] = []

    def encode(self, keypoints, visible, areas, mask):
        self.calls.append((keypoints, visible, areas, mask))
        return {"mask": mask}


@pytest.fixture(scope="module")
def coco_records(shared_data: Path) -> list[dict]:
    return load_coco_people(shared_data / "coco" / "test_coco.json", shared_data / "coco", SPEC)


def test_records_group_every_person_of_an_image(coco_records: list[dict]) -> None:
    by_id = {r["image_id"]: r for r in coco_records}
    assert {k: len(v["areas"]) for k, v in by_id.items()} == {785: 1, 40083: 2, 196141: 4, 197388: 5}
    # the two images with a person without labelled keypoints keep it as an ignore region
    assert {k: len(v["ignore"]) for k, v in by_id.items()} == {785: 0, 40083: 1, 196141: 1, 197388: 0}
    r = by_id[197388]
    assert r["keypoints"].shape == (5, 17, 2) and r["visible"].shape == (5, 17) and r["boxes"].shape == (5, 4)


def test_unaugmented_sample_round_trips_to_image_pixels(coco_records: list[dict]) -> None:
    codec = RecordingCodec(size=128)
    ds = BottomUpDataset(coco_records, SPEC, codec, train=False)
    for i, record in enumerate(coco_records):
        sample = ds[i]
        points, visible, areas, mask = codec.calls[-1]
        inv = sample["meta"]["inv_warp"].numpy().astype(np.float64)
        vis = record["visible"] > 0
        back = T.transform_points(points.astype(np.float64), inv)
        np.testing.assert_allclose(back[vis], record["keypoints"][vis], atol=1e-3)
        scale = 128 / max(record["width"], record["height"])
        np.testing.assert_allclose(areas, record["areas"] * scale**2, rtol=1e-5)
        assert sample["image"].shape == (3, 128, 128) and mask.shape == (32, 32)
        assert np.array_equal(visible > 0, vis)  # unaugmented: every labelled keypoint stays inside


def test_render_scale_renders_larger_and_maps_back(coco_records: list[dict]) -> None:
    """``render_scale`` 1.5 (the largest test scale): a 192 px image whose pixel centres are the 128 px input's
    scaled about the pixel edges (x -> 1.5 (x + 0.5) - 0.5); ``inv_warp`` maps its pixels to the image; the
    targets stay at 128. Training sets refuse it."""
    codec = RecordingCodec(size=128)
    plain = BottomUpDataset(coco_records, SPEC, codec, train=False)
    big = BottomUpDataset(coco_records, SPEC, codec, train=False, render_scale=1.5)
    for i, record in enumerate(coco_records):
        p_plain = plain[i]
        points = codec.calls[-1][0]
        sample = big[i]
        np.testing.assert_allclose(codec.calls[-1][0], points)
        assert sample["image"].shape == (3, 192, 192) and p_plain["image"].shape == (3, 128, 128)
        inv = sample["meta"]["inv_warp"].numpy().astype(np.float64)
        vis = record["visible"] > 0
        back = T.transform_points(1.5 * (points.astype(np.float64) + 0.5) - 0.5, inv)
        np.testing.assert_allclose(back[vis], record["keypoints"][vis], atol=1e-3)
    with pytest.raises(ValueError, match="render_scale"):
        BottomUpDataset(coco_records, SPEC, codec, train=True, render_scale=1.5)


def test_mask_zeroes_the_ignored_regions(coco_records: list[dict]) -> None:
    codec = RecordingCodec(size=256)
    ds = BottomUpDataset(coco_records, SPEC, codec, train=False)
    index = next(i for i, r in enumerate(coco_records) if r["image_id"] == 40083)
    ds[index]
    mask = codec.calls[-1][3]
    record = coco_records[index]
    full = ignore_mask(record["ignore"], record["width"], record["height"])
    expected = full.sum() * (256 / max(record["width"], record["height"]) / 4) ** 2  # cells the region covers
    assert expected <= (mask == 0).sum() <= 2 * expected + 16  # every touched cell is ignored (its border too)
    assert set(np.unique(mask)) <= {0.0, 1.0}


def test_training_flip_swaps_left_and_right_and_mirrors() -> None:
    record = {"image_path": "", "image_id": 1, "width": 100, "height": 100, "ignore": [],
              "keypoints": np.zeros((1, 17, 2), np.float32), "visible": np.ones((1, 17), np.float32),
              "areas": np.array([400.0], np.float32), "boxes": np.zeros((1, 4), np.float32)}
    record["keypoints"][0, :, 0] = np.arange(17) + 10  # x encodes the index
    record["keypoints"][0, :, 1] = 50
    ds = BottomUpDataset([record], SPEC, RecordingCodec(size=100, stride=4), train=True,
                         aug=BottomUpAug(flip_prob=1.0, rotation=0.0, scale_range=(1.0, 1.0), translation=0.0))
    matrix, flipped = ds.warp_for(record, np.random.default_rng(0))
    assert flipped
    expected = T.transform_points(record["keypoints"][0][list(SPEC.flip_indices)], matrix)
    # keypoint k of the flipped sample is the mirrored flip_indices[k]: its x is 99 - (10 + flip_indices[k])
    np.testing.assert_allclose(expected[:, 0], 99 - (10 + np.asarray(SPEC.flip_indices)), atol=1e-6)


def test_input_warp_fits_the_longer_side_and_centres() -> None:
    m = input_warp(200, 100, 64)
    np.testing.assert_allclose(T.transform_points(np.array([[99.5, 49.5]]), m), [[31.5, 31.5]], atol=1e-9)
    np.testing.assert_allclose(T.transform_points(np.array([[-0.5, 49.5], [199.5, 49.5]]), m)[:, 0], [-0.5, 63.5],
                               atol=1e-9)


def test_unknown_augmentation_key_is_named() -> None:
    with pytest.raises(ValueError, match="unknown keys \\['shear'\\]"):
        BottomUpAug.from_mapping({"shear": 1.0})



def test_dataset_augmentation_block_overrides_the_task_and_drops_top_down_settings() -> None:
    """A dataset's own augmentation block (the embedded default has one) overrides task.augmentation key by key;
    top-down settings it inherits (half-body, box shift) are left out; a key neither augmentation knows is named."""
    task = {"flip_prob": 0.5, "rotation": 30.0, "scale_range": [0.75, 1.5], "translation": 0.078125}
    block = {"rotation": 0.0, "scale_range": [1.0, 1.0], "half_body_prob": 0.3, "shift_factor": 0.16}
    merged = {**task, **dataset_augmentation(block, "synthetic_crowd")}
    assert merged == {"flip_prob": 0.5, "rotation": 0.0, "scale_range": [1.0, 1.0], "translation": 0.078125}
    assert BottomUpAug.from_mapping(merged).scale_range == (1.0, 1.0)
    assert dataset_augmentation(None) == {}
    with pytest.raises(ValueError, match="dataset mine: augmentation: unknown keys \\['shear'\\]"):
        dataset_augmentation({"shear": 1.0}, "mine")

def test_synthetic_crowd_regions_are_written_and_masked(tmp_path: Path) -> None:
    """With `crowd`, some images carry one iscrowd annotation (a dense group of small people, no keypoints); the
    multi-person sample zeroes its cells in the loss mask; without it the data and the cache hash are unchanged."""
    import json

    from sar.data.synthetic import SyntheticConfig, config_hash, generate

    assert config_hash(SyntheticConfig()) == config_hash(SyntheticConfig(crowd=0.0)) == "1eea457c293d"
    root = generate(SyntheticConfig(seed=2, num_train=8, num_val=2, crowd=1.0, min_people=1, max_people=2),
                    tmp_path / "ds", num_workers=1)
    data = json.loads((root / "annotations" / "person_keypoints_train.json").read_text())
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowds) == 8 and all(a["num_keypoints"] == 0 and a["segmentation"] and a["area"] > 0 for a in crowds)
    records = load_coco_people(root / "annotations" / "person_keypoints_train.json", root / "images" / "train", SPEC)
    assert all(r["num_crowd"] == 1 for r in records)
    codec = RecordingCodec(size=256)
    BottomUpDataset(records, SPEC, codec, train=False)[0]
    mask = codec.calls[-1][3]
    # 256x256 images on a 256 input: the warp is the identity; a stride-4 cell is ignored when any pixel is crowd
    covered = ignore_mask(records[0]["ignore"], 256, 256).reshape(64, 4, 64, 4).max(axis=(1, 3))
    assert covered.sum() > 0 and np.array_equal(mask == 0, covered > 0)
