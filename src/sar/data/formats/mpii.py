"""MPII Human Pose reader (the json used by HRNet / MMPose) and the official head-box file for PCKh.

**Annotation json** (``mpii_train.json`` / ``mpii_val.json``): a list of person records
``{"image": "015601864.jpg", "center": [x, y], "scale": s, "joints": [[x, y]] * 16, "joints_vis": [v] * 16}``.
Coordinates are MATLAB 1-based pixels; ``scale`` is the person height / 200 px; a missing joint is
``[-1, -1]`` with ``joints_vis = 0``.

:func:`load_mpii_instances` turns it into :class:`~sar.data.formats.InstanceRecord` dicts:

* **Box** (the MMPose 1.x ``MpiiDataset`` rule, reimplemented): the centre is moved down by ``15 * scale`` px
  ("avoid cropping limbs", when ``center[0] != -1``) and converted to 0-based (``- 1``); the box is the square of
  side ``200 * scale`` px around it: ``bbox = [cx - side/2, cy - side/2, side, side]`` (xywh). The 1.25 context
  padding is **not** baked in: the top-down sample builder pads every box by its ``padding`` (1.25), as for COCO,
  which reproduces HRNet's ``scale * 1.25`` crop. ``area = side ** 2``.
* **Keypoints** are converted to 0-based pixels (``joints - 1``, the HRNet / MMPose 0.x convention; MMPose 1.x
  keeps them 1-based). The official PCKh compares against 1-based ``pos_gt_src``, so predictions in this
  frame get ``+ 1`` first (:func:`sar.evaluation.pck.pckh_from_mat` does it).
* **Visibility**: ``visible = 1`` iff ``joints_vis > 0`` and the joint is not the ``(-1, -1)`` placeholder;
  missing joints get keypoint ``(0, 0)`` and ``visible = 0``.
* **image_id**: ``int(stem)`` of the image file name when every name of the file has a purely numeric stem
  (all MPII names do, e.g. ``015601864.jpg`` -> 15601864, the MMPose rule, stable across files); otherwise
  the index of the name in the sorted list of the file's distinct names (stable for a given file).
* **ann_id**: the record's index in the list (the order of ``mpii_gt_val.mat`` for the val split).
* ``bbox_score = 1.0``. Every record is kept (MPII has no crowd flag); a person without any visible joint
  simply has all-zero weights.

Malformed records raise ``ValueError`` naming the file and the record index.

:func:`load_mpii_headboxes` reads the official ``mpii_gt_val.mat`` (``headboxes_src`` (2, 2, N),
``jnt_missing`` (16, N), ``pos_gt_src`` (16, 2, N)) with :func:`scipy.io.loadmat`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sar.data.formats import InstanceRecord, read_json
from sar.data.spec import KeypointSpec

__all__ = [
    "MPII_NUM_JOINTS",
    "PIXEL_STD",
    "MpiiHeadboxes",
    "load_mpii_headboxes",
    "load_mpii_instances",
    "mpii_bbox",
    "mpii_image_ids",
]

PathLike = str | os.PathLike[str]

MPII_NUM_JOINTS = 16
PIXEL_STD = 200.0  #: MPII ``scale`` unit: person height / 200 px
CENTER_SHIFT = 15.0  #: centre moved down by ``CENTER_SHIFT * scale`` px


def mpii_bbox(center: tuple[float, float] | np.ndarray, scale: float) -> np.ndarray:
    """The xywh box (0-based pixels, float64) of an MPII ``center`` (1-based) and ``scale`` (see module doc)."""
    cx, cy = float(center[0]), float(center[1])
    if cx != -1:
        cy += CENTER_SHIFT * scale
    cx, cy = cx - 1.0, cy - 1.0
    side = PIXEL_STD * scale
    return np.array([cx - side / 2, cy - side / 2, side, side], dtype=np.float64)


def mpii_image_ids(names: list[str]) -> dict[str, int]:
    """Map image file names to integer ids: ``int(stem)`` if all stems are numeric, else sorted-name index."""
    stems = {name: Path(name).stem for name in names}
    if stems and all(s.isdigit() for s in stems.values()):
        ids = {name: int(stem) for name, stem in stems.items()}
        if len(set(ids.values())) == len(ids):
            return ids
    return {name: i for i, name in enumerate(sorted(set(names)))}


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _parse_record(
    rec: Any, num_joints: int, where: str
) -> tuple[str, np.ndarray, float, np.ndarray, np.ndarray]:
    if not isinstance(rec, Mapping):
        raise ValueError(f"{where}: not an object")  # noqa: TRY004
    missing = [k for k in ("image", "center", "scale", "joints", "joints_vis") if k not in rec]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    image = rec["image"]
    if not isinstance(image, str) or not image:
        raise ValueError(f"{where}: 'image' must be a non-empty string, got {image!r}")
    center = rec["center"]
    if not isinstance(center, list | tuple) or len(center) != 2:
        raise ValueError(f"{where}: 'center' must be [x, y], got {center!r}")
    c = np.array([_number(v, "center", where) for v in center])
    scale = _number(rec["scale"], "scale", where)
    if scale <= 0:
        raise ValueError(f"{where}: 'scale' must be > 0, got {scale}")
    try:
        joints = np.asarray(rec["joints"], dtype=np.float64)
        vis = np.asarray(rec["joints_vis"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: 'joints' / 'joints_vis' must be numbers ({err})") from err
    if joints.shape != (num_joints, 2) or vis.shape != (num_joints,):
        raise ValueError(
            f"{where}: expected 'joints' ({num_joints}, 2) and 'joints_vis' ({num_joints},), "
            f"got {joints.shape} and {vis.shape}"
        )
    if not (np.all(np.isfinite(joints)) and np.all(np.isfinite(vis))):
        raise ValueError(f"{where}: joints contain non-finite values")
    return image, c, scale, joints, vis


def load_mpii_instances(ann_file: PathLike, image_root: PathLike, spec: KeypointSpec) -> list[InstanceRecord]:
    """Read every person of an MPII json as an :class:`InstanceRecord` (rules in the module docstring).

    Args:
        ann_file: the MPII json (a list of person records).
        image_root: folder the records' ``image`` names are relative to.
        spec: keypoint spec; must have 16 keypoints (the MPII order).
    """
    if spec.num_keypoints != MPII_NUM_JOINTS:
        raise ValueError(
            f"{ann_file}: the MPII format has 16 joints, spec {spec.name!r} has {spec.num_keypoints}"
        )
    data = read_json(ann_file)
    if not isinstance(data, list):
        raise ValueError(f"{ann_file}: an MPII annotation file must be a list of person records")  # noqa: TRY004

    parsed = [_parse_record(rec, MPII_NUM_JOINTS, f"{ann_file}: record #{i}") for i, rec in enumerate(data)]
    image_ids = mpii_image_ids([p[0] for p in parsed])
    records: list[InstanceRecord] = []
    for i, (image, center, scale, joints, vis) in enumerate(parsed):
        visible = (vis > 0) & ~np.all(joints == -1.0, axis=1)
        keypoints = np.where(visible[:, None], joints - 1.0, 0.0)
        box = mpii_bbox(center, scale)
        records.append(
            InstanceRecord(
                image_path=str(Path(image_root) / image),
                image_id=image_ids[image],
                ann_id=i,
                bbox=box.astype(np.float32),
                bbox_score=1.0,
                area=float(box[2] * box[3]),
                keypoints=keypoints.astype(np.float32),
                visible=visible.astype(np.float32),
            )
        )
    return records


class MpiiHeadboxes(dict):
    """Arrays of the official ``mpii_gt_val.mat`` in person-major layout (a dict subclass, for typing only).

    Keys: ``headboxes`` (N, 2, 2) ``[[x1, y1], [x2, y2]]``, ``headbox_sizes`` (N,) box diagonal (px),
    ``visible`` (N, 16) = ``1 - jnt_missing``, ``gt`` (N, 16, 2) 1-based ``pos_gt_src``.
    """


def load_mpii_headboxes(mat_file: PathLike) -> MpiiHeadboxes:
    """Read ``headboxes_src`` (2, 2, N), ``jnt_missing`` (16, N) and ``pos_gt_src`` (16, 2, N) from the official
    MPII validation ``.mat``; returns :class:`MpiiHeadboxes` (person-major arrays, float64).

    Raises ``ValueError`` naming the file when a field is missing or has the wrong shape.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(os.fspath(mat_file))
    except (OSError, ValueError) as err:
        raise ValueError(f"{mat_file}: cannot read MATLAB file ({err})") from err
    for key in ("headboxes_src", "jnt_missing", "pos_gt_src"):
        if key not in mat:
            raise ValueError(f"{mat_file}: missing field {key!r}")
    headboxes_src = np.asarray(mat["headboxes_src"], dtype=np.float64)
    jnt_missing = np.asarray(mat["jnt_missing"], dtype=np.float64)
    pos_gt_src = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    if headboxes_src.shape == (2, 2):  # a single person saved without its trailing axis
        headboxes_src = headboxes_src[:, :, None]
    n = headboxes_src.shape[-1] if headboxes_src.ndim == 3 else -1
    if (
        headboxes_src.shape != (2, 2, n)
        or jnt_missing.shape != (MPII_NUM_JOINTS, n)
        or pos_gt_src.shape != (MPII_NUM_JOINTS, 2, n)
    ):
        raise ValueError(
            f"{mat_file}: expected headboxes_src (2, 2, N), jnt_missing (16, N), pos_gt_src (16, 2, N); got "
            f"{headboxes_src.shape}, {jnt_missing.shape}, {pos_gt_src.shape}"
        )
    headboxes = np.transpose(headboxes_src, (2, 0, 1))  # (N, corner, xy)
    return MpiiHeadboxes(
        headboxes=headboxes,
        headbox_sizes=np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=1),
        visible=1.0 - np.transpose(jnt_missing, (1, 0)),
        gt=np.transpose(pos_gt_src, (2, 0, 1)),
    )
