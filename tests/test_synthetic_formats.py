"""The synthetic writers of the other benchmarks (``sar.data.synthetic.formats``): the real readers load them with
the expected counts, the derived points are consistent, perfect predictions score perfectly, and every dataset
config defaults to its synthetic version."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sar.data import synthetic as syn
from sar.data.datamodule import resolve_dataset_root
from sar.data.formats.coco import load_coco_instances
from sar.data.formats.mpii import load_mpii_headboxes, load_mpii_instances
from sar.data.spec import load_spec
from sar.data.synthetic import SyntheticConfig, ensure_synthetic
from sar.data.synthetic.config import image_rng
from sar.data.synthetic.figure import EXTRA_FACE, figure_extras
from sar.data.synthetic.formats import CROWDPOSE_NAMES, crowd_index
from sar.evaluation.coco_ap import CrowdPoseEvaluator, WholeBodyEvaluator, build_evaluator
from sar.evaluation.pck import SC_BIAS, pckh_from_mat

CONF = Path(__file__).resolve().parents[1] / "conf"
SMALL = {"seed": 1, "num_train": 5, "num_val": 4}


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("syn_formats")


def _make(cache: Path, fmt: str, **kw: object) -> tuple[SyntheticConfig, Path]:
    cfg = SyntheticConfig(**{**SMALL, **kw})
    return cfg, ensure_synthetic(cfg, cache, num_workers=1, fmt=fmt)


# ------------------------------------------------------------------------------------------ COCO-WholeBody
def test_wholebody_files_and_reader(cache: Path) -> None:
    cfg, root = _make(cache, "coco_wholebody")
    assert root.name.startswith("coco_wholebody_") and (root / syn.COMPLETE_MARKER).is_file()
    spec = load_spec("coco_wholebody")
    for split, n in (("train", cfg.num_train), ("val", cfg.num_val)):
        data = _json(root / "annotations" / f"coco_wholebody_{split}_v1.0.json")
        assert len(data["images"]) == n == len(list((root / f"{split}2017").glob("*.jpg")))
        sizes = {"keypoints": 17, "foot_kpts": 6, "face_kpts": 68, "lefthand_kpts": 21, "righthand_kpts": 21}
        for a in data["annotations"]:
            for field, k in sizes.items():
                assert len(a[field]) == 3 * k, field
            for part, field in (("face", "face_kpts"), ("lefthand", "lefthand_kpts"), ("righthand", "righthand_kpts")):
                labelled = bool(np.any(np.asarray(a[field][2::3]) > 0))
                assert a[f"{part}_valid"] is labelled
                assert (a[f"{part}_box"] == [0.0, 0.0, 0.0, 0.0]) is not labelled
            assert a["foot_valid"] is bool(np.any(np.asarray(a["foot_kpts"][2::3]) > 0))
        kept = [a for a in data["annotations"]
                if sum(int(v > 0) for f in sizes for v in a[f][2::3]) >= 1 and a["bbox"][2] > 0]
        records = load_coco_instances(root / "annotations" / f"coco_wholebody_{split}_v1.0.json",
                                      root / f"{split}2017", spec)
        assert len(records) == len(kept) > 0
        assert records[0]["keypoints"].shape == (133, 2)
        # every part is labelled somewhere: the points land on the figures, inside the image
        vis = np.stack([r["visible"] for r in records])
        for part, ids in spec.parts.items():
            assert vis[:, list(ids)].sum() > 0, part
    dets = _json(root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json")
    assert dets and {d["image_id"] for d in dets} <= set(range(1, cfg.num_val + 1))


def test_wholebody_gt_scores_perfectly(cache: Path) -> None:
    _, root = _make(cache, "coco_wholebody")
    ann = root / "annotations" / "coco_wholebody_val_v1.0.json"
    spec = load_spec("coco_wholebody")
    preds = [{"image_id": r["image_id"], "ann_id": r["ann_id"], "bbox_score": 1.0, "area": r["area"],
              "keypoints": np.concatenate([r["keypoints"], np.ones((133, 1))], 1)}
             for r in load_coco_instances(ann, root / "val2017", spec)]
    metrics = WholeBodyEvaluator(ann, spec, use_nms=False).evaluate(preds)
    for part in ("body", "foot", "face", "left_hand", "right_hand", "wholebody"):
        assert metrics[f"AP_{part}"] == pytest.approx(1.0), part


def _symmetric_extras(yaw: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 + the whole-body extras of a left/right mirror-symmetric figure (x -> -x)."""
    kp = np.zeros((17, 2))
    half = {5: (0.12, -0.3), 7: (0.2, -0.15), 9: (0.25, 0.0), 11: (0.08, 0.0), 13: (0.1, 0.24), 15: (0.11, 0.48),
            1: (0.02, -0.45), 3: (0.05, -0.44)}
    for k, (x, y) in half.items():
        kp[k], kp[k + 1] = (x, y), (-x, y)
    kp[0] = (0.0, -0.42)
    ext, hidden = figure_extras(kp, 1.0, np.array([0.0, -0.3]), np.array([0.0, -0.42]), np.eye(2),
                                0.058, 0.072, yaw, 0.045)
    return np.concatenate([kp, ext[:116]]), hidden


