"""Up-front data checks (issue 9, "no lost training"): images, splits and trainer integers are checked at setup,
before any training step, and every error names the file (and the record) at fault.

* images: missing, unreadable or truncated files (sar.data.image_check, called from TopDownDataModule.setup);
* the loader: a file that changed after the check is named when it is read (sar.data.topdown.read_image);
* splits: an empty train set, a batch larger than the train set, an empty detection or GT val set;
* results-only val under training (TopDownDataModule.check_trainable);
* the trainer's integer keys (sar.utils.scale.prepare_run_config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import sar  # noqa: F401  (registers the sar.uid resolver)
from sar.data import image_check
from sar.data.datamodule import TopDownDataModule
from sar.data.image_check import ImageCheckError, check_image, check_record_images, find_bad_images
from sar.data.spec import load_spec
from sar.data.synthetic import SyntheticConfig, generate
from sar.data.topdown import TopDownDataset, read_image
from sar.utils.config import compose_train_config
from sar.utils.scale import prepare_run_config

TRAIN_ANN = "annotations/person_keypoints_train.json"
VAL_ANN = "annotations/person_keypoints_val.json"
DET = "annotations/person_detection_results_val.json"
SPEC = load_spec("coco")
CODEC = SimpleNamespace(input_size=(64, 64))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(SyntheticConfig(seed=5, num_train=10, num_val=4), tmp_path_factory.mktemp("syn") / "ds",
                    num_workers=1)


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic dataset, free to break."""
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def dm_for(root: Path, **overrides) -> TopDownDataModule:
    cfg = {"name": "t", "root": str(root), "format": "coco", "train_ann": TRAIN_ANN, "train_images": "images/train",
           "val_ann": VAL_ANN, "val_images": "images/val", "val_bbox_file": DET, "results_only": None,
           "det_score_thr": 0.0, "min_keypoints": 1, "batch_size": 4, "val_batch_size": 4, "num_workers": 0}
    cfg.update(overrides)
    return TopDownDataModule(cfg, SPEC, CODEC, augmentation={})


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    edited = fn(data)  # a new value, or None after an in-place edit
    path.write_text(json.dumps(data if edited is None else edited))


def first_image(root: Path, split: str) -> Path:
    ann = json.loads((root / f"annotations/person_keypoints_{split}.json").read_text())
    return root / "images" / split / ann["images"][ann["annotations"][0]["image_id"] - 1]["file_name"]


