"""Multi-person (bottom-up / single-stage) samples: one whole image with all its people (docs/bottomup.md).

Each image is warped to a square input of ``S x S`` pixels: its longer side is scaled to ``S`` and the rest is
padded (the image centre lands on the input centre). Training augments the whole image (HigherHRNet / DEKR
style): a random scale, rotation and translation of that warp and a horizontal flip, applied to every person's
keypoints, and to their areas (scaled by the warp's scale squared). The codec gets the people (a PersonSet) and
the loss mask at the output resolution and returns the fixed-shape targets.

Rules (docs/bottomup.md, "Data rules"): a keypoint that leaves the input becomes unlabelled; a person whose
keypoints all left the input is kept with no labelled keypoint (the codec ignores it) unless it never had one.
COCO ``iscrowd`` regions and people without labelled keypoints (their segmentation, or their box when there is
none) are 0 in the mask: the losses do not see them. CrowdPose's crowd index is one number per image: it is not a
region and is not masked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
import torch

from sar.data import transforms as T
from sar.data.datamodule import TopDownDataModule, resolve_dataset_root
from sar.data.decode import EncodedImage
from sar.data.formats.coco import load_coco_people
from sar.data.image_check import check_record_images
from sar.data.topdown import AugConfig, SeededDataset, _to_tensor
from sar.utils.config_keys import require

log = logging.getLogger(__name__)

__all__ = ["BottomUpAug", "BottomUpDataModule", "BottomUpDataset", "dataset_augmentation", "ignore_mask",
           "input_warp", "resolve_test_scales"]


@dataclass(frozen=True)
class BottomUpAug:
    """Whole-image augmentation (``task.augmentation`` of conf/task/bottomup.yaml; HigherHRNet's defaults):
    ``flip_prob``, ``rotation`` (max degrees), ``scale_range`` (of the warp), ``translation`` (max shift as a
    fraction of the input side)."""

    flip_prob: float = 0.5
    rotation: float = 30.0
    scale_range: tuple[float, float] = (0.75, 1.5)
    translation: float = 0.078125  # 40 px at 512

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> BottomUpAug:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"task.augmentation: unknown keys {unknown} (known: {sorted(known)})")
        if "scale_range" in cfg:
            cfg["scale_range"] = tuple(float(v) for v in cfg["scale_range"])
        return cls(**cfg)


def dataset_augmentation(block: Mapping[str, Any] | None, dataset: str | None = None) -> dict[str, Any]:
    """The whole-image settings of a dataset's own ``augmentation`` block (overrides of ``task.augmentation``, as
    the top-down task merges them; the embedded default conf/dataset/synthetic_crowd.yaml has one). The block may
    also hold top-down settings it inherits (``half_body_*``, ``shift_*``, ...): with no person boxes they do not
    apply and are left out (logged); a key neither augmentation knows is an error naming the dataset."""
    block = dict(block or {})
    whole = {f.name for f in fields(BottomUpAug)}
    topdown = {f.name for f in fields(AugConfig)}
    unknown = sorted(set(block) - whole - topdown)
    if unknown:
        raise ValueError(f"dataset {dataset}: augmentation: unknown keys {unknown} (task=bottomup knows "
                         f"{sorted(whole)})")
    ignored = sorted(set(block) - whole)
    if ignored:
        log.info("dataset %s: top-down augmentation settings %s do not apply to whole images (ignored)", dataset,
                 ignored)
    return {k: v for k, v in block.items() if k in whole}


def input_warp(width: int, height: int, size: int, scale: float = 1.0, rotation: float = 0.0,
               shift: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """The (2, 3) affine image pixels -> input pixels: the longer side fit to ``size`` (times ``scale``), the image
    centre (plus ``shift`` input pixels) on the input centre, rotated by ``rotation`` degrees."""
    side = max(width, height) / float(scale)
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    matrix = T.get_affine(centre, (side, side), rotation, (size, size))
    matrix[:, 2] += np.asarray(shift, dtype=np.float64)
    return matrix


def ignore_mask(regions: Sequence[Mapping[str, Any]], width: int, height: int) -> np.ndarray:
    """(height, width) uint8: 1 inside the regions (COCO polygons or RLE; the box where there is no
    segmentation)."""
    out = np.zeros((height, width), dtype=np.uint8)
    if not regions:
        return out
    from pycocotools import mask as mask_utils

    for region in regions:
        seg = region.get("segmentation")
        if seg:
            if isinstance(seg, list):
                rles = mask_utils.frPyObjects([p for p in seg if len(p) >= 6], height, width)
                decoded = mask_utils.decode(mask_utils.merge(rles)) if rles else None
            else:
                rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg.get("counts"), list) else seg
                decoded = mask_utils.decode(rle)
            if decoded is not None:
                out |= decoded.astype(np.uint8).reshape(height, width)
                continue
        x, y, w, h = (float(v) for v in region["bbox"])
        out[max(int(y), 0):max(math.ceil(y + h), 0), max(int(x), 0):max(math.ceil(x + w), 0)] = 1
    return out


def resolve_test_scales(cfg: dict[str, Any]) -> tuple[float, ...]:
    """``task.test_scales`` (default ``[1.0]``) checked: positive, and ``input_size`` x each scale a multiple of
    the backbone's stride (the network must give whole maps)."""
    scales = tuple(float(v) for v in (cfg["task"].get("test_scales") or [1.0]))
    stride = int(cfg.get("backbone", {}).get("stride", 32) or 32)
    for scale in scales:
        sizes = [float(v) * scale for v in cfg["input_size"]]
        if scale <= 0 or any(abs(v - round(v)) > 1e-6 or round(v) % stride for v in sizes):
            raise ValueError(f"task.test_scales: {scale} x input_size {list(cfg['input_size'])} = {sizes} is not a "
                             f"positive multiple of the backbone stride {stride}")
    return scales


