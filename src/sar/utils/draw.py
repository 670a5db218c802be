"""Draw predicted skeletons on images with the keypoint spec's links and link colours (OpenCV, BGR images)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["draw_instances"]


def draw_instances(
    image: np.ndarray,
    keypoints: Sequence[np.ndarray] | np.ndarray,
    spec,
    kpt_thr: float = 0.2,
    boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of the BGR ``image`` with every instance drawn.

    Args:
        image: HxWx3 uint8 BGR image.
        keypoints: per instance a (K, 3) array ``x, y, score`` in image pixels.
        spec: the :class:`~sar.data.spec.KeypointSpec` (``skeleton`` links, ``colors`` RGB per link).
        kpt_thr: keypoints with a score at or below it (and links touching them) are not drawn.
        boxes: optional per-instance ``xywh`` boxes, drawn in grey.
        thickness: line thickness; default scales with the image size.
    """
    canvas = np.ascontiguousarray(image).copy()
    h, w = canvas.shape[:2]
    t = thickness or max(1, round(max(h, w) / 300))
    radius = t + 1
    colors = np.asarray(spec.colors, dtype=np.int64)
    if boxes is not None:
        for x, y, bw, bh in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            cv2.rectangle(canvas, (round(x), round(y)), (round(x + bw), round(y + bh)), (160, 160, 160), t,
                          cv2.LINE_AA)
    for kpts in keypoints:
        kpts = np.asarray(kpts, dtype=np.float64).reshape(-1, 3)
        ok = np.isfinite(kpts).all(axis=1) & (kpts[:, 2] > kpt_thr)
        for (a, b), rgb in zip(spec.skeleton, colors):
            if ok[a] and ok[b]:
                bgr = (int(rgb[2]), int(rgb[1]), int(rgb[0]))
                cv2.line(canvas, (round(kpts[a, 0]), round(kpts[a, 1])), (round(kpts[b, 0]), round(kpts[b, 1])),
                         bgr, t, cv2.LINE_AA)
        for x, y, _ in kpts[ok]:
            cv2.circle(canvas, (round(x), round(y)), radius, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(canvas, (round(x), round(y)), radius, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
