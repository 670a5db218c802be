"""The COCO writer (:func:`generate`: images, COCO keypoints jsons, detector boxes), the JSON pieces the other
formats' writers share with it, and the completion marker every writer writes last.

Layout: ``images/{train,val}/NNNNNN.jpg``, ``annotations/person_keypoints_{train,val}.json`` and
``annotations/person_detection_results_val.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sar.data.synthetic.config import (
    DET_STREAM,
    GENERATOR_VERSION,
    TRAIN_STREAM,
    VAL_STREAM,
    SyntheticConfig,
    image_rng,
)
from sar.data.synthetic.figure import KEYPOINT_NAMES, SKELETON
from sar.data.synthetic.renderer import render_split

__all__ = [
    "COMPLETE_MARKER",
    "coco_categories",
    "coco_file",
    "detections",
    "dump_json",
    "generate",
    "image_entries",
    "is_complete",
    "render_files",
    "write_marker",
]

COMPLETE_MARKER = "_COMPLETE"


# --------------------------------------------------------------------------------------- shared pieces
def render_files(cfg: SyntheticConfig, stream: int, img_dir: Path, names: Sequence[str],
                 num_workers: int | None, extra: bool = False) -> list[list[dict[str, Any]]]:
    """Render image ``i`` of ``stream`` to ``img_dir / names[i]`` (see :func:`render_split`)."""
    img_dir.mkdir(parents=True, exist_ok=True)
    return render_split(cfg, stream, [img_dir / n for n in names], num_workers, extra=extra)


def image_entries(ids: Sequence[int], names: Sequence[str], cfg: SyntheticConfig) -> list[dict[str, Any]]:
    """The ``images`` entries of a COCO json."""
    w, h = cfg.image_size
    return [{"id": i, "file_name": n, "width": w, "height": h, "license": 1} for i, n in zip(ids, names)]


def coco_categories() -> list[dict[str, Any]]:
    """The COCO person category: the figure's keypoint names and the 1-based skeleton."""
    return [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(s) for s in SKELETON],
    }]


def coco_file(cfg: SyntheticConfig, images: list[dict[str, Any]], anns: list[dict[str, Any]],
              categories: list[dict[str, Any]], description: str, contributor: str) -> dict[str, Any]:
    """A COCO-style json: ``info`` (with the config), the licence, images, annotations and categories."""
    info = {"description": description, "version": str(GENERATOR_VERSION), "year": 2024,
            "contributor": contributor, "config": cfg.to_dict()}
    return {"info": info, "licenses": [{"id": 1, "name": "CC0 (procedurally generated)", "url": ""}],
            "images": images, "annotations": anns, "categories": categories}


def dump_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def detections(cfg: SyntheticConfig, images: list[dict[str, Any]],
               anns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detector-style boxes: jittered GT boxes scored by visibility, misses and false positives."""
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    dets: list[dict[str, Any]] = []
    for idx, im in enumerate(images):
        rng = image_rng(cfg.seed, DET_STREAM, idx)
        w, h = im["width"], im["height"]
        for a in by_image.get(im["id"], []):
            if a.get("iscrowd", 0):  # a crowd region is no person box (the detector stream is unchanged without crowds)
                continue
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


# ------------------------------------------------------------------------------------- completion marker
def _marker_payload(cfg: SyntheticConfig, fmt: str = "coco") -> dict[str, Any]:
    return cfg.to_dict() if fmt == "coco" else {"format": fmt, **cfg.to_dict()}


def write_marker(root: Path | str, cfg: SyntheticConfig, fmt: str = "coco") -> None:
    """Write the completion marker (last step of every writer)."""
    (Path(root) / COMPLETE_MARKER).write_text(json.dumps(_marker_payload(cfg, fmt), sort_keys=True))


def is_complete(root: Path, cfg: SyntheticConfig, fmt: str = "coco") -> bool:
    """Whether ``root`` holds a finished dataset of this config and format (its marker matches)."""
    marker = Path(root) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(_marker_payload(cfg, fmt), sort_keys=True))
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------ the writer
def generate(cfg: SyntheticConfig | Mapping[str, Any], root: Path | str,
             num_workers: int | None = None) -> Path:
    """Render the dataset into ``root`` (images, COCO jsons, detections) and write the marker last.

    ``num_workers`` defaults to ``min(2, cpu_count)``; small datasets are rendered in-process. The output
    does not depend on ``num_workers``.
    """
    cfg = SyntheticConfig.from_any(cfg)
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, stream, count in (("train", TRAIN_STREAM, cfg.num_train), ("val", VAL_STREAM, cfg.num_val)):
        ids = list(range(1, count + 1))
        names = [f"{i:06d}.jpg" for i in ids]
        results = render_files(cfg, stream, root / "images" / split, names, num_workers)
        images = image_entries(ids, names, cfg)
        anns: list[dict[str, Any]] = []
        for im, rec in zip(images, results):
            for a in rec:
                anns.append({"id": len(anns) + 1, "image_id": im["id"], **a})
        coco = coco_file(cfg, images, anns, coco_categories(),
                         description="sar synthetic people (COCO keypoints format)",
                         contributor="sar.data.synthetic")
        dump_json(coco, root / "annotations" / f"person_keypoints_{split}.json")
        if split == "val":
            dump_json(detections(cfg, images, anns), root / "annotations" / "person_detection_results_val.json")
    write_marker(root, cfg)
    return root
