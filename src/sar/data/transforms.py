"""Top-down geometric and photometric transforms (numpy + cv2, one affine warp per sample).

Conventions (see ``docs/contracts.md``): coordinates are float pixels in ``(x, y)`` order with the
pixel-centre convention, i.e. pixel ``i`` covers ``[i - 0.5, i + 0.5]``. This is also the convention
of :func:`cv2.warpAffine`, so a keypoint moved by a matrix ``M`` with :func:`transform_points` lands on
the very pixel that ``warp(image, M, size)`` moves its content to.

A box is described by a *centre* ``(cx, cy)`` and a *scale* ``(w, h)``: the size in image pixels of the
region that fills the whole crop. :func:`get_affine` maps that region's continuous extent
``[cx - w/2, cx + w/2]`` onto the crop's continuous extent ``[-0.5, W_out - 0.5]``; the box centre thus
lands on the crop centre ``((W_out - 1) / 2, (H_out - 1) / 2)``.

The augmentation defaults follow MMPose 1.3.1 (``RandomFlip``, ``RandomHalfBody``, ``RandomBBoxTransform``,
``TopdownAffine`` without UDP). Two deliberate differences:

* the horizontal flip is folded into the affine matrix (:func:`flip_matrix`), so an image is warped once
  and never flipped on its own; the result is identical to flipping first and warping afterwards;
* the half-body box is centred on the *middle* of the chosen keypoints' bounding box instead of their
  mean, so the padded box always covers every chosen keypoint.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Photometric",
    "bbox_to_center_scale",
    "compose_affine",
    "fix_aspect_ratio",
    "flip_instance",
    "flip_matrix",
    "get_affine",
    "half_body",
    "image_to_tensor",
    "invert_affine",
    "normalize_image",
    "normalize_images",
    "random_bbox_transform",
    "resize_matrix",
    "transform_points",
    "truncated_normal",
    "warp",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # RGB
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)  # RGB

ArrayLike = np.ndarray | Sequence[float]


# ---------------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------------
def fix_aspect_ratio(scale: ArrayLike, aspect_ratio: float) -> np.ndarray:
    """Enlarge the short side of ``scale = (w, h)`` so that ``w / h == aspect_ratio``."""
    w, h = (float(v) for v in scale)
    if w > h * aspect_ratio:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return np.array([w, h], dtype=np.float64)


def bbox_to_center_scale(
    bbox: ArrayLike, aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(2,)`` and scale ``(2,)`` (w, h in px) of an ``xywh`` box for a crop of ``aspect_ratio``.

    The short side is enlarged to the crop's aspect ratio (``w / h`` of the network input), then both
    sides are multiplied by ``padding``. Degenerate boxes are treated as at least 1 px wide and high.
    """
    x, y, w, h = (float(v) for v in bbox)
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float64)
    scale = fix_aspect_ratio((max(w, 1.0), max(h, 1.0)), aspect_ratio) * padding
    return center, scale


# ---------------------------------------------------------------------------------------------------
# Affine matrices
# ---------------------------------------------------------------------------------------------------
def get_affine(
    center: ArrayLike,
    scale: ArrayLike,
    rotation_deg: float,
    output_size: Sequence[int],
    inverse: bool = False,
) -> np.ndarray:
    """The ``(2, 3)`` float64 affine matrix mapping image pixels to crop pixels (or back if ``inverse``).

    The region of size ``scale`` centred at ``center`` is rotated by ``rotation_deg`` (positive =
    counter-clockwise on screen, as :func:`cv2.getRotationMatrix2D`) and resized onto a crop of
    ``output_size = (w, h)``; ``center`` lands on the crop centre ``((w - 1) / 2, (h - 1) / 2)``.
    """
    cx, cy = (float(v) for v in center)
    sw, sh = (float(v) for v in scale)
    out_w, out_h = (float(v) for v in output_size)
    if sw <= 0 or sh <= 0:
        raise ValueError(f"scale must be positive, got {tuple(scale)}")
    sx, sy = out_w / sw, out_h / sh
    ox, oy = 0.5 * (out_w - 1.0), 0.5 * (out_h - 1.0)
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    if not inverse:
        # crop = S R (p - c) + o
        lin = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]])
        return np.concatenate([lin, (np.array([ox, oy]) - lin @ np.array([cx, cy]))[:, None]], axis=1)
    # p = R^T S^-1 (crop - o) + c
    lin = np.array([[cos / sx, -sin / sy], [sin / sx, cos / sy]])
    return np.concatenate([lin, (np.array([cx, cy]) - lin @ np.array([ox, oy]))[:, None]], axis=1)


