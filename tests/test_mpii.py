"""MPII reader (real sample shared/data/mpii/test_mpii.json), head-box .mat reader and the .mat -> json converter."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import savemat

from sar.data.formats.mpii import load_mpii_headboxes, load_mpii_instances, mpii_bbox, mpii_image_ids
from sar.data.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_spec("mpii")


@pytest.fixture(scope="module")
def mpii_file(shared_data: Path) -> Path:
    path = shared_data / "mpii" / "test_mpii.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_reads_real_sample(mpii_file: Path, spec: Any) -> None:
    raw = json.loads(mpii_file.read_text())
    records = load_mpii_instances(mpii_file, mpii_file.parent, spec)
    assert len(records) == 5
    for i, (rec, ann) in enumerate(zip(records, raw, strict=True)):
        assert rec["ann_id"] == i
        assert rec["image_id"] == int(ann["image"].split(".")[0])
        assert Path(rec["image_path"]).is_file()
        assert rec["bbox_score"] == 1.0
        assert rec["keypoints"].dtype == np.float32 and rec["keypoints"].shape == (16, 2)
        assert rec["visible"].dtype == np.float32 and rec["bbox"].dtype == np.float32
        # box: centre (x - 1, y + 15 s - 1), square side 200 s
        side = 200.0 * ann["scale"]
        cx, cy = ann["center"][0] - 1.0, ann["center"][1] + 15.0 * ann["scale"] - 1.0
        assert rec["bbox"] == pytest.approx([cx - side / 2, cy - side / 2, side, side], rel=1e-6)
        assert rec["area"] == pytest.approx(side * side)
        vis = np.asarray(ann["joints_vis"]) > 0
        assert np.array_equal(rec["visible"] > 0, vis)
        assert rec["keypoints"][vis] == pytest.approx(np.asarray(ann["joints"])[vis] - 1.0)
        assert np.all(rec["keypoints"][~vis] == 0.0)
    # two persons have both ankles (0, 5) missing
    missing = [r for r in records if r["visible"][0] == 0]
    assert len(missing) == 2 and all(r["visible"][5] == 0 for r in missing)
    # first record, by hand: centre (966, 340), scale 4.718488
    s = 4.718488
    assert records[0]["bbox"] == pytest.approx([965.0 - 100 * s, 339.0 + 15 * s - 100 * s, 200 * s, 200 * s])


def test_missing_joint_placeholder_is_invisible(tmp_path: Path, spec: Any) -> None:
    joints = [[10.0 + j, 20.0 + j] for j in range(16)]
    joints[3] = [-1.0, -1.0]
    rec = {
        "image": "000000001.jpg",
        "center": [50, 60],
        "scale": 1.0,
        "joints": joints,
        "joints_vis": [1] * 16,
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps([rec]))
    (out,) = load_mpii_instances(path, tmp_path, spec)
    assert out["visible"][3] == 0 and out["visible"].sum() == 15
    assert out["keypoints"][0] == pytest.approx([9.0, 19.0])


def test_image_ids() -> None:
    assert mpii_image_ids(["015601864.jpg", "000000001.jpg"]) == {
        "015601864.jpg": 15601864,
        "000000001.jpg": 1,
    }
    assert mpii_image_ids(["b.jpg", "a.jpg", "b.jpg"]) == {"a.jpg": 0, "b.jpg": 1}
    assert mpii_bbox([101.0, 201.0], 0.5) == pytest.approx([50.0, 157.5, 100.0, 100.0])
    assert mpii_bbox([-1.0, 201.0], 0.5) == pytest.approx([-52.0, 150.0, 100.0, 100.0])  # no shift


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.pop("scale"), "missing field"),
        (lambda r: r.update(scale=-1.0), "scale"),
        (lambda r: r.update(center=[1.0]), "center"),
        (lambda r: r.update(joints=r["joints"][:15]), "joints"),
        (lambda r: r.update(joints_vis="x"), "joints"),
        (lambda r: r.update(image=3), "image"),
    ],
)
def test_malformed_records_name_file_and_index(tmp_path: Path, spec: Any, mutate: Any, match: str) -> None:
    good = {
        "image": "1.jpg",
        "center": [50, 60],
        "scale": 1.0,
        "joints": [[1.0, 2.0]] * 16,
        "joints_vis": [1] * 16,
    }
    bad = json.loads(json.dumps(good))
    mutate(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(ValueError, match=match) as err:
        load_mpii_instances(path, tmp_path, spec)
    assert "bad.json" in str(err.value) and "record #1" in str(err.value)


def test_rejects_non_list_and_wrong_spec(tmp_path: Path, spec: Any) -> None:
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="list"):
        load_mpii_instances(path, tmp_path, spec)
    with pytest.raises(ValueError, match="16 joints"):
        load_mpii_instances(path, tmp_path, load_spec("coco"))


def test_headboxes_mat(tmp_path: Path) -> None:
    n = 3
    rng = np.random.default_rng(0)
    headboxes_src = np.zeros((2, 2, n))
    headboxes_src[0] = [[10, 20, 30], [5, 6, 7]]  # top-left x (row 0), y (row 1)
    headboxes_src[1] = [[13, 26, 30], [9, 14, 17]]  # bottom-right: sizes 5, 10, 10
    jnt_missing = np.zeros((16, n))
    jnt_missing[6, 1] = 1
    pos_gt_src = rng.uniform(0, 100, size=(16, 2, n))
    path = tmp_path / "mpii_gt_val.mat"
    savemat(path, {"headboxes_src": headboxes_src, "jnt_missing": jnt_missing, "pos_gt_src": pos_gt_src})
    out = load_mpii_headboxes(path)
    assert out["headbox_sizes"] == pytest.approx([5.0, 10.0, 10.0])
    assert out["headboxes"].shape == (3, 2, 2) and out["headboxes"][1, 1] == pytest.approx([26, 14])
    assert out["visible"].shape == (3, 16) and out["visible"][1, 6] == 0 and out["visible"].sum() == 47
    assert out["gt"].shape == (3, 16, 2) and out["gt"][2, 4] == pytest.approx(pos_gt_src[4, :, 2])
    savemat(tmp_path / "bad.mat", {"headboxes_src": headboxes_src, "jnt_missing": jnt_missing[:15]})
    with pytest.raises(ValueError, match="bad.mat"):
        load_mpii_headboxes(tmp_path / "bad.mat")


# -- converter ----------------------------------------------------------------------------------------------------
def _converter() -> Any:
    spec_ = importlib.util.spec_from_file_location(
        "mpii_mat_to_json", REPO / "scripts" / "mpii_mat_to_json.py"
    )
    assert spec_ is not None and spec_.loader is not None
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


def _struct_array(rows: list[dict[str, Any]], fields: list[str]) -> np.ndarray:
    """A MATLAB struct array for savemat: a (1, n) structured array with object fields."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row.get(f, np.zeros((0, 0)))
    return arr


