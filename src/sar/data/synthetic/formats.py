"""The synthetic people written in the other benchmarks' formats and layouts (:data:`WRITERS`).

Each writer renders with the same renderer (``render_image(..., extra=True)``: the images are those of the COCO
writer for the same config and rng stream) and derives the format's keypoints from the figure's geometry
(:data:`sar.data.synthetic.figure.EXTRA_NAMES`). Every writer uses the real benchmark's file names, so a dataset
config reads the synthetic copy and the real data with the same keys (only ``dataset.root`` differs), and writes
the completion marker last. Use them through :func:`sar.data.synthetic.ensure_synthetic` (``fmt=...``), which
caches by config hash in ``<cache_dir>/<fmt>_<hash>``.

Formats (``num_train`` / ``num_val`` of :class:`~sar.data.synthetic.SyntheticConfig` give the split sizes):

* ``coco_wholebody``: COCO-WholeBody v1.0 json (``keypoints`` 17, ``foot_kpts`` 6, ``face_kpts`` 68,
  ``lefthand_kpts`` 21, ``righthand_kpts`` 21; ``face_box`` / ``lefthand_box`` / ``righthand_box`` xywh, ``[0, 0, 0,
  0]`` when invalid; ``face_valid`` / ``lefthand_valid`` / ``righthand_valid`` / ``foot_valid``: the part has a
  labelled point). Layout: ``annotations/coco_wholebody_{train,val}_v1.0.json``, ``{train,val}2017/*.jpg``,
  ``person_detection_results/COCO_val2017_detections_AP_H_56_person.json``.
* ``crowdpose``: 14 keypoints (the 12 COCO limb points, head top, neck = shoulder midpoint), images carry
  ``crowdIndex`` (the CrowdPose definition, over labelled keypoints: mean over the image's persons of the number
  of *other* persons' keypoints inside the person's box divided by the person's own keypoint count; 0 for a
  single person), no ``area`` (as the real files). Layout: ``images/*.jpg``,
  ``annotations/mmpose_crowdpose_{trainval,test}.json`` (trainval = ``num_train`` images, test = ``num_val``),
  ``annotations/det_for_crowd_test_0.1_0.5.json``.
* ``mpii``: the HRNet / MMPose json (a list of ``{image, center, scale, joints (16 x 2), joints_vis}``, 1-based
  pixels, ``[-1, -1]`` / 0 for a joint outside the image; ``scale = max(box w, h) / 200`` and ``center`` such that
  :func:`sar.data.formats.mpii.mpii_bbox` gives the square around the person's box centre) for persons with at
  least one labelled joint, and ``annotations/mpii_gt_val.mat`` (``headboxes_src`` = the drawn head ellipse's
  box, ``jnt_missing``, ``pos_gt_src``, as the official file). Layout: ``images/*.jpg``,
  ``annotations/mpii_{train,val}.json``.
* ``ochuman``: COCO keypoints json of heavily overlapping people (use a high ``overlap`` and ``min_people >= 2``),
  val and test only (``num_val`` images each; ``num_train`` is unused). Layout: ``images/*.jpg``,
  ``annotations/ochuman_coco_format_{val,test}_range_0.00_1.00.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sar.data.spec import KeypointSpec, load_spec
from sar.data.synthetic.coco import (
    coco_categories,
    coco_file,
    detections,
    dump_json,
    image_entries,
    render_files,
    write_marker,
)
from sar.data.synthetic.config import TEST_STREAM, TRAIN_STREAM, VAL_STREAM, SyntheticConfig
from sar.data.synthetic.figure import (
    EXTRA_FACE,
    EXTRA_FOOT,
    EXTRA_LEFT_HAND,
    EXTRA_NAMES,
    EXTRA_RIGHT_HAND,
    KEYPOINT_NAMES,
)

__all__ = ["CROWDPOSE_NAMES", "MPII_FROM_FIGURE", "WRITERS", "crowd_index"]

#: The ``info.contributor`` of these files: the writers' module when they were first written, kept so that the
#: output stays byte-identical.
_CONTRIBUTOR = "sar.data.synthetic_formats"  # written into the files: kept so that outputs stay byte-identical
_TEST_ID_OFFSET = 10_000_000  # image ids of a second evaluation split (kept distinct from the first)

_CROWDPOSE = load_spec("crowdpose")
#: The keypoint names of the CrowdPose files: the ``crowdpose`` spec's, with the head top called ``head`` as in
#: the real files.
CROWDPOSE_NAMES: tuple[str, ...] = tuple("head" if n == "top_head" else n for n in _CROWDPOSE.keypoint_names)


def _from_figure(spec: KeypointSpec, aliases: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """Per keypoint of ``spec``, the figure's point of that name (or of its alias): ``("body", COCO index)`` or
    ``("extra", EXTRA_NAMES index)``."""
    out = []
    for name in spec.keypoint_names:
        name = aliases.get(name, name)
        out.append(("body", KEYPOINT_NAMES.index(name)) if name in KEYPOINT_NAMES else
                   ("extra", EXTRA_NAMES.index(name)))
    return tuple(out)


#: MPII joint order -> ("body", COCO index) or ("extra", EXTRA index); MPII's thorax is the figure's neck.
MPII_FROM_FIGURE: tuple[tuple[str, int], ...] = _from_figure(load_spec("mpii"), {"thorax": "neck"})
_CROWDPOSE_FROM_FIGURE = _from_figure(_CROWDPOSE, {"top_head": "head_top"})


# ---------------------------------------------------------------------------------------------- helpers
def _gather(ann: dict[str, Any], mapping: Sequence[tuple[str, int]]) -> np.ndarray:
    """(K, 3) ``x, y, v`` of an annotation's body / extra points picked by ``mapping`` (see :func:`_from_figure`)."""
    body = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    return np.stack([body[i] if src == "body" else ann["_extra"][i] for src, i in mapping])


