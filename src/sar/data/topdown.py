"""Top-down sample builder: one person box → one augmented crop (uint8 RGB) plus codec targets.

Per training sample (MMPose 1.3.1 order): box → centre/scale (padding, crop aspect) → random flip
(``flip_prob``) → random half-body box (``half_body_prob``) → random shift / scale / rotation → one
affine warp of the decoded image (the flip is folded into the matrix) → optional photometric
augmentation of the crop → uint8 RGB CHW tensor (ImageNet normalisation is the network's first step, on its device:
:class:`sar.models.pose_model.PoseModel`) → ``codec.encode`` of the keypoints in crop pixels.
Validation samples use the plain padded box: no flip, no augmentation.

Randomness. A training sample's augmentation draws from ``np.random.default_rng((seed, epoch, index))``:
the training loader's :class:`sar.data.sampler.EpochSampler` yields ``(index, epoch)`` pairs, so the
augmentation is a function of the seed, the epoch and the sample alone: the same for any worker count,
different from epoch to epoch, and exactly reproducible when a run resumes mid-epoch. A plain integer
index (no epoch) uses epoch 0. :meth:`TopDownDataset.get_sample` takes an explicit generator (tests,
visualisation).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from sar.data import transforms as T
from sar.data.decode import EncodedImage, read_image, reduction_matrix
from sar.utils.config_keys import require

__all__ = ["AugConfig", "TopDownDataset", "read_image"]

_REQUIRED_KEYS = ("image_path", "image_id", "ann_id", "bbox", "bbox_score", "area", "keypoints", "visible")


@dataclasses.dataclass(frozen=True)
class AugConfig:
    """Training augmentation settings (defaults: MMPose 1.3.1, as used by the released SAR recipes).

    ``half_body_min_kpts=None`` scales MMPose's 9-of-17 rule with the number of keypoints K
    (``round(9 * K / 17)``, at least 3). ``photometric`` adds :class:`sar.data.transforms.Photometric`
    on the crop (not part of the MMPose default pipeline, hence off by default).
    """

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_kpts: int | None = None
    half_body_padding: float = 1.5
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_upper_prob: float = 0.7
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    rotation: float = 80.0
    rotation_prob: float = 0.6
    photometric: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "task.augmentation") -> AugConfig:
        """Build from a run config's block (``where`` names it in errors): every setting must be there, since the
        YAML is the only source of their values (conf/task/topdown.yaml states them all; the field defaults
        above, the same values, serve direct library use). A missing or unknown key raises naming it."""
        for field in dataclasses.fields(cls):
            require(cfg, field.name, where)
        return cls.from_mapping(cfg)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> AugConfig:
        """Build from a mapping (missing keys keep the field defaults, for direct use; a run config's block goes
        through :meth:`from_config`); unknown keys raise."""
        if cfg is None:
            return cls()
        if isinstance(cfg, AugConfig):
            return cfg
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown augmentation keys {unknown}; valid keys: {sorted(names)}")
        values = {k: (tuple(float(x) for x in v) if k == "scale_range" else v) for k, v in cfg.items()}
        if "scale_range" in values and len(values["scale_range"]) != 2:
            raise ValueError(f"scale_range must be (low, high), got {values['scale_range']}")
        return cls(**values)

    def min_kpts_for(self, num_keypoints: int) -> int:
        if self.half_body_min_kpts is not None:
            return int(self.half_body_min_kpts)
        return max(3, round(9 * num_keypoints / 17))


_THREADS_SET_FOR_PID: int | None = None


def _limit_worker_threads() -> None:
    """Inside a DataLoader worker, run OpenCV sequentially (the workers already run in parallel).

    ``cv2.setNumThreads(0)`` (no thread pool), not ``1``: after a fork from a parent whose pool is
    running, resizing the pool to one thread deadlocks in OpenCV's pthreads backend.
    """
    global _THREADS_SET_FOR_PID
    pid = os.getpid()
    if _THREADS_SET_FOR_PID != pid:
        _THREADS_SET_FOR_PID = pid
        if get_worker_info() is not None:
            cv2.setNumThreads(0)


class SeededDataset(Dataset):
    """A dataset read as ``dataset[index]`` or ``dataset[(index, epoch)]`` (what the training sampler yields):
    :meth:`get_sample` draws a training sample's augmentation from ``np.random.default_rng([seed, epoch, index])``,
    so a sample depends on (seed, epoch, index) only (resumable, worker-independent). Subclasses set ``seed`` and
    ``train`` and implement ``get_sample(index, rng)``."""

    seed: int
    train: bool

    def get_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        _limit_worker_threads()
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        return self.get_sample(index, rng)


class TopDownDataset(SeededDataset):
    """Top-down pose samples from instance records (see ``docs/contracts.md``).

    Args:
        records: instance dicts with ``image_path, image_id, ann_id, bbox (xywh), bbox_score, area,
            keypoints (K, 2), visible (K,)``, as returned by the format readers.
        spec: the :class:`~sar.data.spec.KeypointSpec` (flip indices, upper/lower body ids).
        codec: the configured codec; ``codec.input_size`` is the crop ``(w, h)`` and
            ``codec.encode(keypoints, visible)`` builds the targets.
        train: augment (flip, half-body, shift/scale/rotation, optional photometric) when true.
        aug: augmentation settings, see :class:`AugConfig`.
        padding: box padding factor (1.25).
        seed: an extra seed mixed into every per-sample generator.
        max_decode_reduction: the largest libjpeg DCT reduction (1, 2, 4, 8) a crop may decode its JPEG at
            (:mod:`sar.data.decode`: only where the crop maps at least that many image pixels onto one crop
            pixel); 1 decodes every image at full size.
        decode_rows_only: decode a JPEG only down to the last row the crop reads (:mod:`sar.data.decode`,
            rows-only decoding; the crop is the same to the bit, so this is no config key); False decodes every
            row (the `peer` benchmark's comparison).
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        spec: Any,
        codec: Any,
        train: bool,
        aug: Mapping[str, Any] | AugConfig | None = None,
        padding: float = 1.25,
        seed: int | None = None,
        max_decode_reduction: int = 8,
        decode_rows_only: bool = True,
    ) -> None:
        self.spec = spec
        self.codec = codec
        self.train = bool(train)
        self.aug = AugConfig.from_mapping(aug)
        self.padding = float(padding)
        self.max_decode_reduction = int(max_decode_reduction)
        self.decode_rows_only = bool(decode_rows_only)
        self.seed = 0 if seed is None else int(seed)
        self.input_size = (int(codec.input_size[0]), int(codec.input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.num_keypoints = len(spec.flip_indices)
        self.flip_indices = np.asarray(spec.flip_indices, dtype=np.int64)
        self.upper_ids = tuple(int(i) for i in getattr(spec, "upper_body_ids", ()))
        self.lower_ids = tuple(int(i) for i in getattr(spec, "lower_body_ids", ()))
        self.half_body_min_kpts = self.aug.min_kpts_for(self.num_keypoints)
        self.photometric = T.Photometric() if (self.train and self.aug.photometric) else None
        self._store(records)

    # -- records, stored column-wise (compact, and no per-record refcount churn in workers) -------------
    def _store(self, records: Sequence[Mapping[str, Any]]) -> None:
        n, k = len(records), self.num_keypoints
        self.image_paths = np.array([str(r["image_path"]) for r in records], dtype=np.str_)
        self.image_ids = np.zeros(n, dtype=np.int64)
        self.ann_ids = np.zeros(n, dtype=np.int64)
        self.bboxes = np.zeros((n, 4), dtype=np.float32)
        self.bbox_scores = np.zeros(n, dtype=np.float64)
        self.areas = np.zeros(n, dtype=np.float64)
        self.keypoints = np.zeros((n, k, 2), dtype=np.float32)
        self.visible = np.zeros((n, k), dtype=np.float32)
        for i, r in enumerate(records):
            missing = [key for key in _REQUIRED_KEYS if key not in r]
            if missing:
                raise ValueError(f"record {i} (image {r.get('image_path')!r}) lacks keys {missing}")
            kps = np.asarray(r["keypoints"], dtype=np.float32)
            vis = np.asarray(r["visible"], dtype=np.float32)
            if kps.shape != (k, 2) or vis.shape != (k,):
                raise ValueError(
                    f"record {i} (ann_id={r['ann_id']}): keypoints {kps.shape} / visible {vis.shape} do not "
                    f"match the spec's {k} keypoints"
                )
            self.image_ids[i] = int(r["image_id"])
            self.ann_ids[i] = int(r["ann_id"])
            self.bboxes[i] = np.asarray(r["bbox"], dtype=np.float32).reshape(4)
            self.bbox_scores[i] = float(r["bbox_score"])
            self.areas[i] = float(r["area"])
            self.keypoints[i] = kps
            self.visible[i] = vis

    def __len__(self) -> int:
        return len(self.image_ids)

    # -- sampling (SeededDataset.__getitem__) ---------------------------------------------------------
    def get_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The sample at ``index``; training augmentation draws from ``rng`` (required when training)."""
        if self.train and rng is None:
            raise ValueError("a training sample needs a random generator")
        index = int(index)
        image_id = int(self.image_ids[index])
        encoded = EncodedImage(str(self.image_paths[index]), image_id)
        keypoints = self.keypoints[index]
        visible = self.visible[index]
        center, scale = T.bbox_to_center_scale(self.bboxes[index], self.aspect_ratio, self.padding)
        rotation = 0.0
        pre = None  # an image-space transform applied before the crop affine (the flip)

        if self.train:
            a = self.aug
            if rng.random() < a.flip_prob:
                width = encoded.size[0]
                keypoints, visible, center = T.flip_instance(
                    width, keypoints, visible, center, self.flip_indices
                )
                pre = T.flip_matrix(width)
            if self.upper_ids and self.lower_ids and rng.random() < a.half_body_prob:
                box = T.half_body(
                    keypoints, visible, self.upper_ids, self.lower_ids, rng,
                    min_kpts=self.half_body_min_kpts, padding=a.half_body_padding,
                    aspect_ratio=self.aspect_ratio, min_upper=a.half_body_min_upper,
                    min_lower=a.half_body_min_lower, upper_prob=a.half_body_upper_prob,
                )
                if box is not None:
                    center, scale = box
            center, scale, rotation = T.random_bbox_transform(
                center, scale, rng, shift_factor=a.shift_factor, shift_prob=a.shift_prob,
                scale_range=a.scale_range, scale_prob=a.scale_prob, rotation=a.rotation,
                rotation_prob=a.rotation_prob,
            )

        crop_affine = T.get_affine(center, scale, rotation, self.input_size)
        matrix = crop_affine if pre is None else T.compose_affine(crop_affine, pre)
        # scale[0] image pixels span the crop's width: decode at 1/r of the size when r <= that ratio (module
        # sar.data.decode); the warp then starts from the reduced pixels' full-size coordinates
        # and only the top rows the warp reads (rows-only decoding: the same crop to the bit)
        inverse = T.invert_affine(matrix)
        image, r = encoded.decode_for_warp(inverse, self.input_size, float(scale[0]) / self.input_size[0],
                                           self.max_decode_reduction, rows_only=self.decode_rows_only)
        crop = T.warp(image, matrix if r == 1 else T.compose_affine(matrix, reduction_matrix(r)), self.input_size)
        # `keypoints` are already flipped (and index-swapped) when `pre` is set, so only the crop affine.
        crop_keypoints = T.transform_points(keypoints, crop_affine).astype(np.float32)

        if self.photometric is not None:
            crop = self.photometric(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), int(rng.integers(2**31)))
            tensor = T.image_to_tensor(crop)
        else:
            tensor = T.image_to_tensor(crop, bgr=True)

        targets = self.codec.encode(crop_keypoints, np.asarray(visible, dtype=np.float32))
        meta = {
            "index": index,  # position in this dataset: the id that drops DDP padding repeats
            "image_id": image_id,
            "ann_id": int(self.ann_ids[index]),
            "bbox_score": float(self.bbox_scores[index]),
            "area": float(self.areas[index]),
            "bbox": torch.from_numpy(self.bboxes[index].copy()),
            "inv_warp": torch.from_numpy(inverse.astype(np.float32)),
        }
        return {"image": tensor, "targets": {k: _to_tensor(v) for k, v in targets.items()}, "meta": meta}


def _to_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.ascontiguousarray(value))
