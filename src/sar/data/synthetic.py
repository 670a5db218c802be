"""Embedded default dataset: synthetic people written in the real COCO keypoints format.

Every image is rendered procedurally from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so an image does not depend on how many images are generated, and the
whole dataset is reproducible bit for bit from :class:`SyntheticConfig`.

Figure model
------------
A person is built in a *person frame* whose unit is the body height ``H`` (head top to soles), with
the pelvis at the origin, ``x`` to the image right and ``y`` down. People face the camera, so the
person's LEFT side is at ``+x`` (the image right when upright).

* **Torso**: shoulders at ``(+-sw, -tl)``, hips at ``(+-hw, 0)`` with ``tl ~ 0.30``, ``sw ~ 0.115``,
  ``hw ~ 0.075`` (each jittered), leaning ``N(0, 8 deg)`` about the pelvis. Shirt above the belt line,
  trousers below.
* **Head**: an ellipse above a short neck, tilted with respect to the torso. The face has a yaw angle:
  a point at azimuth ``a`` on the head (``a = 0`` faces the camera, ``a > 0`` towards the person's left)
  projects to ``x = rx * sin(a)``. Nose ``a = yaw``, eyes ``yaw +- 29 deg``, ears ``yaw +- 80 deg``;
  an ear with ``cos(a) < -0.05`` is behind the head (not drawn, labelled ``v=1``).
* **Limbs**: tapered capsules (upper arm 0.165, forearm 0.145, thigh and shin 0.245, each shortened by a
  random out-of-plane foreshortening factor). The shoulder angle ``phi`` (from the torso's down
  direction, positive outwards) spans -25..175 deg, the hip angle -15..40 deg (occasionally up to 80).
  Elbows and knees bend one way only: the distal segment's angle is ``phi - bend`` with
  ``bend >= 0`` (hand towards the chest, shins inwards), up to 150 deg (elbow) / 110 deg (knee).
  Hands and feet are small ellipses beyond the wrist / ankle.
* **Appearance**: per-person clothing colours with stripe and smooth-noise textures, skin tone and hair;
  each part gets a dark rim and a light core (cylindrical shading). Left/right are recoverable from
  the face (which gives "up") plus the facing-camera convention, and, scaled by ``lr_cue``, from an
  explicit cue: left limbs are drawn lighter than right limbs and a badge sits on the left chest.
  (Note: such an asymmetric cue is mirrored by horizontal-flip augmentation; set ``lr_cue=0`` when
  training with flips if the cue must stay consistent.)
* **Global pose**: random scale (``person_height`` x image height), body width jitter (``aspect``),
  in-plane rotation about the pelvis (``N(0, rotation/2)`` clipped to ``+-rotation``; with
  probability ``large_rotation_prob`` uniform in ``+-3 rotation``) and position (partially outside the
  image allowed up to ``truncation`` of the person box). With probability ``overlap`` a person is placed
  next to an already placed one so that they overlap.

Scene: a textured background (gradient, smooth colour noise, stripes), clutter drawn behind people
(random shapes and limb-like distractor sticks), the people (in order), then occluders (textured
rectangles, ellipses, blobs and bars placed over keypoints), then sensor noise and blur.

Occlusion rule
--------------
Every drawn thing (person or occluder) gets an increasing *layer* number and writes it into a layer map
where its silhouette covers the image. A keypoint of person ``i`` is occluded (``v=1``) iff the layer
at its (rounded) pixel is greater than person ``i``'s layer, i.e. a later-drawn person or occluder
covers it (self-occlusion by the person's own limbs is not counted, ears behind the head are).
Keypoints outside the image (``x`` not in ``[0, w-1]`` or ``y`` not in ``[0, h-1]``) get ``v=0`` and
are written as ``0, 0``; otherwise ``v=2``. Coordinates are exact floats (pixel-centre convention).

Annotation fields: ``bbox`` is the tight box of the person's full rendered silhouette (amodal, i.e.
including the parts later covered by others) clipped to the image, ``area`` is that silhouette's pixel
area in the image, ``segmentation`` its polygon(s), ``num_keypoints`` the count of ``v > 0``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sar.utils.run_lock import pid_alive

__all__ = [
    "EXTRA_NAMES",
    "FORMATS",
    "KEYPOINT_NAMES",
    "SKELETON",
    "SyntheticConfig",
    "config_hash",
    "ensure_synthetic",
    "generate",
    "generate_format",
    "render_image",
    "render_preview",
    "render_split",
]

#: Bump when the renderer changes so cached datasets are regenerated.
GENERATOR_VERSION = 1
COMPLETE_MARKER = "_COMPLETE"

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
#: COCO skeleton, 1-based as in the official category entry.
SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
NUM_KPTS = len(KEYPOINT_NAMES)

_SPLITS = {"train": 0, "val": 1}
_DET_STREAM = 2  # rng stream id for detector boxes
_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_SHIFT_SCALE = float(1 << _SHIFT)


# --------------------------------------------------------------------------------------------- config
@dataclass
class SyntheticConfig:
    """All knobs of the synthetic dataset (every field enters the cache hash)."""

    seed: int = 0
    num_train: int = 2000
    num_val: int = 200
    image_size: tuple[int, int] = (256, 256)  # (w, h)
    min_people: int = 1
    max_people: int = 3
    person_height: tuple[float, float] = (0.45, 0.95)  # fraction of image height
    rotation: float = 35.0  # typical max |in-plane rotation| in degrees
    large_rotation_prob: float = 0.08  # probability of a rotation up to 3x `rotation`
    aspect: float = 0.15  # body width jitter: x scaled by U(1-aspect, 1+aspect)
    occlusion: float = 0.3  # occluder probability per image (and mean count scale)
    clutter: float = 0.5  # background clutter density
    overlap: float = 0.5  # probability a person is placed overlapping an earlier one
    truncation: float = 0.15  # fraction of the person box allowed outside the image
    lr_cue: float = 0.0  # strength of the explicit left/right appearance cue (0 disables)
    noise: float = 1.0  # sensor noise / blur strength
    jpeg_quality: int = 95
    det_jitter: float = 0.05  # detector box shift/scale jitter, fraction of box size
    det_miss: float = 0.03  # probability a person is missed by the detector
    det_false_positives: float = 0.3  # mean number of false-positive boxes per image

    def __post_init__(self) -> None:
        self.seed = int(self.seed)
        self.num_train = int(self.num_train)
        self.num_val = int(self.num_val)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.person_height = (float(self.person_height[0]), float(self.person_height[1]))
        self.min_people = int(self.min_people)
        self.max_people = int(self.max_people)
        self.jpeg_quality = int(self.jpeg_quality)
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "float" or isinstance(v, float):
                setattr(self, f.name, float(v))
        if self.image_size[0] < 32 or self.image_size[1] < 32:
            raise ValueError(f"image_size too small: {self.image_size}")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError(f"need 1 <= min_people <= max_people, got {self.min_people}, {self.max_people}")
        if not 0 < self.person_height[0] <= self.person_height[1]:
            raise ValueError(f"bad person_height {self.person_height}")

    @classmethod
    def from_any(cls, cfg: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
        """Build from a config, a plain dict or an OmegaConf mapping (unknown keys raise)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, SyntheticConfig):
            return cfg
        return cls(**{str(k): v for k, v in dict(cfg).items()})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["person_height"] = list(self.person_height)
        return d


