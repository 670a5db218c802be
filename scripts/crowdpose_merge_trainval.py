"""Merge the CrowdPose train and val annotation files into one trainval file (how bottom-up papers train).

Usage::

    python scripts/crowdpose_merge_trainval.py crowdpose_train.json crowdpose_val.json \\
        -o annotations/mmpose_crowdpose_trainval.json

(any number of COCO-style inputs, merged in the order given; the output is what ``conf/dataset/crowdpose.yaml``
reads as ``train_ann``.)

Rules:

* **Images** are deduplicated by ``file_name``: an image already seen keeps its first entry and id, and the later
  file's annotations of it are re-pointed to that id. A new image keeps its id unless the id is taken (by another
  image), then it gets the next free id (``max id + 1``) and its annotations follow it.
* **Annotations** keep their ids unless taken, then get the next free id; an annotation identical to one already
  kept (same image, ``bbox`` and ``keypoints``) is dropped as a duplicate.
* **Categories** must be the same in every file (ids, names and keypoint names); the first file's are kept, as
  are its other top-level keys (``info``, ``licenses``, ...).
* Malformed input raises ``ValueError`` naming the file (and the record): not a COCO object, a missing or
  non-integer ``id`` / ``image_id``, an annotation of an image the file does not list, different categories.

The merged json is written atomically; the counts are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sar.data.formats import read_json


def _load(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: not a COCO annotation object (got {type(data).__name__})")  # noqa: TRY004
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: no '{key}' list")
    return dict(data)


def _int(record: Any, key: str, where: str) -> int:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: not an object")  # noqa: TRY004
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{where}: '{key}' must be an integer, got {value!r}")
    return int(value)


def _category_key(categories: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return sorted((c.get("id"), c.get("name"), tuple(c.get("keypoints") or ())) for c in categories)


def merge(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The merged COCO dict of the files ``paths`` (rules in the module docstring)."""
    if not paths:
        raise ValueError("nothing to merge")
    merged: dict[str, Any] | None = None
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    id_by_name: dict[str, int] = {}
    image_ids: set[int] = set()
    ann_ids: set[int] = set()
    seen_anns: set[tuple[int, str, str]] = set()
    next_image = next_ann = 1
    for p in paths:
        path = Path(p)
        data = _load(path)
        if merged is None:
            merged = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        elif _category_key(data["categories"]) != _category_key(merged["categories"]):
            raise ValueError(f"{path}: categories differ from those of {paths[0]}")
        remap: dict[int, int] = {}
        for i, im in enumerate(data["images"]):
            where = f"{path}: image #{i}"
            old = _int(im, "id", where)
            name = im.get("file_name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where} (id {old}): 'file_name' must be a non-empty string")
            if old in remap:
                raise ValueError(f"{where}: image id {old} appears twice in the file")
            if name in id_by_name:  # the same image in an earlier file
                remap[old] = id_by_name[name]
                continue
            new = old
            if new in image_ids:
                next_image = max(next_image, max(image_ids) + 1)
                new, next_image = next_image, next_image + 1
            remap[old] = new
            image_ids.add(new)
            id_by_name[name] = new
            images.append({**im, "id": new})
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}: annotation #{i}"
            old_id = _int(ann, "id", where)
            old_image = _int(ann, "image_id", f"{where} (id {old_id})")
            if old_image not in remap:
                raise ValueError(f"{where} (id {old_id}): image_id {old_image} is not in the file's images")
            image_id = remap[old_image]
            key = (image_id, json.dumps(ann.get("bbox")), json.dumps(ann.get("keypoints")))
            if key in seen_anns:
                continue
            seen_anns.add(key)
            new_id = old_id
            if new_id in ann_ids:
                next_ann = max(next_ann, max(ann_ids) + 1)
                new_id, next_ann = next_ann, next_ann + 1
            ann_ids.add(new_id)
            annotations.append({**ann, "id": new_id, "image_id": image_id})
    assert merged is not None
    merged["images"] = images
    merged["annotations"] = annotations
    return merged


def write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Merge CrowdPose train and val jsons into trainval.")
    parser.add_argument("inputs", nargs="+", type=Path, help="COCO-style annotation files (e.g. train, val)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="merged output json")
    args = parser.parse_args(argv)
    merged = merge(args.inputs)
    write_json_atomic(merged, args.out)
    print(f"wrote {args.out}: {len(merged['images'])} images, {len(merged['annotations'])} annotations "
          f"from {', '.join(str(p) for p in args.inputs)}")


if __name__ == "__main__":
    main()
