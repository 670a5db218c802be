"""Convert the official MPII annotations (``mpii_human_pose_v1_u12_1.mat``) to the HRNet / MMPose MPII json.

Usage::

    python scripts/mpii_mat_to_json.py mpii_human_pose_v1_u12_1.mat out.json [--split train|test|all]

Fields read from the ``RELEASE`` struct (MATLAB, 1-based pixel coordinates, kept as they are):

* ``annolist(i).image.name`` -> ``image``.
* ``annolist(i).annorect(r)`` — one person; it is converted only when it has ``annopoints.point`` (annotated
  joints), ``scale`` and ``objpos`` (rough person centre); other rects (e.g. test persons, which carry no
  joints, or unannotated people) are skipped.
  - ``objpos.x / objpos.y`` -> ``center``; ``scale`` -> ``scale`` (person height / 200 px).
  - ``annopoints.point(j)``: ``id`` (0..15, the MPII joint order), ``x``, ``y`` -> ``joints[id]``; every
    annotated joint gets ``joints_vis[id] = 1`` (the HRNet json marks *annotated*, not *unoccluded*, joints; the
    official ``is_visible`` flag is not used). Joints without a point stay ``[-1, -1]`` with ``joints_vis = 0``.
  - ``x1, y1, x2, y2`` (head box) -> extra key ``headbox`` ``[x1, y1, x2, y2]`` when present (ignored by the
    reader; useful to build PCKh head sizes).
* ``img_train(i)`` selects the split: ``train`` keeps images with ``img_train == 1``, ``test`` those with 0.

Note: the common train/val split of HRNet / MMPose (``mpii_val.json``, 2958 persons, with ``mpii_gt_val.mat``)
is Tompson et al.'s subset of the training images; it is not recorded in this ``.mat`` and is not reproduced
here — ``--split train`` gives all annotated training persons.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

NUM_JOINTS = 16


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a ``scipy.io`` struct (``mat_struct``), a numpy record or a dict; ``default`` if absent/empty."""
    if isinstance(obj, dict):
        value = obj.get(name, default)
    elif isinstance(obj, np.void) and obj.dtype.names is not None:
        value = obj[name] if name in obj.dtype.names else default
    else:
        value = getattr(obj, name, default)
    if isinstance(value, np.ndarray) and value.size == 0:
        return default
    return value


def _items(value: Any) -> list[Any]:
    """A MATLAB struct array as a list (``squeeze_me`` turns one-element arrays into scalars)."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1))
    return [value]


def _scalar(value: Any) -> float:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size != 1:
        raise ValueError(f"expected one number, got {value!r}")
    return float(arr[0])


def convert_person(rect: Any, image_name: str) -> dict[str, Any] | None:
    """One ``annorect`` entry -> ``{image, center, scale, joints, joints_vis[, headbox]}``, or None when the rect
    has no joints, scale or objpos."""
    annopoints = _get(rect, "annopoints")
    scale = _get(rect, "scale")
    objpos = _get(rect, "objpos")
    points = _items(_get(annopoints, "point")) if annopoints is not None else []
    if not points or scale is None or objpos is None:
        return None
    joints = [[-1.0, -1.0] for _ in range(NUM_JOINTS)]
    joints_vis = [0] * NUM_JOINTS
    for point in points:
        jid = int(_scalar(_get(point, "id")))
        if not 0 <= jid < NUM_JOINTS:
            raise ValueError(f"{image_name}: joint id {jid} outside 0..15")
        joints[jid] = [_scalar(_get(point, "x")), _scalar(_get(point, "y"))]
        joints_vis[jid] = 1
    person: dict[str, Any] = {
        "image": image_name,
        "center": [_scalar(_get(objpos, "x")), _scalar(_get(objpos, "y"))],
        "scale": _scalar(scale),
        "joints": joints,
        "joints_vis": joints_vis,
    }
    box = [_get(rect, k) for k in ("x1", "y1", "x2", "y2")]
    if all(v is not None for v in box):
        person["headbox"] = [_scalar(v) for v in box]
    return person


def iter_people(release: Any, split: str = "train") -> Iterator[dict[str, Any]]:
    """All converted persons of a loaded ``RELEASE`` struct, in annotation order."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}")
    annolist = _items(_get(release, "annolist"))
    img_train = np.asarray(_get(release, "img_train"), dtype=np.int64).reshape(-1)
    if img_train.size != len(annolist):
        raise ValueError(f"img_train has {img_train.size} entries for {len(annolist)} images")
    for anno, is_train in zip(annolist, img_train, strict=True):
        if split == "train" and is_train != 1 or split == "test" and is_train != 0:
            continue
        name = str(_get(_get(anno, "image"), "name"))
        for rect in _items(_get(anno, "annorect")):
            person = convert_person(rect, name)
            if person is not None:
                yield person


def convert(mat_file: str, split: str = "train") -> list[dict[str, Any]]:
    """Load ``mat_file`` (``RELEASE`` struct) and convert it (see the module docstring)."""
    from scipy.io import loadmat

    mat = loadmat(mat_file, struct_as_record=False, squeeze_me=True)
    if "RELEASE" not in mat:
        raise ValueError(f"{mat_file}: no 'RELEASE' struct (not the official MPII annotation file)")
    return list(iter_people(mat["RELEASE"], split))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mat_file")
    parser.add_argument("out_json")
    parser.add_argument("--split", default="train", choices=("train", "test", "all"))
    args = parser.parse_args(argv)
    people = convert(args.mat_file, args.split)
    with open(args.out_json, "w", encoding="utf-8") as fh:
        json.dump(people, fh)
    print(f"wrote {len(people)} persons to {args.out_json}")


if __name__ == "__main__":
    main()