def config_hash(cfg: SyntheticConfig, fmt: str = "coco") -> str:
    """Short stable hash of the config, the generator version and the output format (see FORMATS)."""
    extra = {} if fmt == "coco" else {"format": fmt}  # COCO hashes predate the other formats
    payload = json.dumps({"v": GENERATOR_VERSION, **cfg.to_dict(), **extra}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------ geometry helpers
_CAP_T = np.linspace(np.pi / 2, -np.pi / 2, 5)
_CAP_CS = np.stack([np.cos(_CAP_T), np.sin(_CAP_T)], 1)
_ELL_T = np.linspace(0.0, 2 * np.pi, 20, endpoint=False)
_ELL_CS = np.stack([np.cos(_ELL_T), np.sin(_ELL_T)], 1)
_RHOMB_CS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Convex tapered capsule from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``), 10 points."""
    dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    n = math.hypot(dx, dy)
    dx, dy = (0.0, 1.0) if n < 1e-9 else (dx / n, dy / n)
    arc = _CAP_CS @ np.array([[dx, dy], [-dy, dx]])  # +n -> tip -> -n, unit radius
    out = np.empty((10, 2))
    out[:5] = p1 + r1 * arc
    out[5:] = p0 - r0 * arc  # -n -> back -> +n
    return out


def _ellipse(c: np.ndarray, a: float, b: float, ang: float = 0.0,
             unit: np.ndarray | None = None) -> np.ndarray:
    """Polygon of the ellipse centred at ``c`` with semi-axes ``a, b`` rotated by ``ang`` (20 points)."""
    ca, sa = math.cos(ang), math.sin(ang)
    m = np.array([[a * ca, a * sa], [-b * sa, b * ca]])  # diag(a, b) @ rot(ang).T
    return (_ELL_CS if unit is None else unit) @ m + c


def _dir(side: float, ang: float) -> np.ndarray:
    """Unit vector at ``ang`` from 'down', positive towards ``side`` (+1 left = +x, -1 right)."""
    return np.array([side * math.sin(ang), math.cos(ang)])


@lru_cache(maxsize=8)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


def _bgr(rgb: Sequence[float]) -> np.ndarray:
    return np.array([rgb[2], rgb[1], rgb[0]], np.float32)


def _rand_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.2, 0.9),
                 val: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
    """Random BGR colour (0..255, float32) from HSV."""
    h = rng.uniform(0, 180)
    hsv = np.array([[[h, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _skin(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform()
    light, dark = np.array([236, 200, 170]), np.array([95, 62, 45])
    return _bgr(light * (1 - t) + dark * t + rng.normal(0, 6, 3))


def _upsample(small: np.ndarray, w: int, h: int) -> np.ndarray:
    """Smooth upsampling: bicubic to <= 4x, then bilinear (bicubic alone is slow for large factors)."""
    sh, sw = small.shape[:2]
    if w > 4 * sw or h > 4 * sh:
        small = cv2.resize(small, (min(w, 4 * sw), min(h, 4 * sh)), interpolation=cv2.INTER_CUBIC)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]-ish of shape (h, w), feature size ~``cell`` pixels."""
    gw, gh = max(2, int(w / cell) + 2), max(2, int(h / cell) + 2)
    return _upsample(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), w, h)


@lru_cache(maxsize=4)
def _noise_bank(w: int, h: int) -> np.ndarray:
    """Fixed standard-normal noise (h+64, w+64, 3); random crops of it are the sensor noise (fast)."""
    return np.random.default_rng(20240611).standard_normal((h + 64, w + 64, 3), dtype=np.float32)


# ---------------------------------------------------------------------------------------- the figure
@dataclass
class _Shape:
    """Polygons in draw order, each with a BGR colour and texture amplitudes."""

    polys: list[np.ndarray]
    colours: list[np.ndarray]
    stripe_amp: list[float]
    noise_amp: list[float]

    def add(self, poly: np.ndarray, colour: np.ndarray, stripe: float = 0.0, noise: float = 0.0) -> None:
        self.polys.append(poly)
        self.colours.append(colour)
        self.stripe_amp.append(stripe)
        self.noise_amp.append(noise)

    def transform(self, m: np.ndarray, t: np.ndarray | None = None) -> None:
        """Apply ``x -> m @ x + t`` to all polygons at once."""
        sizes = np.cumsum([len(p) for p in self.polys])[:-1]
        pts = np.concatenate(self.polys) @ m.T
        if t is not None:
            pts += t
        self.polys = np.split(pts, sizes)

    def translate(self, t: np.ndarray) -> None:
        self.polys = [p + t for p in self.polys]


def _new_shape() -> _Shape:
    return _Shape([], [], [], [])


@dataclass
class _Person:
    keypoints: np.ndarray  # (17, 2) image px
    self_hidden: np.ndarray  # (17,) bool: hidden behind the person's own head
    shape: _Shape
    height_px: float
    texture: tuple[float, float, float, float]  # stripe freq, angle, phase, noise cell
    extra: np.ndarray | None = None  # (NUM_EXTRA, 2) image px, see EXTRA_NAMES
    extra_hidden: np.ndarray | None = None  # (NUM_EXTRA,) bool: behind the person's own head
    head_poly: np.ndarray | None = None  # (20, 2) image px: the head ellipse (MPII head box)


def _shaded_limb(shape: _Shape, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float,
                 colour: np.ndarray, stripe: float, noise: float, light: np.ndarray) -> None:
    """Capsule with a dark rim, base fill and an off-centre light core."""
    shape.add(_capsule(p0, p1, r0, r1), colour * 0.55, stripe, noise)
    shape.add(_capsule(p0, p1, r0 * 0.78, r1 * 0.78), colour, stripe, noise)
    d = p1 - p0
    nrm = np.array([-d[1], d[0]]) / max(1e-9, math.hypot(d[0], d[1]))
    off = nrm * (0.3 * (r0 + r1) / 2) * (1.0 if nrm @ light >= 0 else -1.0)
    shape.add(_capsule(p0 + off, p1 + off, r0 * 0.28, r1 * 0.28), colour * 1.22 + 12, stripe, noise)


# ------------------------------------------------------------------- extra points (other formats)
#: Points beyond COCO-17 derived from each figure's geometry (``_Person.extra``), in this order: the six
#: COCO-WholeBody foot points, the 68 face points (iBUG-68 layout), 21 left-hand and 21 right-hand points
#: (COCO-WholeBody hand order), then head top, neck (shoulder midpoint = MPII thorax), upper neck and pelvis
#: (hip midpoint).
EXTRA_NAMES: tuple[str, ...] = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    *(f"face-{i}" for i in range(68)),
    *(f"left_{n}" for n in ("hand_root", *(f"{f}{j}" for f in ("thumb", "forefinger", "middle_finger",
                                                                 "ring_finger", "pinky_finger")
                                            for j in range(1, 5)))),
    *(f"right_{n}" for n in ("hand_root", *(f"{f}{j}" for f in ("thumb", "forefinger", "middle_finger",
                                                                  "ring_finger", "pinky_finger")
                                             for j in range(1, 5)))),
    "head_top", "neck", "upper_neck", "pelvis",
)  # fmt: skip
NUM_EXTRA = len(EXTRA_NAMES)
EXTRA_FOOT = slice(0, 6)
EXTRA_FACE = slice(6, 74)
EXTRA_LEFT_HAND = slice(74, 95)
EXTRA_RIGHT_HAND = slice(95, 116)
EXTRA_HEAD_TOP, EXTRA_NECK, EXTRA_UPPER_NECK, EXTRA_PELVIS = 116, 117, 118, 119