def test_wholebody_points_follow_the_spec_order() -> None:
    """Mirroring a symmetric figure maps every point onto its flip partner (spec order and left/right are
    consistent), the face's nose tip and eye centres are the COCO ones, the hand roots are the wrists."""
    spec = load_spec("coco_wholebody")
    pts, hidden = _symmetric_extras()
    mirrored = pts * np.array([-1.0, 1.0])
    np.testing.assert_allclose(mirrored[list(spec.flip_indices)], pts, atol=1e-9)
    assert not hidden.any()
    face = pts[23:91]
    assert face[30, 1] > face[27, 1] > face[19, 1]  # nose below the brows; bridge runs downwards
    assert face[8, 1] == face[:17, 1].max() and face[57, 1] > face[51, 1] > face[33, 1]  # chin, lips, nostrils
    assert face[36, 0] < face[39, 0] < face[42, 0] < face[45, 0]  # image-left to right: right eye, left eye
    np.testing.assert_allclose(pts[[91, 112]], pts[[9, 10]])
    # a face turned far to one side hides the jaw points of the other side (v=1), as the ears
    _, hidden = _symmetric_extras(yaw=math.radians(40))
    assert hidden[EXTRA_FACE][16 - 3:17].all() and not hidden[EXTRA_FACE][:4].any()


def test_extra_points_do_not_change_the_coco_output(tmp_path: Path) -> None:
    cfg = SyntheticConfig(seed=4, num_train=2, num_val=1)
    img_a, anns_a = syn.render_image(cfg, image_rng(4, 0, 1))
    img_b, anns_b = syn.render_image(cfg, image_rng(4, 0, 1), extra=True)
    assert np.array_equal(img_a, img_b)
    assert [{k: v for k, v in a.items() if not k.startswith("_")} for a in anns_b] == anns_a
    assert all(a["_extra"].shape == (syn.NUM_EXTRA, 3) for a in anns_b)
    # the COCO format keeps its cache name (and hash) while other formats get their own
    assert syn.config_hash(cfg) != syn.config_hash(cfg, "crowdpose")


# ------------------------------------------------------------------------------------------------ CrowdPose
def test_crowd_index_definition() -> None:
    a = np.array([[1, 1, 2], [2, 2, 2], [9, 9, 2], [0, 0, 0]], float)
    b = np.array([[1.5, 1.5, 2], [30, 30, 2], [0, 0, 0], [0, 0, 0]], float)
    boxes = [[0, 0, 10, 10], [0, 0, 40, 40]]
    # a: 3 own kpts, 1 of b's inside its box -> 1/3; b: 2 own, 3 of a's inside -> 3/2
    assert crowd_index([a, b], boxes) == pytest.approx((1 / 3 + 3 / 2) / 2)
    assert crowd_index([a], boxes[:1]) == 0.0


