"""The figure model: how one synthetic person is sampled, its keypoints (COCO-17 and the extra points of the other
formats) and its drawing (a :class:`~sar.data.synthetic.shapes.Shape`), before it is placed in a scene.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sar.data.spec import load_spec
from sar.data.synthetic.config import SyntheticConfig
from sar.data.synthetic.shapes import (
    RHOMB_CS,
    Shape,
    bgr,
    capsule,
    direction,
    ellipse,
    new_shape,
    rand_colour,
    rotation_matrix,
    shaded_limb,
    skin_colour,
)

__all__ = [
    "EXTRA_FACE",
    "EXTRA_FOOT",
    "EXTRA_HEAD_TOP",
    "EXTRA_LEFT_HAND",
    "EXTRA_NAMES",
    "EXTRA_NECK",
    "EXTRA_PELVIS",
    "EXTRA_RIGHT_HAND",
    "EXTRA_UPPER_NECK",
    "KEYPOINT_NAMES",
    "NUM_EXTRA",
    "NUM_KPTS",
    "SKELETON",
    "Person",
    "figure_extras",
    "sample_person",
]

_COCO = load_spec("coco")
_WHOLEBODY = load_spec("coco_wholebody")

#: The figure's body keypoints: the COCO-17 of the ``coco`` keypoint spec, in its order.
KEYPOINT_NAMES: tuple[str, ...] = _COCO.keypoint_names
#: The ``coco`` spec's skeleton, 1-based as in the official category entry.
SKELETON: tuple[tuple[int, int], ...] = tuple((i + 1, j + 1) for i, j in _COCO.skeleton)
NUM_KPTS = len(KEYPOINT_NAMES)


@dataclass
class Person:
    """One sampled figure: its keypoints, its drawing and the extra points of the other formats."""

    keypoints: np.ndarray  # (17, 2) image px
    self_hidden: np.ndarray  # (17,) bool: hidden behind the person's own head
    shape: Shape
    height_px: float
    texture: tuple[float, float, float, float]  # stripe freq, angle, phase, noise cell
    extra: np.ndarray | None = None  # (NUM_EXTRA, 2) image px, see EXTRA_NAMES
    extra_hidden: np.ndarray | None = None  # (NUM_EXTRA,) bool: behind the person's own head
    head_poly: np.ndarray | None = None  # (20, 2) image px: the head ellipse (MPII head box)


# ------------------------------------------------------------------- extra points (other formats)
#: Points beyond COCO-17 derived from each figure's geometry (``Person.extra``), in this order: the points of the
#: ``coco_wholebody`` spec after its COCO-17 (six foot points, the 68 face points in iBUG-68 layout, 21 left-hand
#: and 21 right-hand points), then head top, neck (shoulder midpoint = MPII thorax), upper neck and pelvis (hip
#: midpoint).
EXTRA_NAMES: tuple[str, ...] = (*_WHOLEBODY.keypoint_names[NUM_KPTS:], "head_top", "neck", "upper_neck", "pelvis")
NUM_EXTRA = len(EXTRA_NAMES)


def _wholebody_part(name: str) -> slice:
    """Where part ``name`` of the ``coco_wholebody`` spec (a run of consecutive ids) lies in EXTRA_NAMES."""
    ids = _WHOLEBODY.parts[name]
    return slice(ids[0] - NUM_KPTS, ids[-1] + 1 - NUM_KPTS)


EXTRA_FOOT = _wholebody_part("foot")
EXTRA_FACE = _wholebody_part("face")
EXTRA_LEFT_HAND = _wholebody_part("left_hand")
EXTRA_RIGHT_HAND = _wholebody_part("right_hand")
EXTRA_HEAD_TOP, EXTRA_NECK, EXTRA_UPPER_NECK, EXTRA_PELVIS = (
    EXTRA_NAMES.index(n) for n in ("head_top", "neck", "upper_neck", "pelvis"))

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


def figure_extras(kp: np.ndarray, build: float, neck: np.ndarray, head_c: np.ndarray, head_r: np.ndarray,
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


def sample_person(rng: np.random.Generator, cfg: SyntheticConfig, height_px: float) -> Person:
    """Sample a person in the person frame (unit H, pelvis at 0) and map it to pixels (pelvis at 0)."""
    u = rng.uniform
    build = u(0.8, 1.25)  # limb thickness
    tl = 0.30 * u(0.9, 1.1)
    sw = 0.115 * u(0.85, 1.15)
    hw = 0.075 * u(0.85, 1.15)
    lean = math.radians(float(np.clip(rng.normal(0, 8), -20, 20)))
    torso_r = rotation_matrix(lean)

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
        elbow = kp[s_i] + 0.165 * fore() * (torso_r @ direction(side, phi))
        wrist = elbow + 0.145 * fore() * (torso_r @ direction(side, phi - bend))
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
        knee = kp[h_i] + 0.245 * fore() * direction(side, psi)
        ankle = knee + 0.245 * fore() * direction(side, psi - bend)
        kp[k_i], kp[a_i] = knee, ankle

    # head and face
    rx, ry = 0.058 * u(0.9, 1.1), 0.072 * u(0.9, 1.1)
    head_ang = lean + math.radians(float(np.clip(rng.normal(0, 10), -30, 30)))
    head_r = rotation_matrix(head_ang)
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
    shape = new_shape()
    skin = skin_colour(rng)
    shirt = rand_colour(rng)
    pants = rand_colour(rng, val=(0.15, 0.8))
    shoes = rand_colour(rng, sat=(0.0, 0.5), val=(0.05, 0.5))
    hair = bgr(np.array([40, 30, 20]) * u(0.5, 3.0)) if u() < 0.85 else rand_colour(rng)
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
        shape.add(ellipse(foot_c, 0.042 * build, 0.02 * build, math.atan2(shin_d[1], shin_d[0]) - math.pi / 2
                          + side * 0.35), shoes * g)
        shaded_limb(shape, kp[h_i], kp[k_i], r_th, r_th * 0.8, pants * g, p_str, p_noise, light)
        shin_col = pants if long_pants else skin
        shaded_limb(shape, kp[k_i], kp[a_i], r_sh, r_sh * 0.75, shin_col * g,
                    p_str if long_pants else 0.0, p_noise if long_pants else 0.03, light)

    def arm_draw(side: int) -> None:
        s_i, e_i, w_i = (5, 7, 9) if side == 1 else (6, 8, 10)
        g = lr_gain[side]
        fa_d = kp[w_i] - kp[e_i]
        fa_d = fa_d / max(1e-9, float(np.hypot(*fa_d)))
        shaded_limb(shape, kp[s_i], kp[e_i], r_ua, r_ua * 0.85, shirt * g, s_str, s_noise, light)
        fa_col = shirt if long_sleeves else skin
        shaded_limb(shape, kp[e_i], kp[w_i], r_fa, r_fa * 0.8, fa_col * g,
                    s_str if long_sleeves else 0.0, s_noise if long_sleeves else 0.03, light)
        hand_c = kp[w_i] + 0.022 * fa_d
        ang = math.atan2(fa_d[1], fa_d[0])
        shape.add(ellipse(hand_c, 0.03 * build, 0.022 * build, ang), skin * g * 0.6)
        shape.add(ellipse(hand_c, 0.024 * build, 0.017 * build, ang), skin * g)

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
        badge_col = rand_colour(rng, sat=(0.6, 1.0), val=(0.7, 1.0))
        bc = tor([0.5 * sw, -0.72 * tl])
        if u() < 0.5:
            shape.add(ellipse(bc, 0.022, 0.022, 0.0), badge_col)
        else:
            shape.add(ellipse(bc, 0.024, 0.02, lean + math.pi / 4, unit=RHOMB_CS), badge_col)
    # neck, ears, head, hair, face
    shape.add(capsule(neck + tor([0, 0.01]), hd([0, 0.5 * ry]), 0.024 * build, 0.022 * build), skin * 0.85)
    shape.add(ellipse(head_c, rx, ry, head_ang), skin * 0.6)
    shape.add(ellipse(hd([-0.05 * rx, -0.04 * ry]), rx * 0.9, ry * 0.92, head_ang), skin)
    shape.add(ellipse(hd([-0.3 * rx, -0.35 * ry]), rx * 0.35, ry * 0.3, head_ang), skin * 1.12 + 8)
    if u() < 0.9:  # hair cap over the top of the head
        t = np.linspace(np.pi * 1.05, np.pi * 1.95, 12)
        cap = np.stack([1.06 * rx * np.cos(t), 1.06 * ry * np.sin(t) - 0.02 * ry], 1)
        cap = np.concatenate([cap, [[0.8 * rx, -0.45 * ry], [0.0, -0.6 * ry], [-0.8 * rx, -0.45 * ry]]])
        shape.add(head_c + cap @ head_r.T, hair, 0.0, 0.15)
    for k in (3, 4):
        if not hidden[k]:
            ec = hd([0.97 * rx * math.sin(az[k]), face_y[k]])
            shape.add(ellipse(ec, 0.16 * rx, 0.26 * ry, head_ang), skin * 0.7)
    for k in (1, 2):
        ew = max(0.08, 0.16 * math.cos(az[k])) * rx
        shape.add(ellipse(kp[k], ew * 1.5, 0.11 * ry, head_ang), np.full(3, 235.0))
        shape.add(ellipse(kp[k], ew, 0.1 * ry, head_ang), np.full(3, 25.0))
    nx = kp[0]
    shape.add(np.array([hd([0.92 * rx * math.sin(yaw), 0.0]), nx + head_r @ np.array([0.14 * rx, 0.02 * ry]),
                        nx + head_r @ np.array([-0.14 * rx, 0.02 * ry])]), skin * 0.6)
    shape.add(ellipse(hd([0.85 * rx * math.sin(yaw), 0.58 * ry]), 0.3 * rx * max(0.5, math.cos(yaw)),
                      0.06 * ry, head_ang), bgr([150, 40, 45]) * u(0.6, 1.1))
    for side in ((1, -1) if u() < 0.5 else (-1, 1)):
        arm_draw(side)

    # --- person frame -> pixels (pelvis at the origin): aspect, scale, rotation
    ax = u(1 - cfg.aspect, 1 + cfg.aspect)
    if u() < cfg.large_rotation_prob:
        rot = u(-3, 3) * cfg.rotation
    else:
        rot = float(np.clip(rng.normal(0, cfg.rotation / 2), -cfg.rotation, cfg.rotation))
    m = rotation_matrix(math.radians(rot)) @ np.diag([ax, 1.0]) * height_px
    shape.transform(m)
    tex = (u(0.05, 0.25), u(0, math.pi), u(0, 2 * math.pi), u(4, 12))
    # extra points of the other formats: pure geometry, no random draws (the COCO output is unchanged)
    extra, extra_hidden = figure_extras(kp, build, neck, head_c, head_r, rx, ry, yaw, neck_len)
    head_poly = ellipse(head_c, rx, ry, head_ang)
    return Person(kp @ m.T, hidden, shape, height_px, tex, extra @ m.T, extra_hidden, head_poly @ m.T)