def _flat(kpts: np.ndarray) -> list[float | int]:
    """``[x, y, v] * n`` with integer visibilities (COCO style)."""
    return [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(np.asarray(kpts).reshape(-1))]


def _part_box(kpts: np.ndarray, w: int, h: int, pad: float = 0.1) -> list[float]:
    """xywh box of the labelled points padded by ``pad`` of its size each side and clipped; zeros if none."""
    lab = kpts[kpts[:, 2] > 0, :2]
    if len(lab) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    lo, hi = lab.min(0), lab.max(0)
    margin = pad * np.maximum(hi - lo, 2.0)
    lo, hi = np.maximum(lo - margin, 0.0), np.minimum(hi + margin, [w - 1.0, h - 1.0])
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def _coco_file(fmt: str, cfg: SyntheticConfig, images: list[dict[str, Any]], anns: list[dict[str, Any]],
               categories: list[dict[str, Any]]) -> dict[str, Any]:
    return coco_file(cfg, images, anns, categories, description=f"sar synthetic people ({fmt} format)",
                     contributor=_CONTRIBUTOR)


# ------------------------------------------------------------------------------------- COCO-WholeBody
def _wholebody_fields(ann: dict[str, Any], w: int, h: int) -> dict[str, Any]:
    ext = ann["_extra"]
    foot, face = ext[EXTRA_FOOT], ext[EXTRA_FACE]
    left, right = ext[EXTRA_LEFT_HAND], ext[EXTRA_RIGHT_HAND]
    return {
        "foot_kpts": _flat(foot), "face_kpts": _flat(face),
        "lefthand_kpts": _flat(left), "righthand_kpts": _flat(right),
        "face_box": _part_box(face, w, h), "lefthand_box": _part_box(left, w, h),
        "righthand_box": _part_box(right, w, h),
        "face_valid": bool((face[:, 2] > 0).any()), "lefthand_valid": bool((left[:, 2] > 0).any()),
        "righthand_valid": bool((right[:, 2] > 0).any()), "foot_valid": bool((foot[:, 2] > 0).any()),
    }  # fmt: skip


