"""Human3.6M reader (the preprocessed ``*_body3d.npz`` + ``cameras.pkl`` of mmpose / ``shared/data/h36m``) and the
evaluation protocol of RLE (docs/datasets.md "Human3.6M", docs/method.md "3D").

**npz** keys: ``imgname`` (N,) such as ``S1/S1_Directions_1.54138969/S1_Directions_1.54138969_000001.jpg``,
``center`` (N, 2) and ``scale`` (N,) (box side / 200 px), ``part`` (N, 17, 3) pixels + visibility, ``S`` (N, 17, 4)
camera-frame joints in **metres** + visibility. **cameras.pkl**: ``{(subject, camera id): {f (2, 1), c (2, 1),
R, T, k, p, w, h, ...}}``; only the intrinsics ``f``, ``c`` are read (the joints are camera-frame already; the
back-projection is a pinhole without distortion, as RLE's).

An image name gives subject, action (trial suffix ``_1`` / `` 1`` removed: ``Directions_1`` is a second trial of
``Directions``), trial, camera id and frame number. The protocol (:class:`H36MProtocol`):

* subjects: train S1, S5, S6, S7, S8; test S9, S11;
* frames: every ``frame_step``-th (5 for training, 64 for testing), counted on the frame numbers of the names
  (frame ``n`` is kept when ``(n - 1) % step == 0``; the names count from 1): files that are already subsampled
  keep the frames of the protocol, not every 5th file;
* excluded sequences: RLE / LocLLM skip ``s_09_act_05_subact_02``, ``s_09_act_10_subact_02`` and
  ``s_09_act_13_subact_01``, i.e. in these files' names (action 05 Greeting, 10 SittingDown, 13 Waiting; our
  translation of the sub-action numbers, the three S9 sequences known to have desynchronised ground truth):
  :data:`RLE_EXCLUDED` = ``S9_Greeting``, ``S9_SittingDown_1``, ``S9_Waiting_1`` (a config key,
  ``dataset.protocol.exclude``).

Bad input raises ``ValueError`` naming the file and the record (index and image name).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RLE_EXCLUDED", "H36MProtocol", "load_cameras", "load_h36m", "parse_image_name"]

PathLike = str | os.PathLike[str]
NUM_JOINTS = 17
#: RLE's excluded test sequences (``s_09_act_05_subact_02``, ``s_09_act_10_subact_02``, ``s_09_act_13_subact_01``)
#: written as ``<subject>_<trial>`` of these files' names (our translation, module docstring).
RLE_EXCLUDED = ("S9_Greeting", "S9_SittingDown_1", "S9_Waiting_1")

_NAME = re.compile(r"^(S\d+)_(.+)\.(\w+)_(\d+)\.\w+$")


def parse_image_name(name: str) -> dict[str, Any]:
    """``subject``, ``trial`` (``Directions_1``), ``action`` (``Directions``), ``camera`` and ``frame`` of an image
    name (its basename is parsed). ValueError when it does not follow the Human3.6M naming."""
    base = Path(str(name)).name
    m = _NAME.match(base)
    if m is None:
        raise ValueError(f"image name {name!r} does not follow S<i>_<Action>.<camera>_<frame>.jpg")
    subject, trial, camera, frame = m.group(1), m.group(2).replace(" ", "_"), m.group(3), int(m.group(4))
    action = re.sub(r"_\d+$", "", trial)
    return {"subject": subject, "trial": trial, "action": action, "camera": camera, "frame": frame}


@dataclass(frozen=True)
class H36MProtocol:
    """Which frames a split keeps: ``subjects``, every ``frame_step``-th frame, minus the ``exclude`` sequences
    (``<subject>_<trial>``)."""

    subjects: tuple[str, ...]
    frame_step: int = 1
    exclude: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], split: str) -> H36MProtocol:
        """From ``dataset.protocol``: ``{train_subjects, test_subjects, train_frame_step, test_frame_step,
        exclude}`` for ``split`` ``train`` or ``test``."""
        return cls(tuple(str(s) for s in cfg[f"{split}_subjects"]), int(cfg[f"{split}_frame_step"]),
                   tuple(str(s) for s in (cfg["exclude"] or ())))

    def keeps(self, info: Mapping[str, Any]) -> bool:
        if info["subject"] not in self.subjects:
            return False
        if (int(info["frame"]) - 1) % max(int(self.frame_step), 1):
            return False
        return f"{info['subject']}_{info['trial']}" not in self.exclude


def load_cameras(path: PathLike) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """``{(subject, camera id): {"f": (2,), "c": (2,)}}`` from a Human3.6M ``cameras.pkl``."""
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)  # a local dataset file the user points to
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path}: cannot read the camera file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict keyed by (subject, camera id), got {type(data).__name__}")  # noqa: TRY004
    out = {}
    for key, cam in data.items():
        try:
            f = np.asarray(cam["f"], dtype=np.float64).ravel()
            c = np.asarray(cam["c"], dtype=np.float64).ravel()
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: camera {key!r} has no usable f / c ({err})") from err
        if f.shape != (2,) or c.shape != (2,) or not (np.isfinite(f).all() and np.isfinite(c).all()) or (f <= 0).any():
            raise ValueError(f"{path}: camera {key!r}: f and c must be 2 finite numbers each (f > 0), got f={f}, c={c}")
        out[(str(key[0]), str(key[1]))] = {"f": f, "c": c}
    return out


def load_h36m(ann_file: PathLike, image_root: PathLike, camera_file: PathLike,
              protocol: H36MProtocol | None = None) -> list[dict[str, Any]]:
    """The records of a ``*_body3d.npz`` kept by ``protocol`` (all when None), in file order.

    A record: ``image_path``, ``imgname``, ``index`` (in the file), ``subject``, ``action``, ``trial``, ``camera``,
    ``frame``, ``bbox`` (xywh: the square of side ``200 * scale`` around ``center``), ``keypoints`` (17, 2 pixels: the
    pinhole projection of the 3D joints with the camera's ``f``, ``c``, RLE's ``cam2pixel``, so that 2D targets and
    the back-projection agree exactly), ``part`` (17, 2: the file's 2D parts, which include the lens distortion, up to
    2.2 px away on the real sample), ``visible`` (17,), ``joints_cam`` (17, 3, **mm**), ``f`` (2,), ``c`` (2,)."""
    try:
        data = np.load(ann_file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{ann_file}: cannot read the annotation file ({type(err).__name__}: {err})") from err
    missing = [k for k in ("imgname", "center", "scale", "part", "S") if k not in data.files]
    if missing:
        raise ValueError(f"{ann_file}: missing keys {missing} (has {sorted(data.files)})")
    names = [str(n) for n in data["imgname"]]
    n = len(names)
    center, scale = np.asarray(data["center"], np.float64), np.asarray(data["scale"], np.float64).reshape(-1)
    part, joints = np.asarray(data["part"], np.float64), np.asarray(data["S"], np.float64)
    for key, arr, shape in (("center", center, (n, 2)), ("scale", scale, (n,)), ("part", part, (n, NUM_JOINTS, 3)),
                            ("S", joints, (n, NUM_JOINTS, 4))):
        if arr.shape != shape:
            raise ValueError(f"{ann_file}: {key} has shape {arr.shape}, expected {shape} ({n} images)")
    cameras = load_cameras(camera_file)
    records = []
    for i, name in enumerate(names):
        where = f"{ann_file}: record #{i} ({name})"
        try:
            info = parse_image_name(name)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        if protocol is not None and not protocol.keeps(info):
            continue
        values = (center[i], scale[i], part[i, :, :2], joints[i, :, :3])
        if not all(np.isfinite(v).all() for v in values) or scale[i] <= 0:
            raise ValueError(f"{where}: non-finite centre / scale / joints, or scale <= 0")
        cam = cameras.get((info["subject"], info["camera"]))
        if cam is None:
            raise ValueError(f"{where}: camera ({info['subject']}, {info['camera']}) is not in {camera_file}")
        if (joints[i, :, 2] <= 0).any():
            raise ValueError(f"{where}: joints behind the camera (depth <= 0)")
        side = 200.0 * float(scale[i])
        records.append({
            "image_path": str(Path(image_root) / name), "imgname": name, "index": i, **info,
            "bbox": np.array([center[i, 0] - side / 2, center[i, 1] - side / 2, side, side], dtype=np.float64),
            "keypoints": joints[i, :, :2] / joints[i, :, 2:3] * cam["f"] + cam["c"], "part": part[i, :, :2].copy(),
            "visible": (part[i, :, 2] > 0).astype(np.float32), "joints_cam": joints[i, :, :3] * 1000.0,
            "f": cam["f"], "c": cam["c"],
        })
    return records


def sequences(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct ``<subject>_<trial>.<camera>`` sequences of a record list (sorted)."""
    return sorted({f"{r['subject']}_{r['trial']}.{r['camera']}" for r in records})