# Face points on the head (iBUG-68 order): (azimuth offset from the yaw, height / ry, radius / rx). A point
# projects like the COCO face points: x = radius * rx * sin(yaw + azimuth), and is hidden (v=1) when
# cos(yaw + azimuth) < -0.05. Image-left of a frontal face is the person's right (negative azimuth).
_JAW = [(1.45 * math.copysign(math.sqrt(abs(t)), t), 0.05 + 0.85 * math.sin(math.pi * j / 16))
        for j, t in ((j, (j - 8) / 8) for j in range(17))]
_FACE_LAYOUT: tuple[tuple[float, float, float], ...] = (
    *((a, y, 0.97 * math.sqrt(max(0.0, 1.0 - y * y))) for a, y in _JAW),  # 0-16 jaw, right to left
    *((a, y, 0.95) for a, y in zip((-0.8, -0.65, -0.5, -0.35, -0.2), (-0.24, -0.29, -0.31, -0.29, -0.25))),
    *((a, y, 0.95) for a, y in zip((0.2, 0.35, 0.5, 0.65, 0.8), (-0.25, -0.29, -0.31, -0.29, -0.24))),
    *((0.0, y, 0.92) for y in (-0.08, 0.04, 0.16, 0.28)),  # 27-30 nose bridge (30 = COCO nose)
    *((a, y, 0.9) for a, y in zip((-0.2, -0.1, 0.0, 0.1, 0.2), (0.33, 0.36, 0.37, 0.36, 0.33))),
    *((c + da, -0.08 + dy, 0.92) for c, offs in ((-0.5, ((-0.2, 0), (-0.08, -0.06), (0.08, -0.06), (0.2, 0),
                                                          (0.08, 0.06), (-0.08, 0.06))),
                                                  (0.5, ((-0.2, 0), (-0.08, -0.06), (0.08, -0.06), (0.2, 0),
                                                         (0.08, 0.06), (-0.08, 0.06))))
      for da, dy in offs),  # 36-41 right eye, 42-47 left eye (centres = the COCO eyes)
    *((a, 0.58 + dy, 0.85) for a, dy in ((-0.36, 0), (-0.24, -0.045), (-0.1, -0.06), (0, -0.05), (0.1, -0.06),
                                         (0.24, -0.045), (0.36, 0), (0.24, 0.05), (0.1, 0.065), (0, 0.07),
                                         (-0.1, 0.065), (-0.24, 0.05))),  # 48-59 outer lips
    *((a, 0.58 + dy, 0.85) for a, dy in ((-0.3, 0), (-0.12, -0.02), (0, -0.02), (0.12, -0.02), (0.3, 0),
                                         (0.12, 0.02), (0, 0.02), (-0.12, 0.02))),  # 60-67 inner lips
)  # fmt: skip
# Hand points: (fraction of the hand length from the wrist, spread angle towards the thumb side).
_THUMB = ((0.2, 0.9), (0.38, 0.78), (0.55, 0.66), (0.7, 0.58))
_FINGER_SPREAD = (0.25, 0.08, -0.1, -0.26)  # fore, middle, ring, pinky
_FINGER_FRAC = (0.5, 0.68, 0.82, 0.95)