def _strip(ann: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ann.items() if not k.startswith("_")}


def write_coco_wholebody(cfg: SyntheticConfig, root: Path, num_workers: int | None = None) -> Path:
    w, h = cfg.image_size
    for split, stream, count in (("train", TRAIN_STREAM, cfg.num_train), ("val", VAL_STREAM, cfg.num_val)):
        ids = list(range(1, count + 1))
        names = [f"{i:012d}.jpg" for i in ids]
        results = render_files(cfg, stream, root / f"{split}2017", names, num_workers, extra=True)
        images = image_entries(ids, names, cfg)
        anns: list[dict[str, Any]] = []
        for im, rec in zip(images, results):
            for a in rec:
                anns.append({"id": len(anns) + 1, "image_id": im["id"], **_strip(a), **_wholebody_fields(a, w, h)})
        dump_json(_coco_file("coco_wholebody", cfg, images, anns, coco_categories()),
              root / "annotations" / f"coco_wholebody_{split}_v1.0.json")
        if split == "val":
            dump_json(detections(cfg, images, anns),
                  root / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json")
    write_marker(root, cfg, "coco_wholebody")
    return root


# ------------------------------------------------------------------------------------------ CrowdPose
def crowd_index(keypoints: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]) -> float:
    """CrowdPose crowd index of one image: ``mean_i N_b(i) / N_a(i)`` over persons with labelled keypoints, where
    ``N_a(i)`` counts person i's labelled keypoints and ``N_b(i)`` the other persons' labelled keypoints inside
    person i's xywh box. 0 for fewer than two persons."""
    ratios = []
    for i, (kp, box) in enumerate(zip(keypoints, boxes)):
        n_a = int((kp[:, 2] > 0).sum())
        if n_a == 0:
            continue
        x, y, bw, bh = box
        n_b = 0
        for j, other in enumerate(keypoints):
            if j == i:
                continue
            lab = other[other[:, 2] > 0]
            n_b += int(((lab[:, 0] >= x) & (lab[:, 0] <= x + bw) & (lab[:, 1] >= y) & (lab[:, 1] <= y + bh)).sum())
        ratios.append(n_b / n_a)
    return float(np.mean(ratios)) if len(ratios) > 1 else 0.0


def write_crowdpose(cfg: SyntheticConfig, root: Path, num_workers: int | None = None) -> Path:
    skeleton = [[i + 1, j + 1] for i, j in _CROWDPOSE.skeleton]  # 1-based, as the real file
    categories = [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(CROWDPOSE_NAMES),
                   "skeleton": skeleton}]
    next_ann = 1
    for split, stream, count, offset in (("trainval", TRAIN_STREAM, cfg.num_train, 0),
                                        ("test", VAL_STREAM, cfg.num_val, _TEST_ID_OFFSET)):
        ids = [offset + i for i in range(1, count + 1)]
        names = [f"{i}.jpg" for i in ids]
        results = render_files(cfg, stream, root / "images", names, num_workers, extra=True)
        images = image_entries(ids, names, cfg)
        anns: list[dict[str, Any]] = []
        for im, rec in zip(images, results):
            kps = [_gather(a, _CROWDPOSE_FROM_FIGURE) for a in rec]
            im["crowdIndex"] = round(crowd_index(kps, [a["bbox"] for a in rec]), 2)
            for a, kp in zip(rec, kps):
                anns.append({"id": next_ann, "image_id": im["id"], "category_id": 1, "iscrowd": 0,
                             "bbox": a["bbox"], "keypoints": _flat(kp), "num_keypoints": int((kp[:, 2] > 0).sum())})
                next_ann += 1
        dump_json(_coco_file("crowdpose", cfg, images, anns, categories),
              root / "annotations" / f"mmpose_crowdpose_{split}.json")
        if split == "test":
            dump_json(detections(cfg, images, anns), root / "annotations" / "det_for_crowd_test_0.1_0.5.json")
    write_marker(root, cfg, "crowdpose")
    return root


