"""Synthetic 3D people in the Human3.6M format: the embedded default of ``task=pose3d`` (docs/pose3d.md).

The figure model of :mod:`sar.data.synthetic.figure` given depth: a 3D skeleton on the 17 Human3.6M joints
(``h36m`` spec order) with per-subject bone lengths (body height 1.55-1.90 m, fixed proportions jittered by 5 %)
and per-action joint-angle distributions (hip and knee flexion, hip abduction, torso lean, shoulder flexion and
abduction, elbow flexion; knees and elbows bend one way only), turned about the vertical axis (+-60 deg around
facing the camera, so the face still tells left from right) and placed 3.5-6.5 m in front of a pinhole camera
whose focal length and principal point differ per (subject, camera) and whose distance varies per frame. Each
limb is a shaded tapered capsule whose projected radius follows its depth, drawn far to near (painter's order)
over the figure model's backgrounds and clutter, with the same sensor noise.

Written like the preprocessed Human3.6M (``shared/data/h36m``, mmpose's ``*_body3d.npz``):

* ``S<i>/S<i>_<Action>.<camera>/S<i>_<Action>.<camera>_<frame:06d>.jpg``;
* ``annotation_body3d/h36m_train.npz`` (subjects S1, S5, S6, S7, S8) and ``h36m_test.npz`` (S9, S11): ``imgname``,
  ``center``, ``scale`` (box side / 200, the joints' extent times 1.2), ``part`` (17, 3: pixels, visibility),
  ``S`` (17, 4: camera-frame metres, visibility);
* ``cameras.pkl``: ``{(subject, camera): {R, T, c, f, k, p, w, h, name, id}}`` (extrinsics identity: the joints are
  written in the camera frame already; no distortion).

Frame numbers follow the protocol (every 5th frame kept for training, every 64th for testing): training sequences
hold frames 1, 6, 11, ... and test sequences 1, 65, 129, ...; every sequence also holds one frame off the protocol
(number 2), which the protocol filter of :mod:`sar.data.formats.h36m` drops.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["ACTIONS", "CAMERAS", "Synthetic3DConfig", "ensure_synthetic_h36m", "sample_pose", "write_h36m"]

#: Per-action joint-angle ranges (degrees): hip flexion, knee flexion, shoulder flexion, shoulder abduction,
#: elbow flexion, torso lean (forward). Each is drawn per side where it applies.
ACTIONS: dict[str, dict[str, tuple[float, float]]] = {
    "Directions": {"hip": (-10, 15), "knee": (0, 15), "sh_flex": (-20, 80), "sh_abd": (5, 60), "elbow": (0, 90),
                   "lean": (-5, 10)},
    "Walking": {"hip": (-30, 35), "knee": (0, 60), "sh_flex": (-35, 35), "sh_abd": (5, 20), "elbow": (5, 45),
                "lean": (0, 10)},
    "Sitting": {"hip": (70, 100), "knee": (70, 110), "sh_flex": (0, 60), "sh_abd": (5, 30), "elbow": (30, 110),
                "lean": (-10, 20)},
    "Greeting": {"hip": (-10, 20), "knee": (0, 25), "sh_flex": (30, 160), "sh_abd": (10, 90), "elbow": (0, 120),
                 "lean": (-5, 15)},
}
#: Human3.6M's camera ids (the synthetic set uses the first ``num_cameras``).
CAMERAS = ("54138969", "55011271", "58860488", "60457274")
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
GENERATOR_VERSION = 1

# body-frame proportions for a 1.75 m person (metres); x = the person's left, y = up, z = forward
_BONES = {"hip_w": 0.12, "thigh": 0.44, "shin": 0.44, "spine": 0.23, "thorax": 0.25, "neck": 0.12, "head": 0.12,
          "sh_w": 0.17, "sh_down": 0.03, "upper_arm": 0.28, "forearm": 0.25}


@dataclass
class Synthetic3DConfig:
    """Knobs of the synthetic Human3.6M-format set (every field enters the cache key)."""

    seed: int = 0
    actions: tuple[str, ...] = ("Directions", "Walking", "Sitting", "Greeting")
    num_cameras: int = 2
    train_frames: int = 20          # protocol frames per training sequence (subject x action x camera)
    test_frames: int = 4            # per test sequence
    image_size: tuple[int, int] = (256, 256)
    person_height: tuple[float, float] = (0.55, 0.85)  # projected body height, fraction of the image height
    distance: tuple[float, float] = (3.5, 6.5)         # metres
    yaw: float = 60.0               # max |turn| from facing the camera, degrees
    clutter: float = 0.1
    noise: float = 0.5
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"dataset.synthetic.actions: unknown {unknown} (known: {sorted(ACTIONS)})")
        self.actions = tuple(str(a) for a in self.actions)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.person_height = (float(self.person_height[0]), float(self.person_height[1]))
        self.distance = (float(self.distance[0]), float(self.distance[1]))
        if not 1 <= int(self.num_cameras) <= len(CAMERAS):
            raise ValueError(f"num_cameras must be 1..{len(CAMERAS)}, got {self.num_cameras}")

    def key(self) -> str:
        import hashlib

        payload = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _rot(axis: str, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def subject_build(seed: int, subject: str) -> dict[str, float]:
    """A subject's bone lengths (metres): height 1.55-1.90 m, each proportion jittered by +-5 %."""
    rng = np.random.default_rng([seed, 77, int(subject[1:])])
    scale = rng.uniform(1.55, 1.90) / 1.75
    return {k: v * scale * rng.uniform(0.95, 1.05) for k, v in _BONES.items()}