def test_crowdpose_files_and_reader(cache: Path) -> None:
    cfg, root = _make(cache, "crowdpose", min_people=2, max_people=3, overlap=0.6)
    spec = load_spec("crowdpose")
    assert len(CROWDPOSE_NAMES) == spec.num_keypoints == 14
    for split, n in (("trainval", cfg.num_train), ("test", cfg.num_val)):
        path = root / "annotations" / f"mmpose_crowdpose_{split}.json"
        data = _json(path)
        assert len(data["images"]) == n
        assert all(isinstance(im["crowdIndex"], float) and im["crowdIndex"] >= 0 for im in data["images"])
        assert all("area" not in a and len(a["keypoints"]) == 42 for a in data["annotations"])
        assert data["categories"][0]["keypoints"] == list(CROWDPOSE_NAMES)
        expected = sum(a["num_keypoints"] >= 1 for a in data["annotations"])
        assert len(load_coco_instances(path, root / "images", spec)) == expected > 0
    assert len(list((root / "images").glob("*.jpg"))) == cfg.num_train + cfg.num_val
    test = _json(root / "annotations" / "mmpose_crowdpose_test.json")
    assert any(im["crowdIndex"] > 0 for im in test["images"])  # overlapping people
    # the crowd index is the definition's, from the written keypoints and boxes
    for im in test["images"]:
        anns = [a for a in test["annotations"] if a["image_id"] == im["id"]]
        kps = [np.asarray(a["keypoints"], float).reshape(14, 3) for a in anns]
        assert im["crowdIndex"] == round(crowd_index(kps, [a["bbox"] for a in anns]), 2)
    dets = root / "annotations" / "det_for_crowd_test_0.1_0.5.json"
    assert load_coco_instances(path, root / "images", spec, bbox_file=dets)
    # head top above the neck, neck between the shoulders
    a = next(a for a in test["annotations"] if all(np.asarray(a["keypoints"])[[2, 5, 38, 41]] > 0))
    k = np.asarray(a["keypoints"], float).reshape(14, 3)
    np.testing.assert_allclose(k[13, :2], (k[0, :2] + k[1, :2]) / 2, atol=1e-6)
    # GT as predictions: AP 1 with the crowd evaluator
    preds = [{"image_id": r["image_id"], "ann_id": r["ann_id"], "bbox_score": 1.0, "area": r["area"],
              "keypoints": np.concatenate([r["keypoints"], np.ones((14, 1))], 1)}
             for r in load_coco_instances(path, root / "images", spec)]
    metrics = CrowdPoseEvaluator(path, spec, use_nms=False).evaluate(preds)
    assert metrics["AP"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------- MPII
def test_mpii_files_and_reader(cache: Path) -> None:
    cfg, root = _make(cache, "mpii")
    spec = load_spec("mpii")
    for split in ("train", "val"):
        data = _json(root / "annotations" / f"mpii_{split}.json")
        assert isinstance(data, list) and data
        assert {r["image"] for r in data} <= {p.name for p in (root / "images").glob("*.jpg")}
        records = load_mpii_instances(root / "annotations" / f"mpii_{split}.json", root / "images", spec)
        assert len(records) == len(data)
        for rec, raw in zip(records, data):
            vis = np.asarray(raw["joints_vis"]) > 0
            assert np.array_equal(rec["visible"] > 0, vis) and vis.any()
            # the reader's square box contains the person's labelled joints
            x, y, w, h = rec["bbox"]
            kp = rec["keypoints"][vis]
            assert np.all((kp[:, 0] >= x - 1) & (kp[:, 0] <= x + w + 1) & (kp[:, 1] >= y - 1) & (kp[:, 1] <= y + h + 1))
    assert len(list((root / "images").glob("*.jpg"))) == cfg.num_train + cfg.num_val
    ref = load_mpii_headboxes(root / "annotations" / "mpii_gt_val.mat")
    val = _json(root / "annotations" / "mpii_val.json")
    assert ref["gt"].shape == (len(val), 16, 2) and np.all(ref["headbox_sizes"] > 0)
    np.testing.assert_array_equal(ref["visible"], np.asarray([r["joints_vis"] for r in val], float))


def test_mpii_perfect_predictions_give_pckh_100(cache: Path) -> None:
    _, root = _make(cache, "mpii")
    spec = load_spec("mpii")
    ann, mat = root / "annotations" / "mpii_val.json", root / "annotations" / "mpii_gt_val.mat"
    records = load_mpii_instances(ann, root / "images", spec)
    pred = np.stack([r["keypoints"] for r in records]).astype(np.float64)
    assert pckh_from_mat(pred, mat)["PCKh@0.5"] == 1.0
    evaluator = build_evaluator("mpii", ann, spec, headbox_file=mat, use_nms=True, nms_thr=0.9)
    preds = [{"image_id": r["image_id"], "ann_id": r["ann_id"], "bbox_score": 1.0, "area": r["area"],
              "keypoints": np.concatenate([r["keypoints"], np.ones((16, 1))], 1)} for r in records]
    metrics = evaluator.evaluate(preds)
    assert metrics["PCKh@0.5"] == metrics["PCKh@0.1"] == 1.0
    assert metrics["PCKh@0.5/Head"] == 1.0 and metrics["PCK@0.05"] == 1.0
    assert metrics["kpt_error_px"] == pytest.approx(0.0, abs=1e-4)  # float32 records
    # move every joint of person 0 by 0.3 head sizes: wrong at 0.1, right at 0.5 (hand-computed Mean)
    ref = load_mpii_headboxes(mat)
    shift = 0.3 * SC_BIAS * ref["headbox_sizes"][0]
    preds[0] = {**preds[0], "keypoints": preds[0]["keypoints"] + np.array([shift, 0.0, 0.0])}
    vis = ref["visible"] > 0
    counted = np.ones(16, bool)
    counted[[6, 7]] = False
    expected = 1.0 - vis[0, counted].sum() / vis[:, counted].sum()
    metrics = evaluator.evaluate(preds)
    assert metrics["PCKh@0.5"] == 1.0 and metrics["PCKh@0.1"] == pytest.approx(expected)
    # a person without a prediction counts as wrong
    assert evaluator.evaluate(preds[1:])["PCKh@0.5"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------- OCHuman
def test_ochuman_files_are_heavily_overlapping(cache: Path) -> None:
    cfg, root = _make(cache, "ochuman", num_val=6, min_people=2, max_people=3, overlap=1.0)
    spec = load_spec("ochuman")
    assert not list(root.rglob("*train*"))
    ious = []
    for split in ("val", "test"):
        path = root / "annotations" / f"ochuman_coco_format_{split}_range_0.00_1.00.json"
        data = _json(path)
        assert len(data["images"]) == cfg.num_val
        expected = sum(a["num_keypoints"] >= 1 for a in data["annotations"])
        assert len(load_coco_instances(path, root / "images", spec)) == expected
        for im in data["images"]:
            boxes = [np.asarray(a["bbox"]) for a in data["annotations"] if a["image_id"] == im["id"]]
            assert len(boxes) >= 2
            best = 0.0
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
                    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
                    best = max(best, iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih))
            ious.append(best)
    assert np.mean(np.asarray(ious) > 0.2) >= 0.75
    assert len(list((root / "images").glob("*.jpg"))) == 2 * cfg.num_val


# ---------------------------------------------------------------------------------------- dataset configs
@pytest.mark.parametrize(("option", "fmt"), [("coco_wholebody", "coco_wholebody"), ("crowdpose", "crowdpose"),
                                             ("mpii", "mpii"), ("ochuman", "ochuman")])
def test_dataset_configs_default_to_their_synthetic_version(tmp_path: Path, option: str, fmt: str) -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"dataset={option}", f"dataset.cache_dir={tmp_path}",
                                          "dataset.synthetic.num_train=2", "dataset.synthetic.num_val=2"])
    assert cfg.dataset.root is None and cfg.dataset.synthetic.format == fmt
    root = resolve_dataset_root(cfg.dataset)
    assert root.parent == tmp_path and root.name.startswith(f"{fmt}_")
    for key in ("train_ann", "val_ann", "val_bbox_file", "headbox_file"):  # the config's names exist there
        if cfg.dataset.get(key):
            assert (root / cfg.dataset[key]).is_file(), key
    if option == "mpii":
        assert cfg.task.monitor == "val/PCKh@0.5"
    else:
        assert cfg.task.monitor == "val/AP"
    # dataset.root switches to the real data; a missing root is reported
    cfg.dataset.root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_dataset_root(cfg.dataset)


def test_coco_config_still_needs_the_real_data() -> None:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=coco"])
    assert cfg.dataset.synthetic is None and cfg.dataset.root


def test_ochuman_has_no_training_split(tmp_path: Path) -> None:
    from sar.data.datamodule import TopDownDataModule

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=ochuman", f"dataset.cache_dir={tmp_path}",
                                          "dataset.synthetic.num_val=1"])
    dm = TopDownDataModule(dict(cfg.dataset), load_spec("ochuman"), codec=None, augmentation={})
    with pytest.raises(ValueError, match="no training split"):
        dm.setup("fit")