def flip_matrix(image_width: int) -> np.ndarray:
    """The ``(2, 3)`` matrix of a horizontal image flip: ``x' = image_width - 1 - x``."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])


def resize_matrix(fx: float, fy: float) -> np.ndarray:
    """The ``(2, 3)`` matrix of resizing an image by ``(fx, fy)`` with pixel centres at integer coordinates (as
    ``cv2.resize`` and ``F.interpolate(align_corners=False)``): ``x' = (x + 0.5) fx - 0.5``."""
    return np.array([[fx, 0.0, 0.5 * (fx - 1.0)], [0.0, fy, 0.5 * (fy - 1.0)]])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine ``outer ∘ inner`` (``inner`` is applied first), both ``(2, 3)``."""
    lin = outer[:, :2] @ inner[:, :2]
    return np.concatenate([lin, (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a ``(2, 3)`` affine matrix (float64)."""
    lin = np.linalg.inv(np.asarray(matrix, dtype=np.float64)[:, :2])
    return np.concatenate([lin, (-lin @ np.asarray(matrix, dtype=np.float64)[:, 2])[:, None]], axis=1)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to points ``(..., 2)``; the result keeps the input's float dtype."""
    pts = np.asarray(points)
    out = pts.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return out.astype(pts.dtype if np.issubdtype(pts.dtype, np.floating) else np.float64)


