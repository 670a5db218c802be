"""Top-down prediction on raw images (what ``sar.predict`` asks of the top-down task,
:meth:`sar.systems.topdown.TopDownSystem.predict_images`).

Each person box goes through the validation path of training: the top-down crop (``TopDownDataset``: padded
box, one affine warp, ImageNet normalisation), ``TopDownSystem.predict_crops`` (codec decoding, flip test as
configured) and the inverse warp to image pixels; instances are rescored and, with detector boxes, OKS-NMS'ed
per image as the checkpoint's evaluator does (``task.evaluation``). Without boxes the whole image is the box.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from sar.data.topdown import TopDownDataset, read_image
from sar.evaluation.coco_ap import instance_score, oks_nms

__all__ = ["build_records", "image_size", "predict_instances", "predict_records"]

log = logging.getLogger("sar.predict")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the stored pixels (as `read_image` decodes them, EXIF orientation ignored)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - formats PIL cannot open: decode with OpenCV
        h, w = read_image(str(path)).shape[:2]
        return w, h


def build_records(images: Sequence[Path], ids: Sequence[int | None], det: Mapping[int, list] | None,
                  num_keypoints: int, skipped: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Instance records (the reader's format, docs/contracts.md) for the person boxes to predict.

    ``skipped`` maps the positions of images to leave out to the reason; an image whose size cannot be read
    (whole-image boxes) is added to it."""
    skipped = {} if skipped is None else skipped
    records = []
    no_box = []
    for pos, (path, coco_id) in enumerate(zip(images, ids)):
        if pos in skipped:
            continue
        image_id = coco_id if coco_id is not None else -(pos + 1)
        if det is None:
            try:
                w, h = image_size(path)
            except (OSError, ValueError) as err:
                skipped[pos] = str(err)
                continue
            boxes = [(np.array([0.0, 0.0, w, h], np.float32), 1.0)]
        else:
            boxes = det.get(coco_id, []) if coco_id is not None else []
            if not boxes:
                no_box.append(path.name)
        for box, score in boxes:
            records.append({
                "image_path": str(path), "image_id": int(image_id), "ann_id": -1, "bbox": box,
                "bbox_score": float(score), "area": float(box[2] * box[3]),
                "keypoints": np.zeros((num_keypoints, 2), np.float32), "visible": np.zeros(num_keypoints, np.float32),
                "position": pos,
            })
    if no_box:
        log.warning("%d image(s) have no person box in the detection file: %s", len(no_box), no_box[:5])
    return records


class _SkipUnreadable(Dataset):
    """A dataset whose samples that fail to read (``OSError``: missing, unreadable, truncated, undecodable; see
    ``read_image``) come back as ``{"failed": index, "error": message}`` instead of stopping the loader."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except (OSError, cv2.error) as err:
            return {"failed": int(index), "error": str(err)}


def _collate_skipping(items: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[int, str]]:
    """(the good samples collated, or None; ``{index: error}`` of the failed ones)."""
    good = [item for item in items if "failed" not in item]
    failed = {item["failed"]: item["error"] for item in items if "failed" in item}
    return (default_collate(good) if good else None), failed


@torch.no_grad()
def predict_records(system, records: Sequence[Mapping[str, Any]], batch_size: int, num_workers: int,
                    device: torch.device) -> tuple[np.ndarray, dict[int, str]]:
    """(N, K, 3) keypoints ``x, y, score`` in image pixels, one row per record (training's validation path), and
    ``{record index: error}`` for the records whose image could not be read (their rows are NaN)."""
    from sar.systems.topdown import apply_affine  # here: sar.systems.topdown imports this module lazily too

    k = system.spec.num_keypoints
    out = np.full((len(records), k, 3), np.nan)
    failed: dict[int, str] = {}
    if not records:
        return out, failed
    dataset = TopDownDataset(records, system.spec, system.codec, train=False,
                             padding=float(system.cfg["task"]["padding"]))
    loader = DataLoader(_SkipUnreadable(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_skipping)
    for batch, batch_failed in loader:
        failed.update(batch_failed)
        if batch is None:
            continue
        keypoints, scores = system.predict_crops(batch["image"].to(device))
        in_image = apply_affine(batch["meta"]["inv_warp"].to(keypoints), keypoints.float())
        rows = batch["meta"]["index"].numpy()
        out[rows] = torch.cat([in_image, scores.float()[..., None]], dim=-1).cpu().numpy().astype(np.float64)
    return out, failed


def predict_instances(system: Any, images: Sequence[Path], ids: Sequence[int | None],
                      det: Mapping[int, list] | None, skipped: dict[int, str], batch_size: int, num_workers: int,
                      device: torch.device, use_nms: bool) -> tuple[list[dict[str, Any]], int]:
    """(instances, number of boxes predicted). An instance: ``image_id``, ``keypoints`` (K, 3) in image pixels
    with scores, ``bbox``, ``bbox_score``, ``area``, ``score`` (the evaluator's rescoring), ``position`` (the
    image's index in ``images``). Images that cannot be read are added to ``skipped`` (position -> reason)."""
    ev = system.cfg["task"]["evaluation"]
    records = build_records(images, ids, det, system.spec.num_keypoints, skipped)
    kpts, failed = predict_records(system, records, batch_size, num_workers, device)
    for i, error in failed.items():
        skipped.setdefault(records[i]["position"], error)
    instances = [
        {"image_id": r["image_id"], "keypoints": kpts[i], "area": r["area"], "bbox": r["bbox"],
         "bbox_score": r["bbox_score"], "position": r["position"],
         "score": instance_score(kpts[i][:, 2], r["bbox_score"], str(ev["score_mode"]), float(ev["kpt_score_thr"]))}
        for i, r in enumerate(records) if r["position"] not in skipped
    ]
    if use_nms and det is not None and instances:
        instances = [instances[i] for i in oks_nms(instances, float(ev["nms_thr"]), system.spec.sigmas)]
    return instances, len(records)
