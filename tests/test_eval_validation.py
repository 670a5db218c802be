"""Issue 9, "no silent wrong numbers": validation of predictions and ground truth in the evaluators and the COCO
reader, on the real samples in ../shared/data.

* non-finite predictions are dropped and counted (``nonfinite_predictions``), never scored as matches;
* result / metric files are strict JSON (NaN / inf -> null);
* GT ``area`` must be a finite number > 0 (derived from the bbox when absent);
* duplicate annotation / image ids are errors;
* a GT file without categories gets the person category;
* labelled GT keypoints far outside the image are made unlabelled by the reader.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.io import savemat

from sar.data.formats.coco import load_coco_images, load_coco_instances
from sar.data.formats.mpii import load_mpii_instances
from sar.data.spec import load_spec
from sar.evaluation.coco_ap import (
    METRIC_NAMES,
    CocoEvaluator,
    CrowdPoseEvaluator,
    WholeBodyEvaluator,
    build_evaluator,
)
from sar.evaluation.keypoint_error import keypoint_error, load_coco_dict, pck
from sar.evaluation.pck import MpiiEvaluator
from sar.evaluation.results import write_json_atomic, write_metrics


def _strict_loads(text: str) -> Any:
    """``json.loads`` that refuses NaN / Infinity / -Infinity."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _write(tmp_path: Path, data: Any, name: str = "gt.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))  # NaN is written as the (non-standard) NaN token, read back as nan
    return path


@pytest.fixture(scope="module")
def coco_spec() -> Any:
    return load_spec("coco")


def _perfect(gt: dict[str, Any], fields: tuple[str, ...] = ("keypoints",)) -> list[dict[str, Any]]:
    """One perfect prediction per GT person with a labelled keypoint (unlabelled ones at the box centre)."""
    preds = []
    for ann in gt["annotations"]:
        kpts = np.concatenate([np.asarray(ann[f], dtype=np.float64).reshape(-1, 3) for f in fields])
        if not (kpts[:, 2] > 0).any():
            continue
        x, y, w, h = ann["bbox"]
        kpts[kpts[:, 2] == 0, :2] = [x + w / 2, y + h / 2]
        kpts[:, 2] = 1.0
        preds.append({"image_id": ann["image_id"], "ann_id": ann["id"], "keypoints": kpts, "bbox_score": 1.0,
                      "area": float(ann.get("area", w * h))})  # fmt: skip
    return preds


def _all_nan(preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "keypoints": np.full_like(p["keypoints"], np.nan)} for p in preds]