# ---------------------------------------------------------------------------------------------------
# Flip, half body, random box transform
# ---------------------------------------------------------------------------------------------------
def flip_instance(
    image_width: int,
    keypoints: np.ndarray,
    visible: np.ndarray,
    center: ArrayLike,
    flip_indices: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror an instance horizontally in an image of width ``image_width``.

    Keypoints become ``x' = image_width - 1 - x`` and are permuted so that index ``k`` holds the mirror
    partner ``flip_indices[k]`` (a left wrist becomes the right wrist); ``visible`` is permuted alike
    and the box centre is mirrored. The image itself is flipped by :func:`flip_matrix` inside the warp.
    """
    idx = np.asarray(flip_indices, dtype=np.int64)
    kps = np.array(keypoints, dtype=np.float32 if np.asarray(keypoints).dtype == np.float32 else np.float64)
    kps[:, 0] = (image_width - 1) - kps[:, 0]
    c = np.array(center, dtype=np.float64)
    c[0] = (image_width - 1) - c[0]
    return kps[idx], np.asarray(visible)[idx].copy(), c


def half_body(
    keypoints: np.ndarray,
    visible: np.ndarray,
    upper_ids: Sequence[int],
    lower_ids: Sequence[int],
    rng: np.random.Generator,
    min_kpts: int = 9,
    padding: float = 1.5,
    aspect_ratio: float = 0.75,
    min_upper: int = 2,
    min_lower: int = 3,
    upper_prob: float = 0.7,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A box around the upper or the lower body, or ``None`` when the instance does not qualify.

    Needs at least ``min_kpts`` visible keypoints. The upper half is chosen with ``upper_prob`` when
    both halves have enough visible keypoints (``min_upper`` / ``min_lower``), otherwise whichever half
    has. The box is the chosen keypoints' bounding box, its aspect fixed to ``aspect_ratio`` and scaled
    by ``padding``; it is centred on the bounding-box middle, so it covers every chosen keypoint.
    (The caller draws the probability of applying half-body at all.)
    """
    vis = np.asarray(visible) > 0
    if int(vis.sum()) < min_kpts:
        return None
    upper = [i for i in upper_ids if vis[i]]
    lower = [i for i in lower_ids if vis[i]]
    prefer_upper = rng.random() < upper_prob
    upper_ok, lower_ok = len(upper) >= min_upper, len(lower) >= min_lower
    if upper_ok and lower_ok:
        chosen = upper if prefer_upper else lower
    elif upper_ok:
        chosen = upper
    elif lower_ok:
        chosen = lower
    else:
        return None
    pts = np.asarray(keypoints, dtype=np.float64)[chosen]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    w, h = hi - lo
    if w <= 0 and h <= 0:
        return None
    center = 0.5 * (lo + hi)
    scale = fix_aspect_ratio((max(w, 1e-3), max(h, 1e-3)), aspect_ratio) * padding
    return center, scale


def truncated_normal(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """Standard normal samples truncated to ``[-1, 1]`` (rejection sampling)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 1.0
    return out


def random_bbox_transform(
    center: np.ndarray,
    scale: np.ndarray,
    rng: np.random.Generator,
    shift_factor: float = 0.16,
    shift_prob: float = 0.3,
    scale_range: Sequence[float] = (0.5, 1.5),
    scale_prob: float = 1.0,
    rotation: float = 80.0,
    rotation_prob: float = 0.6,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Randomly shift, rescale and rotate a box (MMPose ``RandomBBoxTransform``).

    With probability ``shift_prob`` the centre moves by ``t * shift_factor * scale`` per axis; with
    ``scale_prob`` the scale is multiplied by ``mu + t * sigma`` (the middle and half-width of
    ``scale_range``); with ``rotation_prob`` the rotation is ``t * rotation`` degrees. Each ``t`` is a
    standard normal truncated to ``[-1, 1]``. Returns ``(center, scale, rotation_deg)``.
    """
    t = truncated_normal(rng, 4)
    u = rng.random(3)
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if u[0] < shift_prob:
        center = center + t[:2] * shift_factor * scale
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if u[1] < scale_prob:
        scale = scale * (0.5 * (lo + hi) + t[2] * 0.5 * (hi - lo))
    rot = float(t[3] * rotation) if u[2] < rotation_prob else 0.0
    return center, scale, rot


# ---------------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------------
def warp(image: np.ndarray, matrix: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """``cv2.warpAffine`` with bilinear interpolation and a constant 0 border; ``output_size = (w, h)``."""
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(output_size[0]), int(output_size[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


_NORM_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_NORM_SHIFT = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


def image_to_tensor(image: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """HWC uint8 image → CHW uint8 tensor in RGB channel order (``bgr=True``: a BGR image, as OpenCV reads it).

    What the datasets return: the network normalises on its device (:func:`normalize_images`, first step of
    :class:`sar.models.pose_model.PoseModel`), as mmpose's data preprocessor does, so a sample is a quarter of the
    bytes of a float one and the loader does no per-pixel float work."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got shape {image.shape} {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[::-1] if bgr else image.transpose(2, 0, 1)))


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (``(3, H, W)`` or ``(N, 3, H, W)``, on any device) → float32, ImageNet-normalised:
    ``x * 1 / (255 std) - mean / std`` per channel, as two float32 operations (the same values bit for bit as the
    former per-sample numpy path). Float images are taken as already normalised and returned unchanged."""
    if images.dtype != torch.uint8:
        return images
    shape = (3, 1, 1) if images.dim() == 3 else (1, 3, 1, 1)
    scale = torch.as_tensor(_NORM_SCALE, device=images.device).view(shape)
    shift = torch.as_tensor(_NORM_SHIFT, device=images.device).view(shape)
    out = images.to(torch.float32)
    out.mul_(scale)
    out.add_(shift)
    return out


def normalize_image(image: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """HWC uint8 image → CHW float32 tensor, ImageNet-normalised in RGB channel order (``bgr=True``: a BGR
    image); :func:`image_to_tensor` then :func:`normalize_images`."""
    return normalize_images(image_to_tensor(image, bgr))


class Photometric:
    """Photometric augmentation of the (RGB, uint8) crop with albumentations, seeded per call.

    Brightness/contrast, hue/saturation, a mild blur and mild Gaussian noise, each with a modest
    probability. The albumentations pipeline is built lazily, so instances pickle cheaply to workers.
    """

    def __init__(self) -> None:
        self._pipeline = None

    def _build(self):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A

        return A.Compose(
            [
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
                A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=0, p=0.3),
                A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2), p=0.1),
                A.GaussNoise(std_range=(0.01, 0.04), p=0.1),
            ]
        )

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        if self._pipeline is None:
            self._pipeline = self._build()
        self._pipeline.set_random_seed(int(seed))
        return self._pipeline(image=image)["image"]

    def __getstate__(self) -> dict:
        return {"_pipeline": None}
