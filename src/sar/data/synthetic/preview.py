"""A PNG contact sheet of a written COCO-format synthetic dataset, to look at what the generator draws."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sar.data.synthetic.figure import NUM_KPTS, SKELETON

__all__ = ["render_preview"]

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
