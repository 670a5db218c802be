"""A PNG contact sheet of a written COCO-format synthetic dataset, to look at what the generator draws.

Skeletons are drawn by :func:`sar.utils.draw.draw_instances` with the ``coco`` keypoint spec: its links in the
spec's colours (left side green, right side orange, centre blue), the labelled keypoints as white dots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sar.data.spec import load_spec
from sar.utils.draw import draw_instances

__all__ = ["render_preview"]

_GT_BOX = (0, 230, 230)  # BGR yellow
_DET_BOX = (160, 160, 160)
_OCCLUDED = (0, 0, 255)  # BGR red


def render_preview(root: Path | str, out: Path | str, split: str = "val", num_images: int = 12,
                   cols: int = 4, scale: float = 2.0, show_boxes: bool = True) -> Path:
    """Write a PNG grid of ``num_images`` images with keypoints, skeleton and boxes drawn.

    Links and keypoints as in the module docstring; occluded (v=1) keypoints get a red ring; GT boxes are
    yellow, detector boxes (val) grey with their score. The file's keypoint names must be the ``coco`` spec's.
    """
    spec = load_spec("coco")
    root, out = Path(root), Path(out)
    ann_file = root / "annotations" / f"person_keypoints_{split}.json"
    coco = json.loads(ann_file.read_text())
    names = tuple(coco["categories"][0]["keypoints"])
    if names != spec.keypoint_names:
        raise ValueError(f"{ann_file}: keypoints {list(names)} are not those of the {spec.name!r} spec")
    dets: dict[int, list[dict[str, Any]]] = {}
    det_file = root / "annotations" / "person_detection_results_val.json"
    if split == "val" and show_boxes and det_file.is_file():
        for d in json.loads(det_file.read_text()):
            dets.setdefault(d["image_id"], []).append(d)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    thickness = max(1, round(scale))

    def px(v: float) -> float:  # image -> tile coordinate (pixel centres stay centres)
        return (v + 0.5) * scale - 0.5

    def box(b: list[float]) -> tuple[float, float, float, float]:  # xywh in tile coordinates
        return px(b[0]), px(b[1]), b[2] * scale, b[3] * scale

    tiles = []
    for im in coco["images"][:num_images]:
        img = cv2.imread(str(root / "images" / split / im["file_name"]))
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        people, image_dets = by_image.get(im["id"], []), dets.get(im["id"], [])
        boxes = [(d["bbox"], _DET_BOX) for d in image_dets] + [(a["bbox"], _GT_BOX) for a in people if show_boxes]
        for b, colour in boxes:
            x, y, bw, bh = box(b)
            cv2.rectangle(img, (round(x), round(y)), (round(x + bw), round(y + bh)), colour, 1)
        kpts = []
        for a in people:
            kp = np.asarray(a["keypoints"], float).reshape(-1, 3)  # the visibility is the score: v > 0 is drawn
            kpts.append(np.column_stack([px(kp[:, 0]), px(kp[:, 1]), kp[:, 2]]))
        tile = draw_instances(img, kpts, spec, kpt_thr=0.0, thickness=thickness)
        for d in image_dets:
            x, y, _, _ = box(d["bbox"])
            cv2.putText(tile, f"{d['score']:.2f}", (round(x), round(y + 8 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3, (200, 200, 200), 1)
        for kp in kpts:
            for x, y, _ in kp[kp[:, 2] == 1]:
                cv2.circle(tile, (round(x), round(y)), thickness + 3, _OCCLUDED, 1, cv2.LINE_AA)
        tiles.append(tile)
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