# ----------------------------------------------------------------------------------------------- MPII
def write_mpii(cfg: SyntheticConfig, root: Path, num_workers: int | None = None) -> Path:
    from scipy.io import savemat

    for split, stream, count, offset in (("train", TRAIN_STREAM, cfg.num_train, 0),
                                        ("val", VAL_STREAM, cfg.num_val, 500_000_000)):
        names = [f"{offset + i:09d}.jpg" for i in range(1, count + 1)]
        results = render_files(cfg, stream, root / "images", names, num_workers, extra=True)
        records: list[dict[str, Any]] = []
        head_boxes: list[list[float]] = []
        for name, rec in zip(names, results):
            for a in rec:
                joints = _gather(a, MPII_FROM_FIGURE)
                vis = joints[:, 2] > 0
                if not vis.any():
                    continue
                x, y, bw, bh = a["bbox"]
                scale = max(bw, bh) / 200.0
                center = [x + bw / 2 + 1.0, y + bh / 2 + 1.0 - 15.0 * scale]  # 1-based, before mpii_bbox's shift
                xy = np.where(vis[:, None], joints[:, :2] + 1.0, -1.0)
                records.append({"image": name, "center": center, "scale": scale, "joints": xy.tolist(),
                                "joints_vis": vis.astype(int).tolist()})
                head_boxes.append([v + 1.0 for v in a["_head_box"]])
        dump_json(records, root / "annotations" / f"mpii_{split}.json")
        if split == "val":
            n = len(records)
            joints = np.asarray([r["joints"] for r in records], dtype=np.float64).reshape(n, 16, 2)
            vis = np.asarray([r["joints_vis"] for r in records], dtype=np.float64).reshape(n, 16)
            boxes = np.asarray(head_boxes, dtype=np.float64).reshape(n, 2, 2)  # (N, corner, xy)
            savemat(str(root / "annotations" / "mpii_gt_val.mat"), {
                "headboxes_src": np.transpose(boxes, (1, 2, 0)),  # (2, 2, N)
                "jnt_missing": np.transpose(1.0 - vis, (1, 0)),  # (16, N)
                "pos_gt_src": np.transpose(joints, (1, 2, 0)),  # (16, 2, N), 1-based
            })
    write_marker(root, cfg, "mpii")
    return root


# -------------------------------------------------------------------------------------------- OCHuman
def write_ochuman(cfg: SyntheticConfig, root: Path, num_workers: int | None = None) -> Path:
    next_ann = 1
    for split, stream, offset in (("val", VAL_STREAM, 0), ("test", TEST_STREAM, _TEST_ID_OFFSET)):
        ids = [offset + i for i in range(1, cfg.num_val + 1)]
        names = [f"{i:08d}.jpg" for i in ids]
        results = render_files(cfg, stream, root / "images", names, num_workers, extra=True)
        images = image_entries(ids, names, cfg)
        anns: list[dict[str, Any]] = []
        for im, rec in zip(images, results):
            for a in rec:
                anns.append({"id": next_ann, "image_id": im["id"], **_strip(a)})
                next_ann += 1
        dump_json(_coco_file("ochuman", cfg, images, anns, coco_categories()),
              root / "annotations" / f"ochuman_coco_format_{split}_range_0.00_1.00.json")
    write_marker(root, cfg, "ochuman")
    return root


WRITERS: dict[str, Callable[[SyntheticConfig, Path, int | None], Path]] = {
    "coco_wholebody": write_coco_wholebody,
    "crowdpose": write_crowdpose,
    "mpii": write_mpii,
    "ochuman": write_ochuman,
}