def sample_pose(rng: np.random.Generator, bones: dict[str, float], action: str) -> np.ndarray:
    """Joints (17, 3) in the body frame (metres; pelvis at 0, x = the person's left, y = up, z = forward)."""
    r = ACTIONS[action]
    j = np.zeros((17, 3))
    down, up = np.array([0.0, -1.0, 0.0]), np.array([0.0, 1.0, 0.0])
    for side, (hip, knee, foot) in ((-1, (1, 2, 3)), (1, (4, 5, 6))):
        j[hip] = [side * bones["hip_w"], 0.0, 0.0]
        flex = rng.uniform(*r["hip"])
        abd = rng.uniform(-3, 12)
        thigh_rot = _rot("z", side * abd) @ _rot("x", -flex)  # flexion lifts the thigh forward (+z)
        j[knee] = j[hip] + thigh_rot @ down * bones["thigh"]
        kf = rng.uniform(*r["knee"])
        j[foot] = j[knee] + thigh_rot @ _rot("x", kf) @ down * bones["shin"]  # the shin folds backwards
    lean = _rot("x", rng.uniform(*r["lean"])) @ _rot("z", rng.normal(0, 4))
    j[7] = lean @ up * bones["spine"]
    j[8] = j[7] + lean @ up * bones["thorax"]
    head_rot = lean @ _rot("x", rng.normal(0, 10)) @ _rot("z", rng.normal(0, 8))
    j[9] = j[8] + head_rot @ np.array([0.0, 1.0, 0.35]) / math.hypot(1, 0.35) * bones["neck"]
    j[10] = j[9] + head_rot @ np.array([0.0, 1.0, -0.1]) / math.hypot(1, 0.1) * bones["head"]
    for side, (sh, el, wr) in ((1, (11, 12, 13)), (-1, (14, 15, 16))):
        j[sh] = j[8] + lean @ np.array([side * bones["sh_w"], -bones["sh_down"], 0.0])
        arm_rot = lean @ _rot("z", side * rng.uniform(*r["sh_abd"])) @ _rot("x", -rng.uniform(*r["sh_flex"]))
        j[el] = j[sh] + arm_rot @ down * bones["upper_arm"]
        j[wr] = j[el] + arm_rot @ _rot("x", -rng.uniform(*r["elbow"])) @ down * bones["forearm"]
    return j


def _camera(seed: int, subject: str, camera: str, cfg: Synthetic3DConfig) -> dict[str, Any]:
    rng = np.random.default_rng([seed, 91, int(subject[1:]), CAMERAS.index(camera)])
    w, h = cfg.image_size
    f = rng.uniform(1.2, 2.2) * h  # base focal length; per-frame framing comes from the distance
    c = np.array([w / 2 + rng.normal(0, 0.02 * w), h / 2 + rng.normal(0, 0.02 * h)])
    return {"R": np.eye(3), "T": np.zeros(3), "c": c.reshape(2, 1), "f": np.array([f, f * rng.uniform(0.99, 1.01)])
            .reshape(2, 1), "k": np.zeros((3, 1)), "p": np.zeros((2, 1)), "w": w, "h": h,
            "name": f"camera{CAMERAS.index(camera) + 1}", "id": camera}