def test_converter_on_synthetic_release(tmp_path: Path, spec: Any) -> None:
    conv = _converter()
    pts = [
        {"id": j, "x": 100.0 + j, "y": 200.0 + 2 * j, "is_visible": 1} for j in range(16) if j not in (0, 5)
    ]
    point_array = _struct_array(pts, ["id", "x", "y", "is_visible"])
    person = {
        "x1": 110.0, "y1": 90.0, "x2": 130.0, "y2": 120.0,
        "annopoints": {"point": point_array}, "scale": 2.5, "objpos": {"x": 300.0, "y": 250.0},
    }  # fmt: skip
    one_point = {"x1": 1.0, "y1": 1.0, "x2": 2.0, "y2": 2.0,
                 "annopoints": {"point": {"id": 9, "x": 7.0, "y": 8.0, "is_visible": 0}},
                 "scale": 1.0, "objpos": {"x": 5.0, "y": 6.0}}  # fmt: skip
    no_joints = {"scale": 1.0, "objpos": {"x": 5.0, "y": 6.0}}
    rect_fields = ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"]
    annolist = _struct_array(
        [
            {"image": {"name": "000000001.jpg"}, "annorect": _struct_array([person, no_joints], rect_fields)},
            {"image": {"name": "000000002.jpg"}, "annorect": _struct_array([one_point], rect_fields)},
            {"image": {"name": "000000003.jpg"}, "annorect": _struct_array([person], rect_fields)},
        ],
        ["image", "annorect"],
    )
    mat = tmp_path / "mpii_human_pose_v1_u12_1.mat"
    savemat(mat, {"RELEASE": {"annolist": annolist, "img_train": np.array([[1, 1, 0]])}})

    people = conv.convert(str(mat), "train")
    assert [p["image"] for p in people] == ["000000001.jpg", "000000002.jpg"]
    first = people[0]
    assert first["center"] == [300.0, 250.0] and first["scale"] == 2.5
    assert first["headbox"] == [110.0, 90.0, 130.0, 120.0]
    assert first["joints_vis"] == [0, 1, 1, 1, 1, 0] + [1] * 10
    assert first["joints"][0] == [-1.0, -1.0] and first["joints"][7] == [107.0, 214.0]
    second = people[1]
    assert second["joints_vis"] == [0] * 9 + [1] + [0] * 6 and second["joints"][9] == [7.0, 8.0]
    assert [p["image"] for p in conv.convert(str(mat), "test")] == ["000000003.jpg"]
    assert len(conv.convert(str(mat), "all")) == 3

    out = tmp_path / "mpii_train.json"
    conv.main([str(mat), str(out)])
    records = load_mpii_instances(out, tmp_path, spec)  # the reader accepts the converter's output
    assert len(records) == 2 and records[0]["image_id"] == 1
    assert records[0]["keypoints"][7] == pytest.approx([106.0, 213.0])