# -- check_image: one file ---------------------------------------------------------------------------------
def jpeg_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def png_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("ok.jpg", jpeg_bytes(), None),
    ("padded.jpg", jpeg_bytes() + b"\x00" * 300 + b" \r\n", None),  # trailing padding after EOI is allowed
    ("vendor_trailer.jpg", jpeg_bytes() + b"SAMSUNG\x01\x02\xff\x00trailer", None),  # data after EOI: complete
    ("ok.png", png_bytes(), None),
    ("truncated.jpg", jpeg_bytes()[:-200], "truncated"),
    ("cut_before_eoi.jpg", jpeg_bytes()[:-2], "truncated"),
    ("truncated.png", png_bytes()[:-40], "truncated"),
    ("header_only.jpg", jpeg_bytes()[:10], "header"),
    ("empty.jpg", b"", "empty"),
    ("text.jpg", b"this is not an image\n", "not an image"),
    ("soi_then_garbage.jpg", b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9", "header"),
])
def test_check_image(tmp_path: Path, name: str, content: bytes, problem: str | None) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    found = check_image(path)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_check_image_missing_and_other_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "missing" in check_image(tmp_path / "nowhere.jpg")
    (tmp_path / "folder.jpg").mkdir()
    assert "not a regular file" in check_image(tmp_path / "folder.jpg")
    image = np.zeros((8, 9, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.bmp"), image)
    assert check_image(tmp_path / "a.bmp") is None
    monkeypatch.setattr(image_check, "_pil_image", lambda: None)  # Pillow not installed: OpenCV's signature check
    assert check_image(tmp_path / "a.bmp") is None
    assert check_image(tmp_path / "missing.bmp") == "missing"


def test_real_sample_images_pass(shared_data: Path) -> None:
    images = sorted(shared_data.rglob("*.jpg"))
    assert images
    assert find_bad_images([str(p) for p in images]) == {}


def test_check_finds_the_one_truncated_image_among_many(tmp_path: Path) -> None:
    """Its speed is measured by `python -m sar.bench image_check` (BENCHMARKS.md), not here."""
    src = jpeg_bytes()
    paths = []
    for i in range(2000):
        path = tmp_path / f"{i:05d}.jpg"
        path.write_bytes(src)
        paths.append(str(path))
    (tmp_path / "00007.jpg").write_bytes(src[:-100])
    bad = find_bad_images(paths)
    assert list(bad) == [str(tmp_path / "00007.jpg")]
    assert bad[str(tmp_path / "00007.jpg")].startswith("truncated JPEG")


def test_check_record_images_names_count_files_and_source(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(jpeg_bytes())
    bad.write_bytes(jpeg_bytes()[:-300])
    records = [{"image_path": str(good), "image_id": 1}, {"image_path": str(bad), "image_id": 2},
               {"image_path": str(bad), "image_id": 2}, {"image_path": str(tmp_path / "gone.jpg"), "image_id": 3}]
    with pytest.raises(ImageCheckError) as info:
        check_record_images([("train set /x/train.json", records)])
    text = str(info.value)
    assert "2 of 3 images" in text
    assert f"{bad} (image_id 2, train set /x/train.json): truncated" in text
    assert f"{tmp_path / 'gone.jpg'} (image_id 3, train set /x/train.json): missing" in text
    assert check_record_images([("val", records[:1])]) == 1


# -- the loader ----------------------------------------------------------------------------------------------
def test_read_image_names_a_file_that_changed_after_the_check(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_bytes())
    assert read_image(str(path)).shape == (40, 30, 3)
    path.write_bytes(jpeg_bytes()[:-300])  # libjpeg alone would decode half an image with a bare warning
    with pytest.raises(OSError, match=r"x\.jpg.*image_id=7.*truncated"):
        read_image(str(path), 7)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(OSError, match=r"x\.jpg.*image_id=7"):
        read_image(str(path), 7)
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
        read_image(str(tmp_path / "nope.jpg"), 7)


def test_dataset_sample_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "y.jpg"
    path.write_bytes(jpeg_bytes()[:-300])
    record = {"image_path": str(path), "image_id": 3, "ann_id": 11, "bbox": np.float32([0, 0, 10, 10]),
              "bbox_score": 1.0, "area": 100.0, "keypoints": np.zeros((17, 2), np.float32),
              "visible": np.zeros(17, np.float32)}
    dataset = TopDownDataset([record], SPEC, CODEC, train=False)
    with pytest.raises(OSError, match=r"y\.jpg.*image_id=3"):
        dataset[0]


# -- setup: images -------------------------------------------------------------------------------------------
def test_valid_dataset_passes(root: Path) -> None:
    dm = dm_for(root)
    dm.setup("fit")
    assert len(dm.train_set) > 0 and len(dm.val_sets) == 2
    dm.check_trainable("val/AP")


def test_setup_reads_each_annotation_file_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The val file serves the results-only check, the detection and GT-box loaders and the keypoint error from one
    read (a COCO val file takes seconds to parse)."""
    from sar.data import formats
    from sar.data.formats import coco

    reads: list[str] = []

    def counting(path):
        reads.append(Path(path).name)
        return formats.read_json(path)

    monkeypatch.setattr(coco, "read_json", counting)
    dm = dm_for(root)
    dm.setup("fit")
    assert dm.results_only is False and dm.val_annotations["annotations"]
    assert sorted(reads) == sorted([Path(TRAIN_ANN).name, Path(VAL_ANN).name, Path(DET).name])


def test_missing_train_image_fails_setup(root: Path) -> None:
    image = first_image(root, "train")
    image.unlink()
    with pytest.raises(ValueError, match=r"1 of \d+ images .*missing") as info:
        dm_for(root).setup("fit")
    assert str(image) in str(info.value) and TRAIN_ANN in str(info.value)


def test_truncated_val_jpeg_fails_setup(root: Path) -> None:
    image = first_image(root, "val")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        dm_for(root).setup("fit")
    assert str(image) in str(info.value) and VAL_ANN in str(info.value)
    with pytest.raises(ValueError, match="truncated"):  # evaluation (validate stage) checks too
        dm_for(root).setup("validate")


def test_unreadable_image_fails_setup(root: Path) -> None:
    image = first_image(root, "train")
    image.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="not an image") as info:
        dm_for(root).setup("fit")
    assert str(image) in str(info.value)


# -- setup: splits -------------------------------------------------------------------------------------------
def test_empty_train_set_fails_setup(root: Path) -> None:
    edit_json(root / TRAIN_ANN, lambda d: d.update(annotations=[]))
    with pytest.raises(ValueError, match=rf"train set .*{TRAIN_ANN}: 0 instances"):
        dm_for(root).setup("fit")


def test_batch_larger_than_train_set_fails_setup(root: Path) -> None:
    with pytest.raises(ValueError, match=rf"batch_size 1000 is larger than the train set \(\d+ instances in "
                                         rf".*{TRAIN_ANN}\): every batch would be dropped"):
        dm_for(root, batch_size=1000).setup("fit")


@pytest.mark.parametrize(("edit", "overrides", "counts"), [
    (lambda dets: [], {}, "0 detections"),
    (lambda dets: [dict(d, bbox=[d["bbox"][0], d["bbox"][1], 0.0, d["bbox"][3]]) for d in dets], {},
     "empty box"),
    (lambda dets: dets, {"det_score_thr": 2.0}, "score < 2"),
    (lambda dets: [dict(d, category_id=2) for d in dets], {}, "non-person"),
])
def test_empty_detection_val_set_fails_setup(root: Path, edit, overrides, counts) -> None:
    edit_json(root / DET, edit)
    with pytest.raises(ValueError, match=r"0 person boxes") as info:
        dm_for(root, **overrides).setup("fit")
    assert DET in str(info.value) and counts in str(info.value)


@pytest.mark.parametrize("bbox_file", [DET, None])
def test_val_set_without_usable_gt_fails_setup(root: Path, bbox_file) -> None:
    edit_json(root / VAL_ANN, lambda d: d.update(annotations=[dict(a, iscrowd=1) for a in d["annotations"]]))
    with pytest.raises(ValueError, match=rf"{VAL_ANN}: 0 usable GT persons.*crowd"):
        dm_for(root, val_bbox_file=bbox_file).setup("validate")


def test_results_only_val_cannot_be_monitored(root: Path) -> None:
    edit_json(root / VAL_ANN, lambda d: d.update(annotations=[]))
    dm = dm_for(root)
    with pytest.raises(ValueError, match=rf"val file .*{VAL_ANN} has no annotations \(results-only\): nothing to "
                                         r"monitor; .*task.monitor=null"):
        dm.check_trainable("val/AP")
    dm.check_trainable(None)  # nothing monitored: fine
    dm.setup("fit")  # results-only validation itself still works
    assert len(dm.val_sets) == 1
    dm_for(root, results_only=False, val_bbox_file=None).check_trainable("val/AP")  # a forced mode is honoured


# -- the trainer's integer keys --------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["max_epochs", "max_steps", "check_val_every_n_epoch", "log_every_n_steps",
                                 "accumulate_grad_batches", "num_sanity_val_steps", "checkpoint_every_n_steps",
                                 "num_nodes"])
def test_trainer_integer_keys_are_validated(key: str) -> None:
    with pytest.raises(ValueError, match=rf"trainer\.{key} must be an integer, got 'abc'"):
        prepare_run_config(compose_train_config(f"++trainer.{key}=abc"))
    with pytest.raises(ValueError, match=rf"trainer\.{key} must be an integer, got 1\.5"):
        prepare_run_config(compose_train_config(f"++trainer.{key}=1.5"))


def test_trainer_integer_keys_accept_integers() -> None:
    cfg = compose_train_config("trainer.max_epochs=3", "+trainer.max_steps=-1",
                               "trainer.checkpoint_every_n_steps=null", "trainer.devices=2")
    prepare_run_config(cfg)
    assert cfg.trainer.check_val_every_n_epoch == 3
    with pytest.raises(ValueError, match=r"trainer\.devices must be an integer, got 1\.5"):
        prepare_run_config(compose_train_config("trainer.devices=1.5"))
    with pytest.raises(ValueError, match=r"trainer\.max_epochs must be an integer, got True"):
        prepare_run_config(compose_train_config("trainer.max_epochs=true"))
