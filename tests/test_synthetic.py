"""Tests for the embedded synthetic COCO-format dataset (``sar.data.synthetic``)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sar.data import synthetic as syn
from sar.data.spec import load_spec
from sar.data.synthetic import SyntheticConfig, ensure_synthetic, generate, render_image, render_preview
from sar.data.synthetic.config import image_rng

SMALL = {"num_train": 12, "num_val": 8}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticConfig, Path]:
    cfg = SyntheticConfig(seed=3, **SMALL)
    return cfg, generate(cfg, tmp_path_factory.mktemp("syn") / "a", num_workers=1)


def test_layout_and_coco_format(dataset: tuple[SyntheticConfig, Path]) -> None:
    cfg, root = dataset
    for split, n in (("train", cfg.num_train), ("val", cfg.num_val)):
        ann = root / "annotations" / f"person_keypoints_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann))
        assert len(coco.getImgIds()) == n
        assert len(list((root / "images" / split).glob("*.jpg"))) == n
        cat = coco.loadCats(1)[0]
        assert cat["keypoints"] == list(syn.KEYPOINT_NAMES) and len(cat["skeleton"]) == 19
        assert min(min(link) for link in cat["skeleton"]) == 1  # 1-based
        data = _load(ann)
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
        assert len(coco.getAnnIds()) >= n  # at least one person per image
        for im in data["images"]:
            img = cv2.imread(str(root / "images" / split / im["file_name"]))
            assert img.shape == (im["height"], im["width"], 3)
            assert (im["width"], im["height"]) == cfg.image_size
    assert (root / syn.COMPLETE_MARKER).is_file()


def test_keypoint_rules(dataset: tuple[SyntheticConfig, Path]) -> None:
    cfg, root = dataset
    w, h = cfg.image_size
    for split in ("train", "val"):
        data = _load(root / "annotations" / f"person_keypoints_{split}.json")
        ids = [a["id"] for a in data["annotations"]]
        assert len(set(ids)) == len(ids)
        for a in data["annotations"]:
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            vis = kp[:, 2]
            assert set(np.unique(vis)) <= {0, 1, 2}
            assert a["num_keypoints"] == int((vis > 0).sum())
            lab = kp[vis > 0]
            assert np.all((lab[:, 0] >= 0) & (lab[:, 0] <= w - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= h - 1))
            assert np.all(kp[vis == 0, :2] == 0)
            x, y, bw, bh = a["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
            assert 0 < a["area"] <= bw * bh
            assert a["iscrowd"] == 0 and a["category_id"] == 1
    # sub-pixel floats, not rounded
    data = _load(root / "annotations" / "person_keypoints_train.json")
    xs = np.concatenate([np.asarray(a["keypoints"][0::3]) for a in data["annotations"]])
    assert np.any(np.abs(xs - np.round(xs)) > 1e-3)


def test_gt_as_results_gives_perfect_ap(dataset: tuple[SyntheticConfig, Path]) -> None:
    _, root = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "person_keypoints_val.json"))
        res = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in gt.loadAnns(gt.getAnnIds()) if a["num_keypoints"] > 0]
        ev = COCOeval(gt, gt.loadRes(res), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_detections_file(dataset: tuple[SyntheticConfig, Path]) -> None:
    _, root = dataset
    dets = _load(root / "annotations" / "person_detection_results_val.json")
    val = _load(root / "annotations" / "person_keypoints_val.json")
    image_ids = {im["id"] for im in val["images"]}
    assert dets and all(d["image_id"] in image_ids and d["category_id"] == 1 for d in dets)
    assert all(0.0 < d["score"] < 1.0 and len(d["bbox"]) == 4 and min(d["bbox"][2:]) > 0 for d in dets)
    assert sum(d["score"] > 0.5 for d in dets) >= 0.9 * len(val["annotations"])


def test_deterministic(tmp_path: Path, dataset: tuple[SyntheticConfig, Path]) -> None:
    cfg, root = dataset
    again = generate(cfg, tmp_path / "b", num_workers=1)
    names = ("person_keypoints_train.json", "person_keypoints_val.json", "person_detection_results_val.json")
    for name in names:
        assert (root / "annotations" / name).read_bytes() == (again / "annotations" / name).read_bytes()
    for split in ("train", "val"):
        for f in sorted((root / "images" / split).glob("*.jpg")):
            assert f.read_bytes() == (again / "images" / split / f.name).read_bytes()
    # an image does not depend on how many images are generated
    fewer = generate(SyntheticConfig(seed=3, num_train=3, num_val=1), tmp_path / "c", num_workers=1)
    assert (fewer / "images/train/000002.jpg").read_bytes() == (root / "images/train/000002.jpg").read_bytes()
    # a different seed gives different images and annotations
    rng_a, rng_b = image_rng(3, 0, 0), image_rng(4, 0, 0)
    img_a, ann_a = render_image(cfg, rng_a)
    img_b, ann_b = render_image(cfg, rng_b)
    assert not np.array_equal(img_a, img_b) and ann_a != ann_b


def test_occlusion_and_overlap_at_defaults() -> None:
    cfg = SyntheticConfig()
    n_occluded = n_multi_overlap = 0
    for i in range(50):
        _, anns = render_image(cfg, image_rng(cfg.seed, 0, i))
        n_occluded += sum(int(np.sum(np.asarray(a["keypoints"][2::3]) == 1)) for a in anns)
        boxes = [a["bbox"] for a in anns]
        overlap = any(
            min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0])
            and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])
            for j, a in enumerate(boxes)
            for b in boxes[j + 1:]
        )
        n_multi_overlap += overlap
    assert n_occluded > 20
    assert n_multi_overlap >= 10


def test_occlusion_rule_later_person_covers_earlier() -> None:
    """Two people at the same place: the first one's covered keypoints become v=1, the second's stay v=2."""
    cfg = SyntheticConfig(min_people=2, max_people=2, overlap=1.0, occlusion=0.0, truncation=0.0,
                          person_height=(0.7, 0.7))
    found = False
    for i in range(20):
        _, anns = render_image(cfg, image_rng(0, 0, i))
        v0 = np.asarray(anns[0]["keypoints"][2::3])
        if np.any(v0 == 1) and not np.any(np.asarray(anns[1]["keypoints"][2::3])[5:] == 1):
            found = True
            break
    assert found
    # without occluders and with a single person, only hidden ears can be v=1
    cfg1 = SyntheticConfig(min_people=1, max_people=1, occlusion=0.0)
    for i in range(20):
        _, anns = render_image(cfg1, image_rng(0, 0, i))
        assert not np.any(np.asarray(anns[0]["keypoints"][2::3])[[0, 1, 2, *range(5, 17)]] == 1)


def test_config_from_mapping() -> None:
    omegaconf = pytest.importorskip("omegaconf")
    oc = omegaconf.OmegaConf.create({"seed": 1, "image_size": [128, 96], "person_height": [0.5, 0.9]})
    cfg = SyntheticConfig(**dict(oc))
    assert cfg.image_size == (128, 96) and cfg.person_height == (0.5, 0.9)
    assert SyntheticConfig.from_any(oc) == cfg == SyntheticConfig.from_any(dict(oc))
    assert syn.config_hash(cfg) == syn.config_hash(SyntheticConfig.from_any(dict(oc)))
    with pytest.raises(TypeError):
        SyntheticConfig.from_any({"no_such_knob": 1})


def test_ensure_synthetic_caches_and_regenerates(tmp_path: Path) -> None:
    cfg = SyntheticConfig(seed=1, num_train=4, num_val=2)
    root = ensure_synthetic(cfg, tmp_path)
    assert root.parent == tmp_path and root.name.startswith("coco_")
    marker = root / syn.COMPLETE_MARKER
    stamp = (marker.stat().st_mtime_ns, (root / "images/train/000001.jpg").stat().st_mtime_ns)
    assert ensure_synthetic({"seed": 1, "num_train": 4, "num_val": 2}, tmp_path) == root
    assert (marker.stat().st_mtime_ns, (root / "images/train/000001.jpg").stat().st_mtime_ns) == stamp
    other = ensure_synthetic(SyntheticConfig(seed=1, num_train=4, num_val=2, occlusion=0.6), tmp_path)
    assert other != root and (other / syn.COMPLETE_MARKER).is_file()
    assert not list(tmp_path.glob(".coco_*"))  # no temporaries left behind


def test_interrupted_generation_is_not_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SyntheticConfig(seed=2, num_train=4, num_val=2)
    key = syn.config_hash(cfg)
    # a half-written final directory without marker (e.g. from a copy) is not trusted
    half = tmp_path / f"coco_{key}"
    (half / "images" / "train").mkdir(parents=True)
    (half / "annotations").mkdir()
    # a crash during generation: exception after the images, before the marker
    real_dump = json.dump

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(cfg, tmp_path)
    monkeypatch.setattr(json, "dump", real_dump)
    assert not (half / syn.COMPLETE_MARKER).exists()
    assert not list(tmp_path.glob(".coco_*"))  # the temporary was cleaned up
    # a temporary left by a dead process is neither used nor kept
    stale = tmp_path / f".coco_{key}.tmp-999999999-deadbeef"
    (stale / "annotations").mkdir(parents=True)
    root = ensure_synthetic(cfg, tmp_path)
    assert root == half and (root / syn.COMPLETE_MARKER).is_file()
    assert (root / "annotations" / "person_keypoints_val.json").is_file()
    assert not stale.exists()


def test_preview(tmp_path: Path, dataset: tuple[SyntheticConfig, Path]) -> None:
    _, root = dataset
    out = render_preview(root, tmp_path / "p.png", num_images=4, cols=2, scale=1.0)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 256 and img.shape[1] > 256
    # the skeleton is drawn in the spec's link colours: left, right and centre links all show
    img = cv2.imread(str(render_preview(root, tmp_path / "p2.png", num_images=4, cols=2, scale=2.0)))
    for rgb in {tuple(int(c) for c in rgb) for rgb in load_spec("coco").colors}:
        assert (img == np.array(rgb[::-1])).all(-1).sum() > 50, rgb
    # a file with other keypoints is refused
    other = tmp_path / "other"
    shutil.copytree(root, other)
    ann = other / "annotations" / "person_keypoints_val.json"
    data = _load(ann)
    data["categories"][0]["keypoints"][0] = "head"
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not those of the 'coco' spec"):
        render_preview(other, tmp_path / "p3.png")


def test_cli(tmp_path: Path) -> None:
    syn.main(["--out", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1", "--workers", "1"])
    assert (tmp_path / "cli" / "annotations" / "person_keypoints_val.json").is_file()
    assert len(list((tmp_path / "cli" / "images" / "train").glob("*.jpg"))) == 2
