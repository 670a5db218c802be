"""Format readers: annotation files on disk -> a list of :class:`InstanceRecord` (one per person box).

Each reader lives in its own module (``coco.py`` for COCO, COCO-WholeBody, CrowdPose and OCHuman; others
for MPII and Human3.6M) and returns plain dicts with the keys of :class:`InstanceRecord`, so the top-down
sample builder does not care which format a record came from. Malformed records raise ``ValueError``
naming the file and the record id; so do duplicate image / annotation ids and an invalid ground-truth ``area``
(the validation rules are listed in ``docs/datasets.md``, "Validation rules: ground truth and predictions").
"""

from __future__ import annotations

import json
import os
from typing import Any, TypedDict

import numpy as np

__all__ = ["InstanceRecord", "read_json"]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Load a JSON annotation file; a malformed file raises ``ValueError`` naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


class InstanceRecord(TypedDict):
    """One person instance (a plain dict at runtime). Coordinates are image pixels, ``(x, y)`` order."""

    image_path: str
    image_id: int
    ann_id: int  # -1 for detector boxes
    bbox: np.ndarray  # (4,) float32 xywh
    bbox_score: float  # 1.0 for ground-truth boxes
    area: float
    keypoints: np.ndarray  # (K, 2) float32
    visible: np.ndarray  # (K,) float32, 1 where the annotation's v > 0
