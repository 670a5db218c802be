"""COCO-format keypoint reader (COCO, COCO-WholeBody, CrowdPose, OCHuman, and COCO-style H36M 2D).

:func:`load_coco_instances` turns an annotation json (plus, optionally, a detection results json) into
:class:`~sar.data.formats.InstanceRecord` dicts. The rules:

Every mode: image ids must be unique (a duplicate would send crops to the wrong file): ``ValueError`` naming the
file and the duplicated ids (the first few and their count).

Ground-truth mode (``bbox_file=None``): one record per person annotation, in file order, except that
  * crowd annotations (``iscrowd=1``) are skipped;
  * labelled keypoints (``v > 0``) far outside the image, ``x`` outside ``[-0.5 W, 1.5 W]`` or ``y`` outside
    ``[-0.5 H, 1.5 H]`` (when the image entry gives its width ``W`` and height ``H``), are made unlabelled
    (``visible = 0``, coordinates zeroed) and counted, *before* the next rule; a WARNING gives the count;
  * annotations with fewer than ``min_keypoints`` labelled keypoints (``v > 0``, counted over the
    keypoint fields read, so for body-only files this is COCO's ``num_keypoints``) are skipped;
  * the box is clipped to the image rectangle ``[0, width] x [0, height]`` (when the image entry gives
    its size) and the annotation is skipped if the clipped width or height is <= 0.
  The number of skipped records of each kind (and of unlabelled out-of-image keypoints) is logged at INFO level.
  Annotation ids must be unique (``ValueError`` naming the file and the duplicated ids). ``area``, when given
  (not absent or null), must be a finite number > 0 for every annotation, crowd ones included (``ValueError``
  naming the file and the annotation id); when absent, a record's ``area`` is ``w * h`` of its (clipped) box.

Detection mode (``bbox_file`` given, a COCO results list ``{image_id, category_id, bbox, score}``): one
record per detection with ``category_id == 1`` and ``score >= det_score_thr``; keypoints and visibility are
zeros, ``ann_id = -1``, ``area = w * h``. Boxes are kept as given (not clipped); degenerate boxes
(``w <= 0`` or ``h <= 0``) are skipped and counted. An empty file, or one whose every detection is skipped, gives
an empty list (the counts are logged); refusing an empty loader is the DataModule's business.

Keypoints are read from ``keypoint_fields`` (each a flat ``[x, y, v] * n`` list) concatenated in order.
COCO-WholeBody stores its 133 points as ``keypoints`` (17 body) + ``foot_kpts`` (6) + ``face_kpts`` (68) +
``lefthand_kpts`` (21) + ``righthand_kpts`` (21): :data:`WHOLEBODY_KEYPOINT_FIELDS`. With the default
``keypoint_fields=None`` the fields are chosen per file: ``("keypoints",)`` if the first annotation's
``keypoints`` holds ``3 * K`` values, else the whole-body fields if they add up to ``3 * K``.

Malformed content raises ``ValueError`` naming the file and the annotation id (or detection index).

The same ground-truth checks serve the evaluators: :func:`validate_coco_gt` (unique image and annotation ids,
``area`` a finite number > 0 or derived from the bbox) is what ``load_coco_dict(..., validate=True)`` runs.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from sar.data.formats import InstanceRecord, read_json
from sar.data.spec import KeypointSpec

__all__ = [
    "BODY_KEYPOINT_FIELDS",
    "WHOLEBODY_KEYPOINT_FIELDS",
    "CocoImage",
    "InstanceRecord",
    "check_unique_ids",
    "coco_source",
    "load_coco_dict",
    "load_coco_images",
    "load_coco_instances",
    "load_coco_people",
    "validate_coco_gt",
    "validated_area",
]

log = logging.getLogger(__name__)

BODY_KEYPOINT_FIELDS: tuple[str, ...] = ("keypoints",)
WHOLEBODY_KEYPOINT_FIELDS: tuple[str, ...] = (
    "keypoints",
    "foot_kpts",
    "face_kpts",
    "lefthand_kpts",
    "righthand_kpts",
)
PERSON_CATEGORY_ID = 1

PathLike = str | os.PathLike[str]


class CocoImage(TypedDict):
    """An image entry of a COCO annotation file; ``width`` / ``height`` are 0 when not given."""

    file_name: str
    width: int
    height: int


def check_unique_ids(ids: Iterable[Any], what: str, source: PathLike | str) -> None:
    """Raise ``ValueError`` naming ``source`` and the duplicated ``what`` ids (the first five and their count)."""
    counts = Counter(ids)
    dups = [i for i, c in counts.items() if c > 1]
    if dups:
        more = ", ..." if len(dups) > 5 else ""
        shown = ", ".join(str(i) for i in dups[:5])
        raise ValueError(
            f"{source}: duplicate {what} ids [{shown}{more}] ({len(dups)} {what} ids occur more than once)"
        )


def validated_area(ann: Mapping[str, Any], where: str) -> float | None:
    """An annotation's ``area``: ``None`` when absent (or null), else a finite number > 0 (``ValueError`` naming
    ``where`` otherwise; booleans and strings are refused)."""
    area = ann.get("area")
    if area is None:
        return None
    if isinstance(area, bool) or not isinstance(area, numbers.Real) or not math.isfinite(area) or area <= 0:
        raise ValueError(f"{where}: area must be a finite number > 0, got {area!r}")
    return float(area)


def _int_id(item: Any, key: str, what: str, index: int, source: PathLike | str) -> int:
    if not isinstance(item, Mapping) or key not in item:
        raise ValueError(f"{source}: {what} #{index} is not an object with an {key!r}")
    value = item[key]
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(value)
        return int(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{source}: {what} #{index} has a non-integer {key} {value!r}") from err


def validate_coco_gt(data: Any, source: PathLike | str) -> dict[str, Any]:
    """Check a COCO ground-truth dict in place and return it: the ground-truth rules of the evaluators.

    * ``images`` must be a list of objects with unique integer ids;
    * ``annotations`` (when present) must be a list of objects with unique integer ids;
    * every annotation's ``area`` (crowd ones included: COCOeval uses it) must be a finite number > 0; where it is
      absent (or null) it is **set** to ``w * h`` of the annotation's ``bbox``, which must then be > 0.

    Errors are ``ValueError`` naming ``source`` and the annotation id (or the duplicated ids). The dict is
    modified (areas filled in): pass a copy if the caller's dict must stay as it was.
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{source}: not a COCO annotation file (no 'images' list)")  # noqa: TRY004
    check_unique_ids(
        (_int_id(img, "id", "image entry", i, source) for i, img in enumerate(data["images"])),
        "image",
        source,
    )
    annotations = data.get("annotations")
    if annotations is None:
        return data
    if not isinstance(annotations, list):
        raise ValueError(f"{source}: 'annotations' is not a list")  # noqa: TRY004
    check_unique_ids(
        (_int_id(ann, "id", "annotation", i, source) for i, ann in enumerate(annotations)),
        "annotation",
        source,
    )
    for ann in annotations:
        where = f"{source}: annotation id {ann['id']}"
        if validated_area(ann, where) is not None:
            continue
        box = _xywh(ann.get("bbox"), f"{where} (no area: it is derived from the bbox)")
        area = float(box[2] * box[3])
        if not area > 0:
            raise ValueError(f"{where}: no area, and the bbox w * h = {area} is not > 0")
        ann["area"] = area
    return data