# limbs drawn as capsules: (joint a, joint b, radius a, radius b) in metres, plus the head
_LIMBS = ((0, 7, 0.13, 0.12), (7, 8, 0.12, 0.13), (1, 4, 0.1, 0.1), (8, 9, 0.05, 0.05),
          (1, 2, 0.075, 0.055), (2, 3, 0.05, 0.04), (4, 5, 0.075, 0.055), (5, 6, 0.05, 0.04),
          (11, 12, 0.05, 0.04), (12, 13, 0.04, 0.035), (14, 15, 0.05, 0.04), (15, 16, 0.04, 0.035),
          (11, 14, 0.06, 0.06))


def render_frame(args: tuple[Any, ...]) -> dict[str, Any]:
    """Render one frame to ``path``; return its annotation (part, S, center, scale)."""
    from sar.data.synthetic.config import SyntheticConfig
    from sar.data.synthetic.renderer import _background, _clutter, _composite, _noise_bank
    from sar.data.synthetic.shapes import bgr, ellipse, new_shape, rand_colour, shaded_limb, skin_colour

    cfg_d, key, path, cam = args
    cfg = Synthetic3DConfig(**cfg_d)
    subject, action = key[1], key[2]
    rng = np.random.default_rng(list(key[3:]) + [cfg.seed, int(subject[1:])])
    bones = subject_build(cfg.seed, subject)
    body = sample_pose(rng, bones, action)
    turn = _rot("y", rng.uniform(-cfg.yaw, cfg.yaw)) @ _rot("x", rng.normal(0, 4)) @ _rot("z", rng.normal(0, 4))
    to_cam = np.diag([1.0, -1.0, -1.0])  # body (left, up, forward) -> camera (right, down, into the scene)
    pts = (to_cam @ turn @ body.T).T
    f, c = cam["f"].ravel(), cam["c"].ravel()
    w, h = cfg.image_size
    extent = float(np.ptp(pts[:, 1])) + 0.25
    frac = rng.uniform(*cfg.person_height)
    dist = float(np.clip(f[1] * extent / (frac * h), *cfg.distance))
    centre_px = c + rng.uniform(-0.12, 0.12, 2) * np.array([w, h])
    mid = (pts.max(0) + pts.min(0)) / 2
    pelvis = np.array([(centre_px[0] - c[0]) * dist / f[0], (centre_px[1] - c[1]) * dist / f[1], dist]) - (mid - pts[0])
    pelvis[2] = dist
    joints = pts - pts[0] + pelvis
    uv = joints[:, :2] / joints[:, 2:3] * f + c

    img = _background(rng, w, h)
    _clutter(img, rng, SyntheticConfig(clutter=cfg.clutter, image_size=cfg.image_size))
    layers = np.zeros((h, w), np.uint8)
    shirt, trousers, skin = rand_colour(rng), rand_colour(rng, val=(0.15, 0.6)), skin_colour(rng)
    light = np.array([rng.uniform(-1, 1), -1.0])
    items = []
    for a, b, ra, rb in _LIMBS:
        colour = trousers if a in (0, 1, 2, 4, 5) and b in (1, 2, 3, 4, 5, 6) else shirt
        if a in (12, 15):
            colour = skin
        if (a, b) == (0, 7):
            colour = trousers * 0.5 + shirt * 0.5
        items.append((max(joints[a, 2], joints[b, 2]), a, b, ra, rb, colour))
    items.sort(key=lambda t: -t[0])
    shape = new_shape()
    for _, a, b, ra, rb, colour in items:
        shaded_limb(shape, uv[a], uv[b], ra * f[0] / joints[a, 2], rb * f[0] / joints[b, 2], colour, 0.08, 0.1,
                    light)
    head_r = 0.11 * f[0] / joints[10, 2]
    head_c = uv[10]
    shape.add(ellipse(head_c, head_r * 0.85, head_r), skin * 0.8, 0.0, 0.05)
    # the face (nose and eyes) marks the front: drawn where the head faces the camera
    fwd = (to_cam @ turn @ np.array([0.0, 0.0, 1.0]))
    nose = head_c + fwd[:2] * head_r * 0.7
    shape.add(ellipse(nose, head_r * 0.18, head_r * 0.18), bgr((200, 60, 60)), 0.0, 0.0)
    side = (to_cam @ turn @ np.array([1.0, 0.0, 0.0]))[:2]
    for s_ in (-1, 1):
        eye = head_c + fwd[:2] * head_r * 0.45 + side * s_ * head_r * 0.35 - np.array([0, head_r * 0.25])
        shape.add(ellipse(eye, head_r * 0.12, head_r * 0.1), bgr((20, 20, 20)) + (60 if s_ > 0 else 0), 0.0, 0.0)
    _composite(img, layers, 1, shape, (0.1, 0.0, 0.0, 6.0), rng)
    if cfg.noise > 0:
        sigma = rng.uniform(0, 6) * cfg.noise
        if sigma > 0.5:
            ox, oy = rng.integers(0, 64, 2)
            img += _noise_bank(w, h)[oy:oy + h, ox:ox + w] * np.float32(sigma)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.convertScaleAbs(img), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise OSError(f"could not write {path}")
    lo, hi = uv.min(0), uv.max(0)
    side_px = float(max(hi - lo)) * 1.2
    return {"center": (lo + hi) / 2, "scale": side_px / 200.0,
            "part": np.concatenate([uv, np.ones((17, 1))], 1), "S": np.concatenate([joints, np.ones((17, 1))], 1)}


