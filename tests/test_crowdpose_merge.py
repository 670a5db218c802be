"""scripts/crowdpose_merge_trainval.py: train + val -> trainval with unique ids and deduplicated images."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from sar.data.formats.coco import load_coco_instances
from sar.data.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> Any:
    spec_ = importlib.util.spec_from_file_location("crowdpose_merge_trainval",
                                                   REPO / "scripts" / "crowdpose_merge_trainval.py")
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module


CATS = [{"id": 1, "name": "person", "keypoints": ["a", "b"], "skeleton": [[1, 2]]}]


def _ann(ann_id: int, image_id: int, x: float) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": [x, 0, 10, 10],
            "keypoints": [x, 1, 2, x + 1, 2, 2], "num_keypoints": 2}


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_merge_keeps_ids_unique_and_deduplicates_images(tmp_path: Path, script: Any) -> None:
    train = _write(tmp_path / "train.json", {
        "info": {"description": "train"}, "categories": CATS,
        "images": [{"id": 1, "file_name": "1.jpg", "crowdIndex": 0.1}, {"id": 2, "file_name": "2.jpg", "crowdIndex": 0.5}],
        "annotations": [_ann(10, 1, 0), _ann(11, 2, 5)],
    })
    val = _write(tmp_path / "val.json", {
        "categories": CATS,
        # id 2 is taken by another image -> renumbered; 1.jpg is already in train -> deduplicated
        "images": [{"id": 2, "file_name": "3.jpg", "crowdIndex": 0.9}, {"id": 7, "file_name": "1.jpg", "crowdIndex": 0.1}],
        # id 10 is taken -> renumbered; the second is a duplicate of train's annotation 10 -> dropped
        "annotations": [_ann(10, 2, 20), _ann(12, 7, 0), _ann(13, 7, 30)],
    })
    out = tmp_path / "trainval.json"
    script.main([str(train), str(val), "-o", str(out)])
    merged = json.loads(out.read_text())
    assert merged["info"] == {"description": "train"} and merged["categories"] == CATS
    names = {im["file_name"]: im["id"] for im in merged["images"]}
    assert sorted(names) == ["1.jpg", "2.jpg", "3.jpg"]
    assert len(set(names.values())) == 3 and names["1.jpg"] == 1 and names["2.jpg"] == 2 and names["3.jpg"] == 3
    ids = [a["id"] for a in merged["annotations"]]
    assert len(ids) == len(set(ids)) == 4
    by_x = {a["bbox"][0]: a for a in merged["annotations"]}
    assert by_x[20]["image_id"] == 3 and by_x[30]["image_id"] == 1 and by_x[0]["id"] == 10
    assert next(im for im in merged["images"] if im["id"] == 3)["crowdIndex"] == 0.9
    # the reader takes the merged file
    crowd = load_spec("crowdpose")
    real = {**merged, "annotations": [{**a, "keypoints": a["keypoints"] * 7} for a in merged["annotations"]]}
    assert len(load_coco_instances(_write(tmp_path / "real.json", real), tmp_path, crowd)) == 4


def test_merge_real_sample_with_itself_dedups(tmp_path: Path, script: Any, shared_data: Path) -> None:
    sample = shared_data / "crowdpose" / "test_crowdpose.json"
    data = json.loads(sample.read_text())
    merged = script.merge([sample, sample])
    assert len(merged["images"]) == len(data["images"]) and len(merged["annotations"]) == len(data["annotations"])


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([1, 2], "not a COCO annotation object"),
        ({"images": [], "categories": CATS}, "no 'annotations' list"),
        ({"images": [{"file_name": "x.jpg"}], "annotations": [], "categories": CATS}, r"image #0: 'id'"),
        ({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [_ann(3, 9, 0)], "categories": CATS},
         "image_id 9 is not in the file's images"),
        ({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"image_id": 1}], "categories": CATS},
         r"annotation #0: 'id' must be an integer"),
        ({"images": [], "annotations": [], "categories": [{"id": 2, "name": "dog"}]}, "categories differ"),
    ],
)
def test_malformed_input_names_the_file(tmp_path: Path, script: Any, payload: Any, match: str) -> None:
    good = _write(tmp_path / "good.json", {"images": [], "annotations": [], "categories": CATS})
    bad = _write(tmp_path / "bad_val.json", payload)
    with pytest.raises(ValueError, match=match) as err:
        script.merge([good, bad])
    assert "bad_val.json" in str(err.value)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        script.merge([tmp_path / "broken.json"])