def _figure_extras(kp: np.ndarray, build: float, neck: np.ndarray, head_c: np.ndarray, head_r: np.ndarray,
                   rx: float, ry: float, yaw: float, neck_len: float) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`EXTRA_NAMES` points of a figure in the person frame, and their self-hidden flags.

    Derived from the drawn geometry only (no random draws): feet on the drawn shoe ellipse (toes at its
    outer end, heel at its inner end), face points on the head ellipse with the face's yaw (iBUG-68 layout,
    the eye centres and nose tip coincide with the COCO eyes and nose), hand points fanned from the wrist
    along the forearm direction over the drawn hand ellipse (thumb on the outer side, palms forward).
    """
    ext = np.zeros((NUM_EXTRA, 2))
    hidden = np.zeros(NUM_EXTRA, bool)
    for side, a_i, k_i, off in ((1.0, 15, 13, 0), (-1.0, 16, 14, 3)):
        shin = kp[a_i] - kp[k_i]
        shin = shin / max(1e-9, float(np.hypot(*shin)))
        c = kp[a_i] + 0.02 * shin + np.array([side * 0.02, 0.012])
        ang = math.atan2(shin[1], shin[0]) - math.pi / 2 + side * 0.35
        u, v = np.array([math.cos(ang), math.sin(ang)]), np.array([-math.sin(ang), math.cos(ang)])
        a, b = 0.042 * build, 0.02 * build
        ext[off] = c + side * 0.88 * a * u - 0.35 * b * v  # big toe
        ext[off + 1] = c + side * 0.7 * a * u + 0.55 * b * v  # small toe
        ext[off + 2] = c - side * 0.8 * a * u  # heel
    for i, (az, y, rad) in enumerate(_FACE_LAYOUT):
        a = yaw + az
        ext[EXTRA_FACE.start + i] = head_c + head_r @ np.array([rad * rx * math.sin(a), y * ry])
        hidden[EXTRA_FACE.start + i] = math.cos(a) < -0.05
    for side, w_i, e_i, part in ((1.0, 9, 7, EXTRA_LEFT_HAND), (-1.0, 10, 8, EXTRA_RIGHT_HAND)):
        fa = kp[w_i] - kp[e_i]
        fa = fa / max(1e-9, float(np.hypot(*fa)))
        lateral = side * np.array([fa[1], -fa[0]])
        length = 0.022 + 0.03 * build  # wrist to the far end of the drawn hand ellipse

        def at(frac: float, spread: float, wrist: np.ndarray = kp[w_i], fa: np.ndarray = fa,
               lateral: np.ndarray = lateral, length: float = length) -> np.ndarray:
            return wrist + frac * length * (math.cos(spread) * fa + math.sin(spread) * lateral)

        pts = [kp[w_i].copy()]
        pts += [at(f, s) for f, s in _THUMB]
        pts += [at(f, s) for s in _FINGER_SPREAD for f in _FINGER_FRAC]
        ext[part] = np.stack(pts)
    ext[EXTRA_HEAD_TOP] = head_c + head_r @ np.array([0.0, -ry])
    ext[EXTRA_NECK] = neck
    ext[EXTRA_UPPER_NECK] = neck + head_r @ np.array([0.0, -0.5 * neck_len])
    ext[EXTRA_PELVIS] = (kp[11] + kp[12]) / 2
    return ext, hidden


def _sample_person(rng: np.random.Generator, cfg: SyntheticConfig, height_px: float) -> _Person:
    """Sample a person in the person frame (unit H, pelvis at 0) and map it to pixels (pelvis at 0)."""
    u = rng.uniform
    build = u(0.8, 1.25)  # limb thickness
    tl = 0.30 * u(0.9, 1.1)
    sw = 0.115 * u(0.85, 1.15)
    hw = 0.075 * u(0.85, 1.15)
    lean = math.radians(float(np.clip(rng.normal(0, 8), -20, 20)))
    torso_r = _rot(lean)

    def tor(p: Sequence[float]) -> np.ndarray:  # torso frame -> person frame
        return torso_r @ np.asarray(p, float)

    neck = tor([0.0, -tl])
    kp = np.zeros((NUM_KPTS, 2))
    kp[5], kp[6] = tor([sw, -tl]), tor([-sw, -tl])
    kp[11], kp[12] = tor([hw, 0.0]), tor([-hw, 0.0])

    def fore() -> float:  # out-of-plane foreshortening
        return 1.0 - 0.4 * u() ** 2

    # arms: angle from the torso's down direction, positive outwards; distal angle = phi - bend
    arm: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for side, (s_i, e_i, w_i) in ((1.0, (5, 7, 9)), (-1.0, (6, 8, 10))):
        phi = math.radians(u(-25, 100) if u() < 0.7 else u(100, 175))
        bend = math.radians(min(150.0, abs(rng.normal(0, 55)))) if u() < 0.8 else math.radians(u(60, 150))
        elbow = kp[s_i] + 0.165 * fore() * (torso_r @ _dir(side, phi))
        wrist = elbow + 0.145 * fore() * (torso_r @ _dir(side, phi - bend))
        kp[e_i], kp[w_i] = elbow, wrist
        arm[int(side)] = (elbow, wrist)
    # legs: hip angle from down (person frame), knee bends the shin inwards
    for side, (h_i, k_i, a_i) in ((1.0, (11, 13, 15)), (-1.0, (12, 14, 16))):
        if u() < 0.85:
            psi = math.radians(u(-12, 30))
            bend = math.radians(min(110.0, abs(rng.normal(0, 22))))
        else:
            psi = math.radians(u(10, 80))
            bend = math.radians(u(20, 110))
        knee = kp[h_i] + 0.245 * fore() * _dir(side, psi)
        ankle = knee + 0.245 * fore() * _dir(side, psi - bend)
        kp[k_i], kp[a_i] = knee, ankle

    # head and face
    rx, ry = 0.058 * u(0.9, 1.1), 0.072 * u(0.9, 1.1)
    head_ang = lean + math.radians(float(np.clip(rng.normal(0, 10), -30, 30)))
    head_r = _rot(head_ang)
    neck_len = 0.045
    head_c = neck + head_r @ np.array([0.0, -(neck_len + ry)])

    def hd(p: Sequence[float]) -> np.ndarray:  # head frame -> person frame
        return head_c + head_r @ np.asarray(p, float)

    yaw = math.radians(float(np.clip(rng.normal(0, 15), -40, 40)))
    az = {0: yaw, 1: yaw + 0.5, 2: yaw - 0.5, 3: yaw + 1.4, 4: yaw - 1.4}
    face_y = {0: 0.28 * ry, 1: -0.08 * ry, 2: -0.08 * ry, 3: 0.02 * ry, 4: 0.02 * ry}
    hidden = np.zeros(NUM_KPTS, bool)
    for k, a in az.items():
        rad = 0.97 if k >= 3 else 0.92
        kp[k] = hd([rad * rx * math.sin(a), face_y[k]])
        hidden[k] = math.cos(a) < -0.05  # behind the head's silhouette edge

    # --- appearance
    shape = _new_shape()
    skin = _skin(rng)
    shirt = _rand_colour(rng)
    pants = _rand_colour(rng, val=(0.15, 0.8))
    shoes = _rand_colour(rng, sat=(0.0, 0.5), val=(0.05, 0.5))
    hair = _bgr(np.array([40, 30, 20]) * u(0.5, 3.0)) if u() < 0.85 else _rand_colour(rng)
    long_sleeves, long_pants = u() < 0.5, u() < 0.75
    s_str = u(0.1, 0.35) if u() < 0.5 else 0.0
    p_str = u(0.1, 0.3) if u() < 0.3 else 0.0
    s_noise, p_noise = u(0.03, 0.2), u(0.03, 0.2)
    cue = cfg.lr_cue * u(0.6, 1.0)
    lr_gain = {1: 1.0 + 0.13 * cue, -1: 1.0 - 0.13 * cue}  # left parts lighter than right
    light = np.array([-0.6, -0.8])
    r_ua, r_fa, r_th, r_sh = 0.030 * build, 0.024 * build, 0.046 * build, 0.034 * build

    def leg(side: int) -> None:
        h_i, k_i, a_i = (11, 13, 15) if side == 1 else (12, 14, 16)
        g = lr_gain[side]
        ankle, shin_d = kp[a_i], kp[a_i] - kp[k_i]
        shin_d = shin_d / max(1e-9, float(np.hypot(*shin_d)))
        foot_c = ankle + 0.02 * shin_d + np.array([side * 0.02, 0.012])
        shape.add(_ellipse(foot_c, 0.042 * build, 0.02 * build, math.atan2(shin_d[1], shin_d[0]) - math.pi / 2
                           + side * 0.35), shoes * g)
        _shaded_limb(shape, kp[h_i], kp[k_i], r_th, r_th * 0.8, pants * g, p_str, p_noise, light)
        shin_col = pants if long_pants else skin
        _shaded_limb(shape, kp[k_i], kp[a_i], r_sh, r_sh * 0.75, shin_col * g,
                     p_str if long_pants else 0.0, p_noise if long_pants else 0.03, light)

    def arm_draw(side: int) -> None:
        s_i, e_i, w_i = (5, 7, 9) if side == 1 else (6, 8, 10)
        g = lr_gain[side]
        fa_d = kp[w_i] - kp[e_i]
        fa_d = fa_d / max(1e-9, float(np.hypot(*fa_d)))
        _shaded_limb(shape, kp[s_i], kp[e_i], r_ua, r_ua * 0.85, shirt * g, s_str, s_noise, light)
        fa_col = shirt if long_sleeves else skin
        _shaded_limb(shape, kp[e_i], kp[w_i], r_fa, r_fa * 0.8, fa_col * g,
                     s_str if long_sleeves else 0.0, s_noise if long_sleeves else 0.03, light)
        hand_c = kp[w_i] + 0.022 * fa_d
        ang = math.atan2(fa_d[1], fa_d[0])
        shape.add(_ellipse(hand_c, 0.03 * build, 0.022 * build, ang), skin * g * 0.6)
        shape.add(_ellipse(hand_c, 0.024 * build, 0.017 * build, ang), skin * g)

    for side in ((1, -1) if u() < 0.5 else (-1, 1)):
        leg(side)
    # torso: shirt polygon then trousers over the pelvis
    ww = max(0.75 * sw, hw + 0.01)
    hx = hw + r_th * 0.75
    torso = np.array([[-0.35 * sw, -tl - 0.012], [0.35 * sw, -tl - 0.012], [sw + 0.6 * r_ua, -tl + 0.02],
                      [ww, -0.4 * tl], [hx, 0.03], [0.0, 0.06], [-hx, 0.03], [-ww, -0.4 * tl],
                      [-(sw + 0.6 * r_ua), -tl + 0.02]])
    inner = torso * np.array([0.9, 0.93]) + np.array([0.0, -0.02 * tl])
    core = np.array([[0.1 * sw, -0.9 * tl], [0.45 * sw, -0.9 * tl],
                     [0.45 * ww, -0.2 * tl], [0.1 * ww, -0.2 * tl]])
    rt = torso_r.T
    for poly, k in ((torso, 0.55), (inner, 1.0)):
        shape.add(poly @ rt, shirt * k, s_str, s_noise)
    shape.add((core + np.array([-0.35 * sw, 0])) @ rt, shirt * 1.15 + 10, s_str, s_noise)
    wb = ww * 1.02  # belt half width
    pelvis = np.array([[-wb, -0.14 * tl], [wb, -0.14 * tl], [hx, 0.03], [0.0, 0.065], [-hx, 0.03]])
    shape.add(pelvis @ rt, pants, p_str, p_noise)
    belt = np.array([[-wb, -0.14 * tl], [wb, -0.14 * tl], [wb, -0.1 * tl], [-wb, -0.1 * tl]])
    shape.add(belt @ rt, pants * 0.45)
    # asymmetric badge on the left chest
    if cfg.lr_cue > 0 and u() < min(1.0, 0.85 * cfg.lr_cue):
        badge_col = _rand_colour(rng, sat=(0.6, 1.0), val=(0.7, 1.0))
        bc = tor([0.5 * sw, -0.72 * tl])
        if u() < 0.5:
            shape.add(_ellipse(bc, 0.022, 0.022, 0.0), badge_col)
        else:
            shape.add(_ellipse(bc, 0.024, 0.02, lean + math.pi / 4, unit=_RHOMB_CS), badge_col)
    # neck, ears, head, hair, face
    shape.add(_capsule(neck + tor([0, 0.01]), hd([0, 0.5 * ry]), 0.024 * build, 0.022 * build), skin * 0.85)
    shape.add(_ellipse(head_c, rx, ry, head_ang), skin * 0.6)
    shape.add(_ellipse(hd([-0.05 * rx, -0.04 * ry]), rx * 0.9, ry * 0.92, head_ang), skin)
    shape.add(_ellipse(hd([-0.3 * rx, -0.35 * ry]), rx * 0.35, ry * 0.3, head_ang), skin * 1.12 + 8)
    if u() < 0.9:  # hair cap over the top of the head
        t = np.linspace(np.pi * 1.05, np.pi * 1.95, 12)
        cap = np.stack([1.06 * rx * np.cos(t), 1.06 * ry * np.sin(t) - 0.02 * ry], 1)
        cap = np.concatenate([cap, [[0.8 * rx, -0.45 * ry], [0.0, -0.6 * ry], [-0.8 * rx, -0.45 * ry]]])
        shape.add(head_c + cap @ head_r.T, hair, 0.0, 0.15)
    for k in (3, 4):
        if not hidden[k]:
            ec = hd([0.97 * rx * math.sin(az[k]), face_y[k]])
            shape.add(_ellipse(ec, 0.16 * rx, 0.26 * ry, head_ang), skin * 0.7)
    for k in (1, 2):
        ew = max(0.08, 0.16 * math.cos(az[k])) * rx
        shape.add(_ellipse(kp[k], ew * 1.5, 0.11 * ry, head_ang), np.full(3, 235.0))
        shape.add(_ellipse(kp[k], ew, 0.1 * ry, head_ang), np.full(3, 25.0))
    nx = kp[0]
    shape.add(np.array([hd([0.92 * rx * math.sin(yaw), 0.0]), nx + head_r @ np.array([0.14 * rx, 0.02 * ry]),
                        nx + head_r @ np.array([-0.14 * rx, 0.02 * ry])]), skin * 0.6)
    shape.add(_ellipse(hd([0.85 * rx * math.sin(yaw), 0.58 * ry]), 0.3 * rx * max(0.5, math.cos(yaw)),
                       0.06 * ry, head_ang), _bgr([150, 40, 45]) * u(0.6, 1.1))
    for side in ((1, -1) if u() < 0.5 else (-1, 1)):
        arm_draw(side)

    # --- person frame -> pixels (pelvis at the origin): aspect, scale, rotation
    ax = u(1 - cfg.aspect, 1 + cfg.aspect)
    if u() < cfg.large_rotation_prob:
        rot = u(-3, 3) * cfg.rotation
    else:
        rot = float(np.clip(rng.normal(0, cfg.rotation / 2), -cfg.rotation, cfg.rotation))
    m = _rot(math.radians(rot)) @ np.diag([ax, 1.0]) * height_px
    shape.transform(m)
    tex = (u(0.05, 0.25), u(0, math.pi), u(0, 2 * math.pi), u(4, 12))
    # extra points of the other formats: pure geometry, no random draws (the COCO output is unchanged)
    extra, extra_hidden = _figure_extras(kp, build, neck, head_c, head_r, rx, ry, yaw, neck_len)
    head_poly = _ellipse(head_c, rx, ry, head_ang)
    return _Person(kp @ m.T, hidden, shape, height_px, tex, extra @ m.T, extra_hidden, head_poly @ m.T)


# ------------------------------------------------------------------------------------------ rendering
def _composite(img: np.ndarray, layers: np.ndarray, layer: int, shape: _Shape,
               tex: tuple[float, float, float, float], rng: np.random.Generator
               ) -> tuple[np.ndarray, int, int] | None:
    """Draw ``shape`` into ``img`` (float32 BGR) and ``layers``; return (silhouette ROI mask, x0, y0).

    Polygons are rasterised as labels (1..n, later ones on top) into a map of the shape's ROI; labels are
    then turned into colours x (1 + stripe_amp * stripes + noise_amp * smooth noise) with lookup tables.
    """
    h, w = layers.shape
    n = len(shape.polys)
    if not 0 < n < 256:
        raise ValueError(f"a shape needs 1..255 polygons, got {n}")
    sizes = np.cumsum([len(p) for p in shape.polys])[:-1]
    allpts = np.concatenate(shape.polys)
    x0, y0 = np.floor(allpts.min(0) - 1).astype(int)
    x1, y1 = np.ceil(allpts.max(0) + 2).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    rw, rh = x1 - x0, y1 - y0
    labels = np.zeros((rh, rw), np.uint8)
    fixed = np.round((allpts - np.array([x0, y0], float)) * _SHIFT_SCALE).astype(np.int32)
    for i, pts in enumerate(np.split(fixed, sizes)):
        cv2.fillPoly(labels, [pts], i + 1, cv2.LINE_8, _SHIFT)
    mask = labels > 0
    if not mask.any():
        return None
    lut = np.zeros((256, 1, 3), np.float32)
    lut[1:n + 1, 0] = np.clip(np.stack(shape.colours), 0, 255)
    amps = np.zeros((256, 1, 2), np.float32)
    amps[1:n + 1, 0, 0] = shape.stripe_amp
    amps[1:n + 1, 0, 1] = shape.noise_amp
    colour = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    amp = cv2.LUT(cv2.merge([labels, labels]), amps)
    freq, ang, phase, cell = tex
    xx, yy = _grid(w, h)
    stripes = np.sin((xx[y0:y1, x0:x1] * math.cos(ang) + yy[y0:y1, x0:x1] * math.sin(ang))
                     * np.float32(freq * 2 * math.pi) + np.float32(phase))
    mod = 1.0 + amp[..., 0] * stripes + amp[..., 1] * _smooth_noise(rng, rw, rh, cell)
    colour *= mod[..., None]
    np.copyto(img[y0:y1, x0:x1], colour, where=mask[..., None])
    layers[y0:y1, x0:x1][mask] = layer
    return mask, x0, y0


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient + smooth colour blobs (+ stripes, + fine texture), float32 BGR."""
    xx, yy = _grid(w, h)
    gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    ang = rng.uniform(0, 2 * math.pi)
    gy, gx = np.mgrid[0:gh, 0:gw]
    g = gx / max(1, gw - 1) * math.cos(ang) + gy / max(1, gh - 1) * math.sin(ang)
    g = (g - g.min()) / max(1e-6, float(g.max() - g.min()))
    c0 = _rand_colour(rng, sat=(0, 0.7), val=(0.1, 0.95))
    c1 = _rand_colour(rng, sat=(0, 0.7), val=(0.1, 0.95))
    small = c0 + g[..., None] * (c1 - c0) + rng.uniform(-1, 1, (gh, gw, 3)) * rng.uniform(10, 60)
    img = _upsample(small.astype(np.float32), w, h)
    if rng.uniform() < 0.45:
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 40)
        st = np.sin((xx * math.cos(a) + yy * math.sin(a)) * np.float32(2 * math.pi / period))
        if rng.uniform() < 0.5:
            st = np.sign(st)
        img += st[..., None] * ((_rand_colour(rng) - 128) * rng.uniform(0.1, 0.4)).astype(np.float32)
    if rng.uniform() < 0.5:  # fine texture
        fine = _smooth_noise(rng, w, h, rng.uniform(1.5, 4)) * np.float32(rng.uniform(5, 25))
        img += fine[..., None]
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> None:
    """Random shapes and limb-like sticks drawn into the background (never occlude people)."""
    h, w = img.shape[:2]
    size = min(w, h)
    for _ in range(int(rng.poisson(cfg.clutter * 12))):
        kind = rng.uniform()
        col = tuple(float(c) for c in (_rand_colour(rng) if rng.uniform() < 0.8 else _skin(rng)))
        c = rng.uniform([0, 0], [w, h])
        r = size * rng.uniform(0.02, 0.15)
        if kind < 0.2:
            cv2.circle(img, (int(c[0]), int(c[1])), int(r), col, -1, cv2.LINE_AA)
        elif kind < 0.4:
            rect = ((float(c[0]), float(c[1])), (2 * r, r * rng.uniform(0.3, 2)), rng.uniform(0, 180))
            box = cv2.boxPoints(rect)
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], col, cv2.LINE_AA)
        elif kind < 0.55:
            n = int(rng.integers(3, 7))
            pts = c + rng.uniform(-r, r, (n, 2))
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
        elif kind < 0.7:
            p1 = c + rng.uniform(-3 * r, 3 * r, 2)
            thick = int(rng.integers(1, 4))
            cv2.line(img, (int(c[0]), int(c[1])), (int(p1[0]), int(p1[1])), col, thick, cv2.LINE_AA)
        else:  # limb-like distractor: one or two shaded tapered segments
            shape = _new_shape()
            p0 = c
            ang = rng.uniform(0, 2 * math.pi)
            rad = size * rng.uniform(0.012, 0.04)
            colour = np.asarray(col, np.float32)
            for _seg in range(int(rng.integers(1, 3))):
                length = size * rng.uniform(0.08, 0.25)
                p1 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
                _shaded_limb(shape, p0, p1, rad, rad * rng.uniform(0.6, 1.0), colour, 0.0, 0.1,
                             np.array([-0.6, -0.8]))
                p0, ang, rad = p1, ang + rng.uniform(-2.0, 2.0), rad * 0.8
            for poly, colr in zip(shape.polys, shape.colours):
                pts = np.round(poly * _SHIFT_SCALE).astype(np.int32)
                fill = tuple(float(v) for v in np.clip(colr, 0, 255))
                cv2.fillPoly(img, [pts], fill, cv2.LINE_8, shift=_SHIFT)