def _index_images(data: Any, ann_file: PathLike) -> dict[int, CocoImage]:
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise ValueError(f"{ann_file}: not a COCO annotation file (no 'images' list)")  # noqa: TRY004
    images: dict[int, CocoImage] = {}
    ids: list[int] = []
    for i, image in enumerate(data["images"]):
        try:
            image_id = int(image["id"])
            images[image_id] = CocoImage(
                file_name=str(image["file_name"]),
                width=int(image.get("width") or 0),
                height=int(image.get("height") or 0),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{ann_file}: malformed image entry #{i} ({err!r})") from err
        ids.append(image_id)
    if len(images) != len(ids):
        check_unique_ids(ids, "image", ann_file)
    return images


def load_coco_images(ann_file: PathLike) -> dict[int, CocoImage]:
    """Map ``image_id -> {file_name, width, height}`` for a COCO annotation file."""
    return _index_images(read_json(ann_file), ann_file)


def _xywh(values: Any, where: str) -> np.ndarray:
    try:
        box = (
            np.asarray(values, dtype=np.float64)
            if isinstance(values, list | tuple | np.ndarray)
            else np.zeros(0)
        )
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {values!r}")
    return box


def _clip_xywh(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip an xywh box to ``[0, width] x [0, height]`` (no-op for an unknown image size)."""
    if width <= 0 or height <= 0:
        return box
    x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
    x2, y2 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
    return np.array([x1, y1, x2 - x1, y2 - y1])


def _pick_fields(annotations: Sequence[Mapping[str, Any]], num_keypoints: int) -> tuple[str, ...]:
    """Choose the keypoint fields of a file from its first annotation (see the module docstring)."""
    for ann in annotations:
        if isinstance(ann, Mapping) and isinstance(ann.get("keypoints"), list):
            if len(ann["keypoints"]) == 3 * num_keypoints:
                return BODY_KEYPOINT_FIELDS
            lengths = [len(ann.get(f) or []) for f in WHOLEBODY_KEYPOINT_FIELDS]
            if sum(lengths) == 3 * num_keypoints:
                return WHOLEBODY_KEYPOINT_FIELDS
            break
    return BODY_KEYPOINT_FIELDS  # mismatches are then reported per annotation


def _keypoints(
    ann: Mapping[str, Any], fields: Sequence[str], num_keypoints: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``fields`` of an annotation into ``(keypoints (K, 2), visible (K,))`` float32."""
    flat: list[Any] = []
    for name in fields:
        values = ann.get(name)
        if not isinstance(values, list):
            raise ValueError(f"{where}: keypoint field {name!r} is missing or not a list")  # noqa: TRY004
        flat.extend(values)
    if len(flat) != 3 * num_keypoints:
        raise ValueError(
            f"{where}: keypoint fields {list(fields)} hold {len(flat)} values, "
            f"expected 3 * K = {3 * num_keypoints} for the spec"
        )
    try:
        triplets = np.asarray(flat, dtype=np.float64).reshape(num_keypoints, 3)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: keypoints must be numbers ({err})") from err
    if not np.all(np.isfinite(triplets)):
        raise ValueError(f"{where}: keypoints contain non-finite values")
    return triplets[:, :2].astype(np.float32), (triplets[:, 2] > 0).astype(np.float32)


def _unlabel_outside(keypoints: np.ndarray, visible: np.ndarray, width: int, height: int) -> int:
    """Make labelled keypoints with ``x`` outside ``[-0.5 W, 1.5 W]`` or ``y`` outside ``[-0.5 H, 1.5 H]``
    unlabelled (in place; coordinates zeroed) and return how many there were (0 for an unknown image size)."""
    if width <= 0 or height <= 0:
        return 0
    x, y = keypoints[:, 0].astype(np.float64), keypoints[:, 1].astype(np.float64)
    outside = (visible > 0) & (
        (x < -0.5 * width) | (x > 1.5 * width) | (y < -0.5 * height) | (y > 1.5 * height)
    )
    visible[outside] = 0.0
    keypoints[outside] = 0.0
    return int(outside.sum())


def _annotation_image(ann: Mapping[str, Any], images: Mapping[int, CocoImage], where: str) -> tuple[int, CocoImage]:
    """The image an annotation belongs to: ``(image_id, image)``; ``ValueError`` naming ``where`` otherwise."""
    try:
        image_id = int(ann["image_id"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: missing or non-integer image_id ({err!r})") from err
    if image_id not in images:
        raise ValueError(f"{where}: image_id {image_id} is not in the file's images")
    return image_id, images[image_id]


def _image_path(image_root: PathLike, image: CocoImage) -> str:
    return str(Path(image_root) / image["file_name"])


def load_coco_instances(
    ann_file: PathLike,
    image_root: PathLike,
    spec: KeypointSpec,
    bbox_file: PathLike | None = None,
    det_score_thr: float = 0.0,
    min_keypoints: int = 1,
    keypoint_fields: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> list[InstanceRecord]:
    """Read person instances from a COCO keypoint file (GT boxes) or a detection results file.

    Args:
        ann_file: COCO annotation json (``images`` + ``annotations``).
        image_root: folder the images' ``file_name`` are relative to.
        spec: keypoint spec; its K fixes the expected keypoint count.
        bbox_file: optional COCO results json of person detections; switches to detection mode.
        det_score_thr: minimum detection score kept (detection mode).
        min_keypoints: minimum labelled keypoints for a GT person to be kept (GT mode; 0 keeps all).
        keypoint_fields: annotation fields concatenated into the K keypoints; None chooses per file.
        data: the parsed content of ``ann_file`` when the caller has read it already (not modified); None reads
            the file. Messages name ``ann_file`` either way.

    Returns:
        One :class:`InstanceRecord` per kept person, in file order.
    """
    if data is None:
        data = read_json(ann_file)
    images = _index_images(data, ann_file)
    if bbox_file is not None:
        return _detection_records(bbox_file, images, image_root, spec, det_score_thr)

    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise ValueError(f"{ann_file}: no 'annotations' list")  # noqa: TRY004
    num = spec.num_keypoints
    fields = tuple(keypoint_fields) if keypoint_fields is not None else _pick_fields(annotations, num)

    ann_ids = [_int_id(ann, "id", "annotation", i, ann_file) for i, ann in enumerate(annotations)]
    check_unique_ids(ann_ids, "annotation", ann_file)

    records: list[InstanceRecord] = []
    skipped = {"crowd": 0, "few_keypoints": 0, "empty_box": 0}
    outside = 0
    for ann, ann_id in zip(annotations, ann_ids, strict=True):
        where = f"{ann_file}: annotation id {ann_id}"
        given_area = validated_area(ann, where)  # crowd annotations too: the evaluators score with them
        if ann.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        image_id, image = _annotation_image(ann, images, where)
        keypoints, visible = _keypoints(ann, fields, num, where)
        outside += _unlabel_outside(keypoints, visible, image["width"], image["height"])
        if int(visible.sum()) < min_keypoints:
            skipped["few_keypoints"] += 1
            continue
        box = _clip_xywh(_xywh(ann.get("bbox"), where), image["width"], image["height"])
        if box[2] <= 0 or box[3] <= 0:
            skipped["empty_box"] += 1
            continue
        area = given_area if given_area is not None else float(box[2] * box[3])
        records.append(
            InstanceRecord(
                image_path=_image_path(image_root, image),
                image_id=image_id,
                ann_id=ann_id,
                bbox=box.astype(np.float32),
                bbox_score=1.0,
                area=area,
                keypoints=keypoints,
                visible=visible,
            )
        )
    if outside:
        log.warning(
            "%s: %d labelled keypoints lie far outside their image ([-0.5, 1.5] x the image size) and were made "
            "unlabelled",
            ann_file,
            outside,
        )
    log.info(
        "%s: %d GT instances (skipped %d crowd, %d with < %d keypoints, %d empty boxes after clipping; "
        "%d labelled keypoints outside the image made unlabelled)",
        ann_file,
        len(records),
        skipped["crowd"],
        skipped["few_keypoints"],
        min_keypoints,
        skipped["empty_box"],
        outside,
    )
    return records


def load_coco_people(
    ann_file: PathLike,
    image_root: PathLike,
    spec: KeypointSpec,
    data: Mapping[str, Any] | None = None,
    keep_empty: bool = True,
) -> list[dict[str, Any]]:
    """Every image of a COCO keypoint file with all its people: the records of the multi-person task.

    Per image: ``image_path``, ``image_id``, ``width``, ``height``; ``keypoints`` (N, K, 2) and ``visible`` (N, K)
    float32, ``areas`` (N,) and ``boxes`` (N, 4, xywh) float32 of the people that have at least one labelled
    keypoint and are not crowd; ``ignore`` (list of ``{"segmentation", "bbox"}``) of the regions the losses must
    not see: ``iscrowd`` annotations and people with no labelled keypoint (as HigherHRNet and DEKR mask them);
    ``num_crowd``. ``keep_empty=False`` drops images with no annotation at all (HigherHRNet's training filter);
    the count is logged. Validation as :func:`load_coco_instances` (ids, areas, keypoint fields; labelled
    keypoints far outside the image are made unlabelled and counted). ``data``: the file's parsed content when
    the caller has read it already.
    """
    if data is None:
        data = read_json(ann_file)
    images = _index_images(data, ann_file)
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise ValueError(f"{ann_file}: no 'annotations' list")  # noqa: TRY004
    num = spec.num_keypoints
    fields = _pick_fields(annotations, num)
    ann_ids = [_int_id(ann, "id", "annotation", i, ann_file) for i, ann in enumerate(annotations)]
    check_unique_ids(ann_ids, "annotation", ann_file)
    people: dict[int, list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]] = {i: [] for i in images}
    ignore: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    crowd: dict[int, int] = dict.fromkeys(images, 0)
    outside = unlabelled = 0
    for ann, ann_id in zip(annotations, ann_ids, strict=True):
        where = f"{ann_file}: annotation id {ann_id}"
        given_area = validated_area(ann, where)
        image_id, image = _annotation_image(ann, images, where)
        box = _clip_xywh(_xywh(ann.get("bbox"), where), image["width"], image["height"])
        region = {"segmentation": ann.get("segmentation"), "bbox": box.tolist()}
        if ann.get("iscrowd", 0):
            crowd[image_id] += 1
            ignore[image_id].append(region)
            continue
        keypoints, visible = _keypoints(ann, fields, num, where)
        outside += _unlabel_outside(keypoints, visible, image["width"], image["height"])
        if not visible.any() or box[2] <= 0 or box[3] <= 0:
            unlabelled += 1
            ignore[image_id].append(region)
            continue
        area = given_area if given_area is not None else float(box[2] * box[3])
        people[image_id].append((keypoints, visible, area, box.astype(np.float32)))
    records: list[dict[str, Any]] = []
    dropped = 0
    for image_id, image in images.items():
        persons = people[image_id]
        if not keep_empty and not persons and not ignore[image_id]:
            dropped += 1
            continue
        records.append({
            "image_path": _image_path(image_root, image), "image_id": image_id,
            "width": image["width"], "height": image["height"],
            "keypoints": np.stack([p[0] for p in persons]) if persons else np.zeros((0, num, 2), np.float32),
            "visible": np.stack([p[1] for p in persons]) if persons else np.zeros((0, num), np.float32),
            "areas": np.array([p[2] for p in persons], dtype=np.float32),
            "boxes": np.stack([p[3] for p in persons]) if persons else np.zeros((0, 4), np.float32),
            "ignore": ignore[image_id], "num_crowd": crowd[image_id],
        })
    log.info(
        "%s: %d images, %d people (%d crowd regions and %d people without labelled keypoints masked out of the "
        "losses; %d images without annotations %s; %d labelled keypoints outside the image made unlabelled)",
        ann_file, len(records), sum(len(r["areas"]) for r in records), sum(crowd.values()), unlabelled, dropped,
        "dropped" if not keep_empty else "kept", outside,
    )
    return records


def _detection_records(
    bbox_file: PathLike,
    images: Mapping[int, CocoImage],
    image_root: PathLike,
    spec: KeypointSpec,
    det_score_thr: float,
) -> list[InstanceRecord]:
    detections = read_json(bbox_file)
    if not isinstance(detections, list):
        raise ValueError(f"{bbox_file}: a detection file must be a COCO results list")  # noqa: TRY004
    num = spec.num_keypoints
    records: list[InstanceRecord] = []
    skipped = {"category": 0, "low_score": 0, "empty_box": 0}
    for i, det in enumerate(detections):
        where = f"{bbox_file}: detection #{i}"
        if not isinstance(det, Mapping):
            raise ValueError(f"{where}: not an object")  # noqa: TRY004
        try:
            category = int(det.get("category_id", PERSON_CATEGORY_ID))
            score = float(det["score"])
            image_id = int(det["image_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: missing or malformed image_id / score ({err!r})") from err
        if image_id not in images:
            raise ValueError(f"{where}: image_id {image_id} is not in the annotation file")
        if not math.isfinite(score):
            raise ValueError(f"{where}: score {score} is not finite")
        box = _xywh(det.get("bbox"), where)
        if category != PERSON_CATEGORY_ID:
            skipped["category"] += 1
            continue
        if score < det_score_thr:
            skipped["low_score"] += 1
            continue
        if box[2] <= 0 or box[3] <= 0:
            skipped["empty_box"] += 1
            continue
        records.append(
            InstanceRecord(
                image_path=_image_path(image_root, images[image_id]),
                image_id=image_id,
                ann_id=-1,
                bbox=box.astype(np.float32),
                bbox_score=score,
                area=float(box[2] * box[3]),
                keypoints=np.zeros((num, 2), np.float32),
                visible=np.zeros(num, np.float32),
            )
        )
    log.info(
        "%s: %d detections kept (skipped %d non-person, %d with score < %g, %d empty boxes)",
        bbox_file,
        len(records),
        skipped["category"],
        skipped["low_score"],
        det_score_thr,
        skipped["empty_box"],
    )
    return records


def coco_source(ann_file: str | os.PathLike[str] | Mapping[str, Any]) -> str:
    return "<dict>" if isinstance(ann_file, Mapping) else os.fspath(ann_file)


def load_coco_dict(
    ann_file: str | os.PathLike[str] | Mapping[str, Any], validate: bool = False
) -> dict[str, Any]:
    """The COCO annotation dict for a path or an in-memory dict.

    ``validate=False``: the dict as read (an in-memory dict is not copied). ``validate=True``: the ground-truth
    checks of :func:`sar.data.formats.coco.validate_coco_gt` (unique image and annotation ids; every ``area`` a
    finite number > 0, set to the bbox ``w * h`` where absent), on a deep copy of an in-memory dict; errors are
    ``ValueError`` naming the file (``<dict>`` for a dict) and the record.
    """
    if isinstance(ann_file, Mapping):
        data = copy.deepcopy(dict(ann_file)) if validate else dict(ann_file)
    else:
        data = read_json(ann_file)
        if not isinstance(data, dict):
            raise TypeError(
                f"{os.fspath(ann_file)}: expected a COCO annotation object, got {type(data).__name__}"
            )
    if validate:
        validate_coco_gt(data, coco_source(ann_file))
    return data