class BottomUpDataset(SeededDataset):
    """Whole-image samples from :func:`sar.data.formats.coco.load_coco_people` records.

    ``codec``: the configured multi-person codec (``input_size`` (S, S), ``heatmap_size`` (S/r, S/r),
    ``encode(keypoints, visible, areas, mask)``); ``spec``: the keypoint spec (flip indices). ``render_scale``
    (evaluation only): the image is rendered at ``render_scale`` x S (the largest of ``task.test_scales``, so
    that no test scale upsamples), ``meta["inv_warp"]`` maps its pixels back; the targets stay at S."""

    def __init__(self, records: Sequence[Mapping[str, Any]], spec: Any, codec: Any, train: bool,
                 aug: Mapping[str, Any] | BottomUpAug | None = None, seed: int = 0,
                 render_scale: float = 1.0, decode_rows_only: bool = True) -> None:
        self.records = list(records)
        self.decode_rows_only = bool(decode_rows_only)  # JPEG rows below the input skipped (sar.data.decode): exact
        self.spec = spec
        self.codec = codec
        self.train = bool(train)
        self.aug = aug if isinstance(aug, BottomUpAug) else BottomUpAug.from_mapping(aug)
        self.seed = int(seed)
        self.size = int(codec.input_size[0])
        if int(codec.input_size[1]) != self.size:
            raise ValueError(f"the multi-person input must be square, got input_size {tuple(codec.input_size)}")
        self.out_size = (int(codec.heatmap_size[0]), int(codec.heatmap_size[1]))
        self.render_size = round(self.size * float(render_scale))
        if self.train and self.render_size != self.size:
            raise ValueError("render_scale is for evaluation sets only")
        self.flip_indices = np.asarray(spec.flip_indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def warp_for(self, record: Mapping[str, Any], rng: np.random.Generator | None) -> tuple[np.ndarray, bool]:
        """The image -> input affine of a sample (augmented when ``rng`` is given) and whether it is flipped."""
        width, height = int(record["width"]), int(record["height"])
        if rng is None:
            return input_warp(width, height, self.size), False
        a = self.aug
        flip = bool(rng.random() < a.flip_prob)
        scale = float(rng.uniform(*a.scale_range))
        rotation = float(rng.uniform(-a.rotation, a.rotation))
        shift = rng.uniform(-a.translation, a.translation, size=2) * self.size
        matrix = input_warp(width, height, self.size, scale, rotation, shift)
        if flip:
            matrix = T.compose_affine(matrix, T.flip_matrix(width))
        return matrix, flip

    def get_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        record = self.records[int(index)]
        image_id = int(record["image_id"])
        encoded = EncodedImage(str(record["image_path"]), image_id)
        width, height = encoded.size
        if (int(record["width"]), int(record["height"])) != (width, height):  # the json's size may be absent
            record = {**record, "width": width, "height": height}
        matrix, flipped = self.warp_for(record, rng)
        render = matrix
        if self.render_size != self.size:
            f = self.render_size / self.size
            render = T.compose_affine(T.resize_matrix(f, f), matrix)
        out = (self.render_size, self.render_size)
        inverse = T.invert_affine(render)
        image, _ = encoded.decode_for_warp(inverse, out, max_factor=1, rows_only=self.decode_rows_only)
        crop = T.warp(image, render, out)
        keypoints = np.asarray(record["keypoints"], dtype=np.float32)
        visible = np.asarray(record["visible"], dtype=np.float32).copy()
        if flipped and len(keypoints):
            keypoints, visible = keypoints[:, self.flip_indices], visible[:, self.flip_indices]
        points = T.transform_points(keypoints, matrix).astype(np.float32) if len(keypoints) else keypoints
        lo, hi = -0.5, self.size - 0.5  # pixel edges of the input
        inside = (points[..., 0] >= lo) & (points[..., 0] <= hi) & (points[..., 1] >= lo) & (
            points[..., 1] <= hi)
        visible = visible * inside
        scale2 = float(abs(np.linalg.det(matrix[:, :2])))  # area scale of the warp
        areas = np.asarray(record["areas"], dtype=np.float32) * scale2
        # loss mask at the output resolution: a cell is ignored when any input pixel of it is in an ignored region
        mask = np.ones((self.out_size[1], self.out_size[0]), dtype=np.float32)
        ignore = ignore_mask(record["ignore"], width, height) if record["ignore"] else None
        if ignore is not None and ignore.any():
            warped = cv2.warpAffine(ignore, matrix, (self.size, self.size), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            ry, rx = self.size // self.out_size[1], self.size // self.out_size[0]
            blocks = warped[: ry * self.out_size[1], : rx * self.out_size[0]].reshape(
                self.out_size[1], ry, self.out_size[0], rx)
            mask[blocks.max(axis=(1, 3)) > 0] = 0.0
        targets = self.codec.encode(points, visible, areas, mask)
        meta = {
            "index": int(index), "image_id": image_id, "num_people": len(areas),
            "inv_warp": torch.from_numpy(inverse.astype(np.float32)),
        }
        return {"image": T.image_to_tensor(crop, bgr=True), "targets": {k: _to_tensor(v) for k, v in targets.items()},
                "meta": meta}


class BottomUpDataModule(TopDownDataModule):
    """The multi-person DataModule (``task.datamodule`` of conf/task/bottomup.yaml): the top-down DataModule's
    files, checks and loaders with whole-image samples. One validation loader: every val image (people found by
    the network, no person boxes). ``dataset.format`` must be ``coco`` (COCO, CrowdPose, OCHuman files)."""

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any], system: Any) -> BottomUpDataModule:
        task, dataset = require(config, "task"), require(config, "dataset")
        augmentation = {**require(task, "augmentation", "task"),
                        **dataset_augmentation(dataset.get("augmentation"), dataset.get("name"))}
        BottomUpAug.from_mapping(augmentation)  # every key known
        module = cls(dataset, system.spec, system.codec, augmentation, seed=int(require(config, "seed")))
        module.val_render_scale = max(1.0, *resolve_test_scales(config))
        return module

    def setup(self, stage: str | None = None) -> None:
        if self.format != "coco":
            raise ValueError(f"task=bottomup reads COCO-format files; dataset {self.cfg['name']} has format "
                             f"{self.format!r}")
        self.root = resolve_dataset_root(self.cfg)
        checks: list[tuple[str, list]] = []
        if stage in (None, "fit") and self.train_set is None:
            train_ann = self.train_ann_file()
            records = load_coco_people(train_ann, self._path("train_images"), self.spec, keep_empty=False)
            self._check_train_size(records, train_ann)
            checks.append((f"train set {train_ann}", records))
            self.train_set = self._dataset(records, train=True)
        if not self.val_sets:
            ann = self.val_ann_file
            records = load_coco_people(ann, self._path("val_images"), self.spec, data=self.val_annotations)
            if not records:
                raise ValueError(f"val set {ann}: no images")
            checks.append((f"val set {ann}", records))
            self.val_sets = [self._dataset(records, train=False)]
        if checks:
            check_record_images(checks)

    def _dataset(self, records: list[dict], train: bool) -> BottomUpDataset:
        return BottomUpDataset(records, self.spec, self.codec, train=train, aug=self.augmentation, seed=self.seed,
                               render_scale=1.0 if train else getattr(self, "val_render_scale", 1.0))

    @property
    def uses_detector_boxes(self) -> bool:
        return False