def _occluder_shape(rng: np.random.Generator, centre: np.ndarray, size: float, w: int, h: int) -> _Shape:
    shape = _new_shape()
    colour = _rand_colour(rng) if rng.uniform() < 0.85 else _skin(rng)
    stripe = rng.uniform(0.1, 0.4) if rng.uniform() < 0.5 else 0.0
    noise = rng.uniform(0.05, 0.3)
    kind = rng.uniform()
    if kind < 0.35:  # rotated rectangle
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (size, size * rng.uniform(0.3, 1.5)),
                             rng.uniform(0, 180)))
        shape.add(box.astype(float), colour, stripe, noise)
    elif kind < 0.6:
        shape.add(_ellipse(centre, size / 2, size / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)),
                  colour, stripe, noise)
    elif kind < 0.85:  # star-shaped blob
        n = int(rng.integers(6, 11))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = size / 2 * rng.uniform(0.5, 1.0, n)
        shape.add(centre + np.stack([rad * np.cos(t), rad * np.sin(t)], 1), colour, stripe, noise)
    else:  # long bar crossing the image (pole, railing)
        ang = rng.uniform(0, math.pi)
        d = np.array([math.cos(ang), math.sin(ang)]) * (w + h)
        shape.add(_capsule(centre - d, centre + d, size * 0.15, size * 0.15), colour, stripe, noise)
    return shape