def _frames(split: str, cfg: Synthetic3DConfig) -> list[int]:
    step, n = (5, cfg.train_frames) if split == "train" else (64, cfg.test_frames)
    return [1 + step * i for i in range(n)] + [2]  # frame 2: off the protocol, dropped by the reader's filter


def write_h36m(cfg: Synthetic3DConfig, root: Path | str, num_workers: int | None = None) -> Path:
    """Write the set into ``root`` (npz files, cameras.pkl, images); the marker ``.complete`` last."""
    root = Path(root)
    (root / "annotation_body3d").mkdir(parents=True, exist_ok=True)
    cameras = {}
    for subject in TRAIN_SUBJECTS + TEST_SUBJECTS:
        for camera in CAMERAS:
            cameras[(subject, camera)] = _camera(cfg.seed, subject, camera, cfg)
    with open(root / "cameras.pkl", "wb") as fh:
        pickle.dump(cameras, fh)
    cfg_d = asdict(cfg)
    for split, subjects in (("train", TRAIN_SUBJECTS), ("test", TEST_SUBJECTS)):
        tasks, names = [], []
        for subject in subjects:
            for a, action in enumerate(cfg.actions):
                for camera in CAMERAS[: cfg.num_cameras]:
                    seq = f"{subject}_{action}.{camera}"
                    for frame in _frames(split, cfg):
                        name = f"{subject}/{seq}/{seq}_{frame:06d}.jpg"
                        key = (split, subject, action, a, CAMERAS.index(camera), frame)
                        tasks.append((cfg_d, key, str(root / name), cameras[(subject, camera)]))
                        names.append(name)
        workers = min(2, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        if workers > 1 and len(tasks) >= 64:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                anns = list(ex.map(render_frame, tasks, chunksize=16))
        else:
            anns = [render_frame(t) for t in tasks]
        np.savez(root / "annotation_body3d" / f"h36m_{split}.npz", imgname=np.array(names),
                 center=np.stack([a["center"] for a in anns]), scale=np.array([a["scale"] for a in anns]),
                 part=np.stack([a["part"] for a in anns]), S=np.stack([a["S"] for a in anns]))
    (root / ".complete").write_text(json.dumps({"key": cfg.key(), **cfg_d}, default=list))
    return root


def ensure_synthetic_h36m(cfg: Synthetic3DConfig | dict[str, Any], cache_dir: Path | str,
                          num_workers: int | None = None) -> Path:
    """``cache_dir/h36m_<key>``, generated first (into a temporary sibling, renamed when complete) if missing."""
    import shutil
    import uuid

    cfg = cfg if isinstance(cfg, Synthetic3DConfig) else Synthetic3DConfig(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(cfg).items()})
    root = Path(cache_dir) / f"h36m_{cfg.key()}"
    if (root / ".complete").is_file():
        return root
    tmp = Path(cache_dir) / f".h36m_{cfg.key()}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_h36m(cfg, tmp, num_workers)
        if (root / ".complete").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
