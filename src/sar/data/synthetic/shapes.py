"""Drawing primitives the figure and the scene are built from: polygons (tapered capsules, ellipses), shaded limbs,
colours, and :class:`Shape`, a list of coloured, textured polygons in draw order.

Everything here is pure geometry and colour sampling; rasterising a shape is the renderer's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "RHOMB_CS",
    "Shape",
    "bgr",
    "capsule",
    "direction",
    "ellipse",
    "new_shape",
    "rand_colour",
    "rotation_matrix",
    "shaded_limb",
    "skin_colour",
]

_CAP_T = np.linspace(np.pi / 2, -np.pi / 2, 5)
_CAP_CS = np.stack([np.cos(_CAP_T), np.sin(_CAP_T)], 1)
_ELL_T = np.linspace(0.0, 2 * np.pi, 20, endpoint=False)
_ELL_CS = np.stack([np.cos(_ELL_T), np.sin(_ELL_T)], 1)
#: Unit "circle" of a rhombus (4 points), for :func:`ellipse`'s ``unit``.
RHOMB_CS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def rotation_matrix(a: float) -> np.ndarray:
    """2x2 rotation by ``a`` radians."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Convex tapered capsule from ``p0`` (radius ``r0``) to ``p1`` (radius ``r1``), 10 points."""
    dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    n = math.hypot(dx, dy)
    dx, dy = (0.0, 1.0) if n < 1e-9 else (dx / n, dy / n)
    arc = _CAP_CS @ np.array([[dx, dy], [-dy, dx]])  # +n -> tip -> -n, unit radius
    out = np.empty((10, 2))
    out[:5] = p1 + r1 * arc
    out[5:] = p0 - r0 * arc  # -n -> back -> +n
    return out


def ellipse(c: np.ndarray, a: float, b: float, ang: float = 0.0,
            unit: np.ndarray | None = None) -> np.ndarray:
    """Polygon of the ellipse centred at ``c`` with semi-axes ``a, b`` rotated by ``ang`` (20 points)."""
    ca, sa = math.cos(ang), math.sin(ang)
    m = np.array([[a * ca, a * sa], [-b * sa, b * ca]])  # diag(a, b) @ rotation_matrix(ang).T
    return (_ELL_CS if unit is None else unit) @ m + c


def direction(side: float, ang: float) -> np.ndarray:
    """Unit vector at ``ang`` from 'down', positive towards ``side`` (+1 left = +x, -1 right)."""
    return np.array([side * math.sin(ang), math.cos(ang)])


def bgr(rgb: Sequence[float]) -> np.ndarray:
    """float32 BGR of an RGB triple."""
    return np.array([rgb[2], rgb[1], rgb[0]], np.float32)


def rand_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.2, 0.9),
                val: tuple[float, float] = (0.25, 0.95)) -> np.ndarray:
    """Random BGR colour (0..255, float32) from HSV."""
    h = rng.uniform(0, 180)
    hsv = np.array([[[h, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """Random skin tone (BGR) between a light and a dark one."""
    t = rng.uniform()
    light, dark = np.array([236, 200, 170]), np.array([95, 62, 45])
    return bgr(light * (1 - t) + dark * t + rng.normal(0, 6, 3))


@dataclass
class Shape:
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


def new_shape() -> Shape:
    """An empty :class:`Shape`."""
    return Shape([], [], [], [])


def shaded_limb(shape: Shape, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float,
                colour: np.ndarray, stripe: float, noise: float, light: np.ndarray) -> None:
    """Capsule with a dark rim, base fill and an off-centre light core."""
    shape.add(capsule(p0, p1, r0, r1), colour * 0.55, stripe, noise)
    shape.add(capsule(p0, p1, r0 * 0.78, r1 * 0.78), colour, stripe, noise)
    d = p1 - p0
    nrm = np.array([-d[1], d[0]]) / max(1e-9, math.hypot(d[0], d[1]))
    off = nrm * (0.3 * (r0 + r1) / 2) * (1.0 if nrm @ light >= 0 else -1.0)
    shape.add(capsule(p0 + off, p1 + off, r0 * 0.28, r1 * 0.28), colour * 1.22 + 12, stripe, noise)