def _place(rng: np.random.Generator, cfg: SyntheticConfig, person: _Person,
           placed: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Pelvis position for ``person`` given the (pelvis, box size) of already placed people."""
    w, h = cfg.image_size
    pts = np.concatenate(person.shape.polys)
    lo, hi = pts.min(0), pts.max(0)
    size = hi - lo
    slack = cfg.truncation * size
    low = -lo - slack
    high = np.array([w, h], float) - hi + slack
    mid = (low + high) / 2
    low, high = np.minimum(low, mid), np.maximum(high, mid)
    if placed and rng.uniform() < cfg.overlap:
        anchor, a_size = placed[int(rng.integers(len(placed)))]
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        off = np.array([sign * rng.uniform(0.15, 0.6) * max(size[0], a_size[0]),
                        rng.uniform(-0.2, 0.2) * max(size[1], a_size[1])])
        return np.clip(anchor + off, low, high)
    return rng.uniform(low, high)


def _label_points(points: np.ndarray, self_hidden: np.ndarray, layers: np.ndarray, layer: int) -> np.ndarray:
    """(N, 3) ``x, y, v`` of image-px points by the occlusion rule of the module docstring."""
    h, w = layers.shape
    out = np.zeros((len(points), 3))
    inside = (points[:, 0] >= 0) & (points[:, 0] <= w - 1) & (points[:, 1] >= 0) & (points[:, 1] <= h - 1)
    if inside.any():
        xi, yi = np.round(points[inside]).astype(int).T
        occluded = (layers[yi, xi] > layer) | self_hidden[inside]
        out[inside, :2] = points[inside]
        out[inside, 2] = np.where(occluded, 1, 2)
    return out


def render_image(cfg: SyntheticConfig, rng: np.random.Generator,
                 extra: bool = False) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image. Returns (uint8 BGR image, person annotations without ids).

    With ``extra=True`` each annotation also carries ``_extra`` ((NUM_EXTRA, 3) ``x, y, v`` of
    :data:`EXTRA_NAMES`, same visibility rule) and ``_head_box`` (``[x1, y1, x2, y2]`` of the drawn head
    ellipse, not clipped) for the other formats' writers; the image is the same either way.
    """
    w, h = cfg.image_size
    img = _background(rng, w, h)
    _clutter(img, rng, cfg)
    layers = np.zeros((h, w), np.uint8)
    n_people = int(rng.integers(cfg.min_people, cfg.max_people + 1))
    people: list[_Person] = []
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    renders: list[tuple[np.ndarray, int, int] | None] = []
    person_layer: list[int] = []
    layer = 0
    for _ in range(n_people):
        hp = rng.uniform(*cfg.person_height) * h
        person = _sample_person(rng, cfg, hp)
        pos = _place(rng, cfg, person, placed)
        pts = np.concatenate(person.shape.polys)
        placed.append((pos, pts.max(0) - pts.min(0)))
        person.keypoints = person.keypoints + pos
        person.extra, person.head_poly = person.extra + pos, person.head_poly + pos
        person.shape.translate(pos)
        layer += 1
        renders.append(_composite(img, layers, layer, person.shape, person.texture, rng))
        people.append(person)
        person_layer.append(layer)
    # occluders over keypoints of random people
    n_occ = int(rng.poisson(cfg.occlusion * 2.0)) if rng.uniform() < cfg.occlusion else 0
    for _ in range(n_occ):
        target = people[int(rng.integers(len(people)))]
        k = int(rng.integers(NUM_KPTS))
        size = target.height_px * rng.uniform(0.1, 0.35)
        centre = target.keypoints[k] + rng.uniform(-0.5, 0.5, 2) * size
        shape = _occluder_shape(rng, centre, size, w, h)
        tex = (rng.uniform(0.05, 0.3), rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi),
               rng.uniform(3, 15))
        layer += 1
        _composite(img, layers, layer, shape, tex, rng)
    # sensor: blur + noise (a random crop of a fixed noise bank)
    if cfg.noise > 0:
        if rng.uniform() < 0.4:
            img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 1.0) * cfg.noise)
        sigma = rng.uniform(0, 6) * cfg.noise
        if sigma > 0.5:
            ox, oy = rng.integers(0, 64, 2)
            img += _noise_bank(w, h)[oy:oy + h, ox:ox + w] * np.float32(sigma)
    out = cv2.convertScaleAbs(img)  # saturating round to uint8

    anns: list[dict[str, Any]] = []
    for person, rend, lay in zip(people, renders, person_layer):
        if rend is None:
            continue
        mask, x0, y0 = rend
        xs, ys = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        bx0, by0, bx1, by1 = xs[0] + x0, ys[0] + y0, xs[-1] + x0, ys[-1] + y0
        kps = np.zeros((NUM_KPTS, 3))
        for k, (x, y) in enumerate(person.keypoints):
            if 0.0 <= x <= w - 1 and 0.0 <= y <= h - 1:
                occluded = layers[round(y), round(x)] > lay or person.self_hidden[k]
                kps[k] = (x, y, 1 if occluded else 2)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        seg = []
        for cnt in contours:
            cnt = cv2.approxPolyDP(cnt, 1.0, True).reshape(-1, 2) + np.array([x0, y0])
            if len(cnt) >= 3:
                seg.append([float(v) for v in cnt.reshape(-1)])
        anns.append({
            "bbox": [float(bx0), float(by0), float(bx1 - bx0 + 1), float(by1 - by0 + 1)],
            "area": float(mask.sum()),
            "segmentation": seg,
            "keypoints": [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps.reshape(-1))],
            "num_keypoints": int((kps[:, 2] > 0).sum()),
            "iscrowd": 0,
            "category_id": 1,
        })
        if extra:
            anns[-1]["_extra"] = _label_points(person.extra, person.extra_hidden, layers, lay)
            anns[-1]["_head_box"] = [*person.head_poly.min(0).tolist(), *person.head_poly.max(0).tolist()]
    return out, anns