# --------------------------------------------------------------------------------------------------------------
# 1. Non-finite predictions
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_all_nan_predictions_give_ap_zero(
    coco_file: Path,
    coco_gt: dict,
    coco_spec: Any,
    backend: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    preds = _all_nan(_perfect(coco_gt))
    ev = CocoEvaluator(coco_file, coco_spec, backend=backend)
    with caplog.at_level(logging.WARNING, logger="sar.evaluation.coco_ap"):
        metrics = ev.evaluate(preds, tmp_path)
    assert metrics["AP"] == 0.0 and metrics["AR"] == 0.0
    assert metrics["nonfinite_predictions"] == float(len(preds)) == 12.0
    assert isinstance(metrics["nonfinite_predictions"], float)
    assert _strict_loads((tmp_path / "results_keypoints.json").read_text()) == []
    assert "12" in caplog.text and "non-finite" in caplog.text


def test_nan_copies_leave_perfect_ap_and_are_counted(
    coco_file: Path, coco_gt: dict, coco_spec: Any, tmp_path: Path
) -> None:
    preds = _perfect(coco_gt)
    bad_kpt = {**preds[0], "keypoints": preds[0]["keypoints"].copy()}
    bad_kpt["keypoints"][3, 1] = np.inf
    bad_score = {**preds[1], "keypoints": preds[1]["keypoints"].copy()}
    bad_score["keypoints"][5, 2] = np.nan
    copies = [bad_kpt, bad_score, {**preds[2], "bbox_score": float("nan")}, {**preds[3], "area": -np.inf}]
    for use_nms in (True, False):
        ev = CocoEvaluator(coco_file, coco_spec, use_nms=use_nms)
        metrics = ev.evaluate([*preds, *copies], tmp_path)
        for name in METRIC_NAMES:
            assert metrics[name] == pytest.approx(1.0, abs=1e-9), name
        assert metrics["nonfinite_predictions"] == 4.0
        results = _strict_loads((tmp_path / "results_keypoints.json").read_text())
        assert len(results) == len(ev.last_results) == 12


def test_nonfinite_predictions_is_zero_when_all_finite(
    coco_file: Path, coco_gt: dict, coco_spec: Any
) -> None:
    metrics = CocoEvaluator(coco_file, coco_spec).evaluate(_perfect(coco_gt))
    assert metrics["nonfinite_predictions"] == 0.0 and isinstance(metrics["nonfinite_predictions"], float)
    assert CocoEvaluator(coco_file, coco_spec).evaluate([])["nonfinite_predictions"] == 0.0


def test_crowdpose_all_nan_predictions_give_ap_zero(shared_data: Path) -> None:
    path = shared_data / "crowdpose" / "test_crowdpose.json"
    gt = json.loads(path.read_text())
    ev = CrowdPoseEvaluator(path, load_spec("crowdpose"))
    preds = _perfect(gt)
    metrics = ev.evaluate(_all_nan(preds))
    assert metrics["AP"] == 0.0 and metrics["AR"] == 0.0
    assert metrics["nonfinite_predictions"] == float(len(preds))
    metrics = ev.evaluate([*preds, *_all_nan(preds)])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["nonfinite_predictions"] == float(len(preds))


def test_wholebody_all_nan_predictions_give_ap_zero(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "coco" / "test_coco_wholebody.json"
    gt = json.loads(path.read_text())
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    preds = _perfect(gt, fields)
    ev = WholeBodyEvaluator(path, load_spec("coco_wholebody"))
    metrics = ev.evaluate(_all_nan(preds), tmp_path)
    assert metrics["AP"] == 0.0 and metrics["AP_body"] == 0.0 and metrics["AR_wholebody"] == 0.0
    assert metrics["nonfinite_predictions"] == float(len(preds))
    assert _strict_loads((tmp_path / "results_keypoints.json").read_text()) == []
    metrics = ev.evaluate([*preds, *_all_nan(preds[:2])])
    assert metrics["AP"] == pytest.approx(1.0) and metrics["nonfinite_predictions"] == 2.0


@pytest.fixture()
def mpii_eval(shared_data: Path, tmp_path: Path) -> tuple[MpiiEvaluator, list[dict[str, Any]]]:
    """An MpiiEvaluator on the real MPII sample with a hand-made head-box file; and perfect predictions."""
    ann = shared_data / "mpii" / "test_mpii.json"
    spec = load_spec("mpii")
    records = load_mpii_instances(ann, ann.parent, spec)
    n = len(records)
    corners = np.zeros((2, 2, n))
    corners[1] = 50.0  # head box (0, 0)-(50, 50)
    gt = np.stack([r["keypoints"] for r in records]).astype(np.float64) + 1.0
    visible = np.stack([r["visible"] for r in records]).astype(np.float64)
    mat = tmp_path / "mpii_gt_val.mat"
    savemat(mat, {"headboxes_src": corners, "jnt_missing": 1.0 - visible.T,
                  "pos_gt_src": np.transpose(gt, (1, 2, 0))})  # fmt: skip
    ev = build_evaluator("mpii", ann, spec, headbox_file=mat, use_nms=True)
    preds = [{"image_id": r["image_id"], "ann_id": r["ann_id"], "bbox_score": 1.0, "area": r["area"],
              "keypoints": np.concatenate([r["keypoints"], np.ones((16, 1))], 1).astype(np.float64)}
             for r in records]  # fmt: skip
    return ev, preds


def test_mpii_nonfinite_prediction_is_a_miss(
    mpii_eval: tuple[MpiiEvaluator, list[dict[str, Any]]], tmp_path: Path
) -> None:
    ev, preds = mpii_eval
    perfect = ev.evaluate(preds)
    assert perfect["PCKh@0.5"] == 1.0 and perfect["nonfinite_predictions"] == 0.0
    bad = [*preds]
    bad[0] = {**preds[0], "keypoints": preds[0]["keypoints"].copy()}
    bad[0]["keypoints"][4, 0] = np.nan  # one non-finite coordinate: the whole prediction is a miss
    metrics = ev.evaluate(bad, tmp_path)
    expected = ev.evaluate(preds[1:])["PCKh@0.5"]  # person 0 without a prediction
    assert expected < 1.0
    assert metrics["PCKh@0.5"] == pytest.approx(expected)
    assert metrics["nonfinite_predictions"] == 1.0
    assert math.isfinite(metrics["kpt_error_px"]) and math.isfinite(metrics["PCK@0.05"])
    results = _strict_loads((tmp_path / "results_keypoints.json").read_text())
    assert [r["ann_id"] for r in results] == [p["ann_id"] for p in preds[1:]]
    all_nan = ev.evaluate(_all_nan(preds), tmp_path)
    assert all_nan["PCKh@0.5"] == 0.0 and all_nan["nonfinite_predictions"] == float(len(preds))
    assert _strict_loads((tmp_path / "results_keypoints.json").read_text()) == []


def test_keypoint_error_and_pck_skip_nonfinite_keypoints(
    coco_file: Path, coco_gt: dict, caplog: pytest.LogCaptureFixture
) -> None:
    preds = _perfect(coco_gt)
    shifted = []
    for p in preds:
        k = p["keypoints"].copy()
        k[:, :2] += [3.0, 4.0]  # error 5 px everywhere
        shifted.append({**p, "keypoints": k})
    _, count = keypoint_error(shifted, coco_file, return_count=True)
    bad = copy.deepcopy(shifted)
    ann = next(a for a in coco_gt["annotations"] if a["id"] == bad[0]["ann_id"])
    labelled = np.flatnonzero(np.asarray(ann["keypoints"]).reshape(-1, 3)[:, 2] > 0)
    bad[0]["keypoints"][labelled[:2], 0] = np.nan
    bad[0]["keypoints"][labelled[2], 1] = -np.inf
    with caplog.at_level(logging.WARNING, logger="sar.evaluation.keypoint_error"):
        mean, n = keypoint_error(bad, coco_file, return_count=True)
    assert mean == pytest.approx(5.0) and n == count - 3
    assert "3" in caplog.text and "non-finite" in caplog.text
    # PCK over the same keypoints as a GT in which the three are unlabelled
    trimmed = copy.deepcopy(coco_gt)
    trimmed_ann = next(a for a in trimmed["annotations"] if a["id"] == bad[0]["ann_id"])
    for k in labelled[:3]:
        trimmed_ann["keypoints"][3 * k + 2] = 0
    assert pck(bad, coco_file, alpha=0.05) == pytest.approx(pck(shifted, trimmed, alpha=0.05))
    assert pck(bad, coco_file, alpha=0.05) != pytest.approx(pck(shifted, coco_file, alpha=0.05))
    assert math.isnan(keypoint_error(_all_nan(preds), coco_file))
    assert math.isnan(pck(_all_nan(preds), coco_file))


# --------------------------------------------------------------------------------------------------------------
# 2. Strict JSON
# --------------------------------------------------------------------------------------------------------------
def test_write_json_atomic_writes_strict_json(tmp_path: Path) -> None:
    obj = {
        "nan": float("nan"), "inf": float("inf"), "ninf": -math.inf, "ok": 1.5,
        "np64": np.float64("nan"), "np32": np.float32("inf"), "int": np.int64(3),
        "list": [1.0, float("nan"), [np.nan, 2]], "tuple": (np.inf, 1),
        "array": np.array([1.0, np.nan, -np.inf]), "array32": np.array([[np.nan, 1.0]], dtype=np.float32),
        "nested": {"a": {"b": [float("-inf")]}},
    }  # fmt: skip
    path = write_json_atomic(obj, tmp_path / "x.json")
    data = _strict_loads(path.read_text())
    assert data == {
        "nan": None, "inf": None, "ninf": None, "ok": 1.5, "np64": None, "np32": None, "int": 3,
        "list": [1.0, None, [None, 2]], "tuple": [None, 1], "array": [1.0, None, None],
        "array32": [[None, 1.0]], "nested": {"a": {"b": [None]}},
    }  # fmt: skip
    out = write_metrics({"AP": 0.5, "kpt_error_px": float("nan")}, tmp_path)
    assert _strict_loads(out.read_text()) == {"AP": 0.5, "kpt_error_px": None}
    # plain finite content is unchanged
    write_json_atomic([{"a": [1, 2.5]}], tmp_path / "y.json")
    assert _strict_loads((tmp_path / "y.json").read_text()) == [{"a": [1, 2.5]}]


# --------------------------------------------------------------------------------------------------------------
# 3. Ground-truth area
# --------------------------------------------------------------------------------------------------------------
BAD_AREAS = [float("nan"), float("inf"), 0, -5.0, "1200", True, [10.0]]


#: What reads a COCO ground-truth file: the evaluator (scoring) and the reader (training / validation records).
GT_CONSUMERS = {
    "evaluator": lambda path, image_root, spec: CocoEvaluator(path, spec),
    "reader": lambda path, image_root, spec: load_coco_instances(path, image_root, spec),
}


@pytest.mark.parametrize("consumer", list(GT_CONSUMERS))
@pytest.mark.parametrize("area", BAD_AREAS, ids=["nan", "inf", "zero", "negative", "string", "bool", "list"])
def test_bad_gt_area_raises(
    coco_gt: dict, coco_spec: Any, coco_file: Path, tmp_path: Path, area: Any, consumer: str
) -> None:
    coco_gt["annotations"][4]["area"] = area
    ann_id = coco_gt["annotations"][4]["id"]
    path = _write(tmp_path, coco_gt)
    with pytest.raises(ValueError, match="area") as info:
        GT_CONSUMERS[consumer](path, coco_file.parent, coco_spec)
    assert str(path) in str(info.value) and str(ann_id) in str(info.value)


def test_bad_gt_area_raises_in_crowdpose_and_wholebody_evaluators(shared_data: Path, tmp_path: Path) -> None:
    crowd = json.loads((shared_data / "crowdpose" / "test_crowdpose.json").read_text())
    crowd["annotations"][1]["area"] = float("nan")
    path = _write(tmp_path, crowd, "crowd.json")
    with pytest.raises(ValueError, match=rf"crowd\.json.*{crowd['annotations'][1]['id']}.*area"):
        CrowdPoseEvaluator(path, load_spec("crowdpose"))
    wb = json.loads((shared_data / "coco" / "test_coco_wholebody.json").read_text())
    wb["annotations"][2]["area"] = 0.0
    path = _write(tmp_path, wb, "wb.json")
    with pytest.raises(ValueError, match=rf"wb\.json.*{wb['annotations'][2]['id']}.*area"):
        WholeBodyEvaluator(path, load_spec("coco_wholebody"))


def test_missing_gt_area_is_derived_from_bbox(
    coco_gt: dict, coco_spec: Any, coco_file: Path, tmp_path: Path
) -> None:
    with_area = copy.deepcopy(coco_gt)
    for ann in with_area["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    with_area["annotations"][-1]["iscrowd"] = 1  # a crowd region: COCOeval uses its area too
    without = copy.deepcopy(with_area)
    for ann in without["annotations"]:
        del ann["area"]
    preds = _perfect(with_area)
    shifted = [{**p, "keypoints": p["keypoints"] + np.array([2.0, -1.0, 0.0])} for p in preds]
    ev = CocoEvaluator(_write(tmp_path, without), coco_spec)
    reference = CocoEvaluator(with_area, coco_spec)
    assert ev.evaluate(shifted) == reference.evaluate(shifted)
    assert 0.0 < ev.evaluate(shifted)["AP"] < 1.0
    # the reader, too
    records = load_coco_instances(_write(tmp_path, without, "r.json"), coco_file.parent, coco_spec)
    for r in records:
        assert r["area"] == pytest.approx(float(r["bbox"][2] * r["bbox"][3]), rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# 4. Duplicate ids
# --------------------------------------------------------------------------------------------------------------
def _duplicate_annotation_ids(gt: dict) -> tuple[dict, list[int]]:
    anns = gt["annotations"]
    anns[5]["id"] = anns[2]["id"]
    anns[7]["id"] = anns[3]["id"]
    return gt, sorted([anns[2]["id"], anns[3]["id"]])


def test_duplicate_annotation_ids_raise(
    coco_gt: dict, coco_spec: Any, coco_file: Path, tmp_path: Path
) -> None:
    gt, dups = _duplicate_annotation_ids(coco_gt)
    path = _write(tmp_path, gt)
    preds = _perfect(json.loads(coco_file.read_text()))
    calls = {
        "reader": lambda: load_coco_instances(path, coco_file.parent, coco_spec),
        "evaluator": lambda: CocoEvaluator(path, coco_spec),
        "keypoint_error": lambda: keypoint_error(preds, path),
        "pck": lambda: pck(preds, path, 0.05),
        "load_coco_dict": lambda: load_coco_dict(path, validate=True),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="duplicate annotation id") as info:
            call()
        message = str(info.value)
        assert str(path) in message, name
        assert all(str(d) in message for d in dups), name
        assert "2 " in message, name  # the number of duplicated ids


def test_duplicate_annotation_ids_raise_for_crowdpose_and_wholebody(
    shared_data: Path, tmp_path: Path
) -> None:
    crowd = json.loads((shared_data / "crowdpose" / "test_crowdpose.json").read_text())
    crowd["annotations"][1]["id"] = crowd["annotations"][0]["id"]
    with pytest.raises(
        ValueError, match=rf"crowd\.json.*duplicate annotation id.*{crowd['annotations'][0]['id']}"
    ):
        CrowdPoseEvaluator(_write(tmp_path, crowd, "crowd.json"), load_spec("crowdpose"))
    wb = json.loads((shared_data / "coco" / "test_coco_wholebody.json").read_text())
    wb["annotations"][3]["id"] = wb["annotations"][1]["id"]
    with pytest.raises(ValueError, match=rf"wb\.json.*duplicate annotation id.*{wb['annotations'][1]['id']}"):
        WholeBodyEvaluator(_write(tmp_path, wb, "wb.json"), load_spec("coco_wholebody"))


def test_duplicate_image_ids_raise(coco_gt: dict, coco_spec: Any, coco_file: Path, tmp_path: Path) -> None:
    coco_gt["images"][2]["id"] = coco_gt["images"][0]["id"]
    dup = coco_gt["images"][0]["id"]
    path = _write(tmp_path, coco_gt)
    det_file = coco_file.parent / "test_coco_det_AP_H_56.json"
    calls = {
        "images": lambda: load_coco_images(path),
        "reader": lambda: load_coco_instances(path, coco_file.parent, coco_spec),
        "reader_det": lambda: load_coco_instances(path, coco_file.parent, coco_spec, bbox_file=det_file),
        "evaluator": lambda: CocoEvaluator(path, coco_spec),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"duplicate image id.*{dup}") as info:
            call()
        assert str(path) in str(info.value), name


# --------------------------------------------------------------------------------------------------------------
# 5. Missing categories
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_categories_get_the_person_category(
    coco_gt: dict, coco_spec: Any, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    if how == "absent":
        del coco_gt["categories"]
    else:
        coco_gt["categories"] = []
    path = _write(tmp_path, coco_gt)
    with caplog.at_level(logging.INFO, logger="sar.evaluation.coco_ap"):
        ev = CocoEvaluator(path, coco_spec)
    assert "categor" in caplog.text and str(path) in caplog.text
    assert ev.category_id == 1
    metrics = ev.evaluate(_perfect(coco_gt))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    cats = ev._gt_dict["categories"]
    assert cats == [{"id": 1, "name": "person", "supercategory": "person",
                     "keypoints": list(coco_spec.keypoint_names), "skeleton": []}]  # fmt: skip


def test_categories_not_a_list_raise(coco_gt: dict, coco_spec: Any, tmp_path: Path) -> None:
    coco_gt["categories"] = {"id": 1, "name": "person"}
    path = _write(tmp_path, coco_gt)
    with pytest.raises(ValueError, match="categories") as info:
        CocoEvaluator(path, coco_spec)
    assert str(path) in str(info.value)


def test_wholebody_without_categories(shared_data: Path) -> None:
    gt = json.loads((shared_data / "coco" / "test_coco_wholebody.json").read_text())
    del gt["categories"]
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    metrics = WholeBodyEvaluator(gt, load_spec("coco_wholebody")).evaluate(_perfect(gt, fields))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP_face"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------------
# 6. Labelled keypoints far outside the image (reader)
# --------------------------------------------------------------------------------------------------------------
def test_keypoints_far_outside_the_image_are_unlabelled(
    coco_gt: dict, coco_spec: Any, coco_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco_gt["images"]}
    anns = coco_gt["annotations"]
    first = anns[0]
    w, h = sizes[first["image_id"]]
    kpts = first["keypoints"]
    labelled = [k for k in range(17) if kpts[3 * k + 2] > 0]
    a, b, c, d = labelled[:4]
    kpts[3 * a] = 1.5 * w + 1.0  # outside on the right
    kpts[3 * b + 1] = -0.5 * h - 0.1  # outside above
    kpts[3 * c] = 1.5 * w  # on the limit: kept
    kpts[3 * d + 1] = 1.5 * h  # on the limit: kept
    # an annotation whose only labelled keypoint is far outside is then below min_keypoints
    lone = next(x for x in anns[1:] if x["num_keypoints"] > 0)
    lw = sizes[lone["image_id"]][0]
    lone["keypoints"] = [0] * 51
    lone["keypoints"][0:3] = [-0.6 * lw, 10, 2]
    path = _write(tmp_path, coco_gt)
    with caplog.at_level(logging.INFO, logger="sar.data.formats.coco"):
        records = load_coco_instances(path, coco_file.parent, coco_spec)
    assert len(records) == 11 and lone["id"] not in {r["ann_id"] for r in records}
    rec = next(r for r in records if r["ann_id"] == first["id"])
    assert rec["visible"][a] == 0 and rec["visible"][b] == 0
    assert rec["visible"][c] == 1 and rec["visible"][d] == 1
    assert rec["visible"].sum() == len(labelled) - 2
    assert "3 labelled keypoints outside" in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "3" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()
    # the real sample has no such keypoint: no warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sar.data.formats.coco"):
        load_coco_instances(coco_file, coco_file.parent, coco_spec)
    assert "0 labelled keypoints outside" in caplog.text
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------------------------------
# 7. Empty / degenerate detection files
# --------------------------------------------------------------------------------------------------------------
def test_empty_or_degenerate_detection_files_give_an_empty_list(
    coco_file: Path, coco_spec: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = _write(tmp_path, [], "empty.json")
    degenerate = _write(tmp_path, [{"image_id": 785, "category_id": 1, "bbox": [1, 2, 0, 5], "score": 0.9},
                                   {"image_id": 785, "category_id": 1, "bbox": [1, 2, 5, -1], "score": 0.9}],
                        "degenerate.json")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sar.data.formats.coco"):
        assert load_coco_instances(coco_file, coco_file.parent, coco_spec, bbox_file=empty) == []
        assert load_coco_instances(coco_file, coco_file.parent, coco_spec, bbox_file=degenerate) == []
    assert "2 empty boxes" in caplog.text
