"""Keypoint fixtures of the codec tests: random points in a crop and their mirror image."""

from __future__ import annotations

import numpy as np

#: A 6-keypoint layout: keypoints 0 and 5 are central, (1, 2) and (3, 4) are left/right pairs.
FLIP_INDICES = [0, 2, 1, 4, 3, 5]


def random_points(rng: np.random.Generator, n: int, size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """``n`` points (n, 2) uniform in a ``size`` = (w, h) crop, at least ``margin`` px from its border pixels."""
    w, h = size
    return np.stack([rng.uniform(margin, w - 1 - margin, n), rng.uniform(margin, h - 1 - margin, n)], 1)


def mirror(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Keypoints of the horizontally mirrored image: keypoint k is the mirror of partner FLIP_INDICES[k]."""
    mirrored = keypoints[FLIP_INDICES].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    return mirrored