# ------------------------------------------------------------------------------------------- writing
def _image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream), int(index)])


def _render_to_file(args: tuple[Any, ...]) -> list[dict[str, Any]]:
    cfg_d, stream, index, path, *rest = args
    cfg = SyntheticConfig(**cfg_d)
    img, anns = render_image(cfg, _image_rng(cfg.seed, stream, index), extra=bool(rest and rest[0]))
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise OSError(f"could not write {path}")
    return anns


def _worker_init() -> None:
    cv2.setNumThreads(1)


def render_split(cfg: SyntheticConfig, stream: int, paths: Sequence[Path | str], num_workers: int | None = None,
                 extra: bool = False) -> list[list[dict[str, Any]]]:
    """Render image ``i`` of rng stream ``stream`` to ``paths[i]`` for every i; return each image's annotations.

    Parallel (spawned processes) when ``num_workers > 1`` and there are at least 64 images; the output does not
    depend on ``num_workers``.
    """
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    cfg_d = cfg.to_dict()
    tasks = [(cfg_d, stream, i, str(p), extra) for i, p in enumerate(paths)]
    if num_workers > 1 and len(tasks) >= 64:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init) as ex:
            chunk = max(1, min(64, len(tasks) // (4 * num_workers)))
            return list(ex.map(_render_to_file, tasks, chunksize=chunk))
    return [_render_to_file(t) for t in tasks]


def _categories() -> list[dict[str, Any]]:
    return [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(s) for s in SKELETON],
    }]


def _detections(cfg: SyntheticConfig, images: list[dict[str, Any]],
                anns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detector-style boxes: jittered GT boxes scored by visibility, misses and false positives."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    dets: list[dict[str, Any]] = []
    for idx, im in enumerate(images):
        rng = _image_rng(cfg.seed, _DET_STREAM, idx)
        w, h = im["width"], im["height"]
        for a in by_image.get(im["id"], []):
            if rng.uniform() < cfg.det_miss:
                continue
            x, y, bw, bh = a["bbox"]
            s = np.exp(rng.normal(0, cfg.det_jitter, 2))
            cx = x + bw / 2 + rng.normal(0, cfg.det_jitter) * bw
            cy = y + bh / 2 + rng.normal(0, cfg.det_jitter) * bh
            nw, nh = bw * s[0], bh * s[1]
            x0, y0 = max(0.0, cx - nw / 2), max(0.0, cy - nh / 2)
            x1, y1 = min(float(w), cx + nw / 2), min(float(h), cy + nh / 2)
            vis = float(np.mean(np.asarray(a["keypoints"][2::3]) == 2))
            score = float(np.clip(0.55 + 0.4 * vis + rng.normal(0, 0.04), 0.501, 0.999))
            dets.append({"image_id": im["id"], "category_id": 1,
                         "bbox": [x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0)], "score": score})
        for _ in range(int(rng.poisson(cfg.det_false_positives))):
            bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.2, 0.8) * h
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            dets.append({"image_id": im["id"], "category_id": 1, "bbox": [x0, y0, bw, bh],
                         "score": float(rng.uniform(0.05, 0.4))})
    return dets


def generate(cfg: SyntheticConfig | Mapping[str, Any], root: Path | str,
             num_workers: int | None = None) -> Path:
    """Render the dataset into ``root`` (images, COCO jsons, detections) and write the marker last.

    ``num_workers`` defaults to ``min(2, cpu_count)``; small datasets are rendered in-process. The output
    does not depend on ``num_workers``.
    """
    cfg = SyntheticConfig.from_any(cfg)
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    w, h = cfg.image_size
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    cfg_d = cfg.to_dict()
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val)):
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        stream = _SPLITS[split]
        images = [{"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": w, "height": h}
                  for i in range(count)]
        results = render_split(cfg, stream, [img_dir / im["file_name"] for im in images], num_workers)
        anns: list[dict[str, Any]] = []
        for im, rec in zip(images, results):
            for a in rec:
                anns.append({"id": len(anns) + 1, "image_id": im["id"], **a})
        coco = {
            "info": {"description": "sar synthetic people (COCO keypoints format)",
                     "version": str(GENERATOR_VERSION), "year": 2024, "contributor": "sar.data.synthetic",
                     "config": cfg_d},
            "licenses": [{"id": 1, "name": "CC0 (procedurally generated)", "url": ""}],
            "images": [{**im, "license": 1} for im in images],
            "annotations": anns,
            "categories": _categories(),
        }
        with open(root / "annotations" / f"person_keypoints_{split}.json", "w") as f:
            json.dump(coco, f)
        if split == "val":
            with open(root / "annotations" / "person_detection_results_val.json", "w") as f:
                json.dump(_detections(cfg, images, anns), f)
    write_marker(root, cfg)
    return root


