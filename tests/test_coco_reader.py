"""COCO reader on the real samples in ../shared/data (GT, detections, whole-body, malformed input)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sar.data.formats.coco import WHOLEBODY_KEYPOINT_FIELDS, load_coco_images, load_coco_instances
from sar.data.spec import load_spec

RECORD_KEYS = {"image_path", "image_id", "ann_id", "bbox", "bbox_score", "area", "keypoints", "visible"}


@pytest.fixture()
def coco_dir(shared_data: Path) -> Path:
    return shared_data / "coco"


def test_gt_mode(coco_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sar.data.formats.coco"):
        records = load_coco_instances(coco_dir / "test_coco.json", coco_dir, load_spec("coco"))
    assert len(records) == 12  # 14 persons, 2 without keypoints
    assert sum(float(r["visible"].sum()) for r in records) == 181
    assert "2 with < 1 keypoints" in caplog.text
    for r in records:
        assert set(r) == RECORD_KEYS
        assert r["keypoints"].shape == (17, 2) and r["keypoints"].dtype == np.float32
        assert r["visible"].shape == (17,) and r["visible"].dtype == np.float32
        assert r["bbox"].shape == (4,) and r["bbox"].dtype == np.float32
        assert r["bbox_score"] == 1.0 and r["ann_id"] > 0
        assert Path(r["image_path"]).is_file()
    first = records[0]
    assert first["ann_id"] == 442619 and first["image_id"] == 785
    np.testing.assert_allclose(first["bbox"], [280.79, 44.73, 218.7, 346.68], rtol=1e-6)
    np.testing.assert_array_equal(first["keypoints"][0], [367, 81])
    assert first["area"] == pytest.approx(27789.11055)


def test_gt_mode_min_keypoints(coco_dir: Path) -> None:
    spec = load_spec("coco")
    ann = json.loads((coco_dir / "test_coco.json").read_text())
    assert len(load_coco_instances(coco_dir / "test_coco.json", coco_dir, spec, min_keypoints=0)) == 14
    expected = sum(a["num_keypoints"] >= 15 for a in ann["annotations"])
    assert len(load_coco_instances(coco_dir / "test_coco.json", coco_dir, spec, min_keypoints=15)) == expected


def test_gt_bbox_clipped_and_crowd_skipped(coco_dir: Path, tmp_path: Path) -> None:
    data = json.loads((coco_dir / "test_coco.json").read_text())
    width = next(i["width"] for i in data["images"] if i["id"] == 785)
    first = data["annotations"][0]  # image 785
    first["bbox"] = [-10.0, 5.0, width + 50.0, 20.0]
    data["annotations"][1]["iscrowd"] = 1
    data["annotations"][2]["bbox"] = [width + 5.0, 0.0, 10.0, 10.0]  # fully outside
    path = tmp_path / "clip.json"
    path.write_text(json.dumps(data))
    records = load_coco_instances(path, coco_dir, load_spec("coco"))
    assert len(records) == 10
    np.testing.assert_allclose(records[0]["bbox"], [0.0, 5.0, width, 20.0])


def test_detection_mode(coco_dir: Path) -> None:
    spec = load_spec("coco")
    det_file = coco_dir / "test_coco_det_AP_H_56.json"
    detections = json.loads(det_file.read_text())
    records = load_coco_instances(coco_dir / "test_coco.json", coco_dir, spec, bbox_file=det_file)
    assert len(records) == len(detections) == 118
    expected = sum(d["category_id"] == 1 and d["score"] >= 0.5 for d in detections)
    high = load_coco_instances(
        coco_dir / "test_coco.json", coco_dir, spec, bbox_file=det_file, det_score_thr=0.5
    )
    assert len(high) == expected < 118
    for r, d in zip(records, detections, strict=True):
        assert set(r) == RECORD_KEYS
        assert r["ann_id"] == -1 and r["image_id"] == d["image_id"]
        assert r["bbox_score"] == pytest.approx(d["score"])
        assert r["area"] == pytest.approx(d["bbox"][2] * d["bbox"][3])
        assert not r["keypoints"].any() and not r["visible"].any()
        assert r["keypoints"].shape == (17, 2)


def test_detection_unknown_image_raises(coco_dir: Path, tmp_path: Path) -> None:
    det_file = tmp_path / "dets.json"
    det_file.write_text(
        json.dumps([{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1}])
    )
    with pytest.raises(ValueError, match="123456789") as info:
        load_coco_instances(coco_dir / "test_coco.json", coco_dir, load_spec("coco"), bbox_file=det_file)
    assert str(det_file) in str(info.value)


def test_wholebody(coco_dir: Path) -> None:
    spec = load_spec("coco_wholebody")
    ann_file = coco_dir / "test_coco_wholebody.json"
    records = load_coco_instances(ann_file, coco_dir, spec)
    explicit = load_coco_instances(ann_file, coco_dir, spec, keypoint_fields=WHOLEBODY_KEYPOINT_FIELDS)
    assert len(records) == len(explicit) == 12
    ann = {a["id"]: a for a in json.loads(ann_file.read_text())["annotations"]}
    for r, e in zip(records, explicit, strict=True):
        assert r["keypoints"].shape == (133, 2) and r["visible"].shape == (133,)
        np.testing.assert_array_equal(r["keypoints"], e["keypoints"])
        a = ann[r["ann_id"]]
        # concatenation order: body, foot, face, left hand, right hand
        for field, part in zip(WHOLEBODY_KEYPOINT_FIELDS, spec.parts.values(), strict=True):
            triplets = np.asarray(a[field], dtype=np.float32).reshape(-1, 3)
            np.testing.assert_array_equal(r["keypoints"][list(part)], triplets[:, :2])
            np.testing.assert_array_equal(r["visible"][list(part)], triplets[:, 2] > 0)


def test_body_fields_with_wholebody_spec_raise(coco_dir: Path) -> None:
    with pytest.raises(ValueError, match="annotation id 442619"):
        load_coco_instances(
            coco_dir / "test_coco.json", coco_dir, load_spec("coco_wholebody"), keypoint_fields=("keypoints",)
        )


def test_broken_annotation_names_file_and_id(coco_dir: Path, tmp_path: Path) -> None:
    data = json.loads((coco_dir / "test_coco.json").read_text())
    broken = data["annotations"][3]
    broken["keypoints"] = broken["keypoints"][:-3]  # 16 keypoints instead of 17
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        load_coco_instances(path, coco_dir, load_spec("coco"))
    message = str(info.value)
    assert str(path) in message and str(broken["id"]) in message


def test_load_coco_images(coco_dir: Path) -> None:
    images = load_coco_images(coco_dir / "test_coco.json")
    assert sorted(images) == [785, 40083, 196141, 197388]
    assert images[785] == {"file_name": "000000000785.jpg", "width": 640, "height": 425}


@pytest.mark.parametrize(
    ("folder", "ann", "spec", "count", "labelled"),
    [
        ("crowdpose", "test_crowdpose.json", "crowdpose", 4, 47),
        ("ochuman", "test_ochuman.json", "ochuman", 5, 73),
    ],
)
def test_other_coco_style_sets(
    shared_data: Path, folder: str, ann: str, spec: str, count: int, labelled: int
) -> None:
    records = load_coco_instances(shared_data / folder / ann, shared_data / folder, load_spec(spec))
    assert len(records) == count
    assert sum(float(r["visible"].sum()) for r in records) == labelled


def test_truncated_json_is_named_by_every_reader(tmp_path: Path, shared_data: Path) -> None:
    """A cut-off annotation file gives a ValueError naming it, from the readers and from the evaluators'
    loaders alike (not a bare JSONDecodeError)."""
    from sar.data.formats.mpii import load_mpii_instances
    from sar.evaluation.keypoint_error import load_coco_dict

    text = (shared_data / "coco" / "test_coco.json").read_text()
    broken = tmp_path / "cut.json"
    broken.write_text(text[: len(text) // 2])
    for load in (load_coco_images, load_coco_dict,
                 lambda f: load_coco_instances(f, tmp_path, load_spec("coco")),
                 lambda f: load_mpii_instances(f, tmp_path, load_spec("mpii"))):
        with pytest.raises(ValueError, match=r"cut\.json: not valid JSON"):
            load(broken)