def _marker_payload(cfg: SyntheticConfig, fmt: str = "coco") -> dict[str, Any]:
    return cfg.to_dict() if fmt == "coco" else {"format": fmt, **cfg.to_dict()}


def write_marker(root: Path | str, cfg: SyntheticConfig, fmt: str = "coco") -> None:
    """Write the completion marker (last step of every writer)."""
    (Path(root) / COMPLETE_MARKER).write_text(json.dumps(_marker_payload(cfg, fmt), sort_keys=True))


def is_complete(root: Path, cfg: SyntheticConfig, fmt: str = "coco") -> bool:
    marker = Path(root) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(_marker_payload(cfg, fmt), sort_keys=True))
    except (OSError, ValueError):
        return False


#: Output formats of :func:`ensure_synthetic` (``coco``: :func:`generate`; the others:
#: :mod:`sar.data.synthetic_formats`, each in the real benchmark's layout).
FORMATS: tuple[str, ...] = ("coco", "coco_wholebody", "crowdpose", "mpii", "ochuman")


def generate_format(cfg: SyntheticConfig | Mapping[str, Any], root: Path | str, fmt: str = "coco",
                    num_workers: int | None = None) -> Path:
    """Write the synthetic dataset in format ``fmt`` (one of :data:`FORMATS`) into ``root``, marker last."""
    if fmt == "coco":
        return generate(cfg, root, num_workers=num_workers)
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r} (known: {', '.join(FORMATS)})")
    from sar.data.synthetic_formats import WRITERS

    return WRITERS[fmt](SyntheticConfig.from_any(cfg), Path(root), num_workers)



def ensure_synthetic(cfg: SyntheticConfig | Mapping[str, Any], cache_dir: Path | str,
                     num_workers: int | None = None, fmt: str = "coco") -> Path:
    """Return ``cache_dir/<fmt>_<hash>``, generating it first if missing or incomplete.

    ``fmt`` picks the written format (:data:`FORMATS`); the hash covers the config and the format.
    Generation goes to a temporary sibling directory which is renamed into place after the marker is
    written, so an interrupted run never leaves a directory that looks complete. Stale temporaries of dead
    processes are removed.
    """
    cfg = SyntheticConfig.from_any(cfg)
    if fmt not in FORMATS:
        raise ValueError(f"unknown synthetic format {fmt!r} (known: {', '.join(FORMATS)})")
    cache_dir = Path(cache_dir)
    key = config_hash(cfg, fmt)
    root = cache_dir / f"{fmt}_{key}"
    if is_complete(root, cfg, fmt):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f".{fmt}_{key}.tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = cache_dir / f".{fmt}_{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_format(cfg, tmp, fmt, num_workers=num_workers)
        if root.exists():
            if is_complete(root, cfg, fmt):  # finished concurrently by another process
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# ------------------------------------------------------------------------------------------- preview
_LEFT = {1, 3, 5, 7, 9, 11, 13, 15}


def render_preview(root: Path | str, out: Path | str, split: str = "val", num_images: int = 12,
                   cols: int = 4, scale: float = 2.0, show_boxes: bool = True) -> Path:
    """Write a PNG grid of ``num_images`` images with keypoints, skeleton and boxes drawn.

    Left keypoints/links are green, right ones orange, the nose white; occluded (v=1) keypoints are hollow
    circles; detector boxes (val) are thin grey, GT boxes yellow.
    """
    root, out = Path(root), Path(out)
    coco = json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())
    dets: dict[int, list[dict[str, Any]]] = {}
    det_file = root / "annotations" / "person_detection_results_val.json"
    if split == "val" and show_boxes and det_file.is_file():
        for d in json.loads(det_file.read_text()):
            dets.setdefault(d["image_id"], []).append(d)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tiles = []
    green, orange, white = (60, 220, 60), (0, 140, 255), (255, 255, 255)

    def col(k: int) -> tuple[int, int, int]:
        return white if k == 0 else (green if k in _LEFT else orange)

    for im in coco["images"][:num_images]:
        img = cv2.imread(str(root / "images" / split / im["file_name"]))
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)

        def p(x: float, y: float) -> tuple[int, int]:
            return round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5)

        for d in dets.get(im["id"], []):
            x, y, bw, bh = d["bbox"]
            cv2.rectangle(img, p(x, y), p(x + bw, y + bh), (160, 160, 160), 1)
            cv2.putText(img, f"{d['score']:.2f}", p(x, y + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                        (200, 200, 200), 1)
        for a in by_image.get(im["id"], []):
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
            if show_boxes:
                x, y, bw, bh = a["bbox"]
                cv2.rectangle(img, p(x, y), p(x + bw, y + bh), (0, 230, 230), 1)
            for i, j in SKELETON:
                i, j = i - 1, j - 1
                if kp[i, 2] > 0 and kp[j, 2] > 0:
                    c = col(i) if (i in _LEFT) == (j in _LEFT) else (200, 200, 200)
                    cv2.line(img, p(*kp[i, :2]), p(*kp[j, :2]), c, 1, cv2.LINE_AA)
            for k in range(NUM_KPTS):
                if kp[k, 2] == 2:
                    cv2.circle(img, p(*kp[k, :2]), 3, col(k), -1, cv2.LINE_AA)
                    cv2.circle(img, p(*kp[k, :2]), 3, (0, 0, 0), 1, cv2.LINE_AA)
                elif kp[k, 2] == 1:
                    cv2.circle(img, p(*kp[k, :2]), 4, col(k), 1, cv2.LINE_AA)
        tiles.append(img)
    if not tiles:
        raise ValueError(f"no images in {root} ({split})")
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    grid = np.full((rows * (th + 4), cols * (tw + 4), 3), 30, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (th + 4): r * (th + 4) + th, c * (tw + 4): c * (tw + 4) + tw] = t
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    return out


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic COCO-format keypoint dataset.")
    parser.add_argument("--out", type=Path, required=True, help="output root directory")
    parser.add_argument("--num-train", type=int, default=SyntheticConfig.num_train)
    parser.add_argument("--num-val", type=int, default=SyntheticConfig.num_val)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-people", type=int, default=SyntheticConfig.max_people)
    parser.add_argument("--occlusion", type=float, default=SyntheticConfig.occlusion)
    parser.add_argument("--clutter", type=float, default=SyntheticConfig.clutter)
    parser.add_argument("--overlap", type=float, default=SyntheticConfig.overlap)
    parser.add_argument("--rotation", type=float, default=SyntheticConfig.rotation)
    parser.add_argument("--lr-cue", type=float, default=SyntheticConfig.lr_cue)
    parser.add_argument("--image-size", type=int, nargs=2, default=list(SyntheticConfig.image_size),
                        metavar=("W", "H"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--preview", type=Path, default=None, help="also write a preview PNG grid here")
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                          image_size=tuple(args.image_size), max_people=args.max_people,
                          occlusion=args.occlusion, clutter=args.clutter, overlap=args.overlap,
                          rotation=args.rotation, lr_cue=args.lr_cue)
    t0 = time.perf_counter()
    generate(cfg, args.out, num_workers=args.workers)
    dt = time.perf_counter() - t0
    n = cfg.num_train + cfg.num_val
    print(f"wrote {n} images to {args.out} in {dt:.1f}s ({1000 * dt / max(1, n):.1f} ms/image wall)")
    if args.preview is not None:
        print(f"preview: {render_preview(args.out, args.preview)}")


if __name__ == "__main__":
    main()
