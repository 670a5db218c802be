"""Monocular 3D samples (task=pose3d; docs/pose3d.md): one crop per Human3.6M frame, optionally mixed with 2D
auxiliary people (MPII / COCO joints mapped onto the Human3.6M joints as RLE's ``s_mpii_2_hm36_jt`` /
``s_coco_2_hm36_jt``), which supervise u, v only.

Crop: the frame's box (square of side ``200 * scale`` around ``center``, times ``task.padding``) warped to the
input. Training augmentation (``task.augmentation``, RLE's ``simple_transform_3d`` [C supplementary: scale +-30 %,
rotation +-30 deg, colour +-20 %, flip]): a flip (joints swapped by the spec's flip pairs, depths with them),
a scale ``clip(N(1, scale_factor), 1 - sf, 1 + sf)``, a rotation ``clip(N(0, rotation), +-2 rotation)`` with
probability ``rotation_prob``, and a per-channel colour gain in ``[1 - color_factor, 1 + color_factor]``. Depth
targets are not changed by the 2D augmentation (as RLE).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sar.data import transforms as T
from sar.data.datamodule import pin_memory, resumable_train_loader
from sar.data.decode import EncodedImage
from sar.data.formats.h36m import H36MProtocol, load_h36m
from sar.data.image_check import check_record_images
from sar.data.topdown import SeededDataset, _to_tensor
from sar.utils.config_keys import require

log = logging.getLogger(__name__)

__all__ = ["AUX_TO_H36M", "MixedDataset", "Pose3DAug", "Pose3DDataModule", "Pose3DDataset", "map_aux_joints"]

#: For each Human3.6M joint (``h36m`` spec order), the joint of the 2D dataset it is read from (-1: none).
#: RLE's ``s_mpii_2_hm36_jt`` / ``s_coco_2_hm36_jt`` without their 18th (thorax, training-only) entry.
AUX_TO_H36M: dict[str, tuple[int, ...]] = {
    "mpii": (6, 2, 1, 0, 3, 4, 5, -1, 8, -1, 9, 13, 14, 15, 12, 11, 10),
    "coco": (-1, 12, 14, 16, 11, 13, 15, -1, -1, 0, -1, 5, 7, 9, 6, 8, 10),
}


def map_aux_joints(keypoints: np.ndarray, visible: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """2D-dataset joints (J, 2) / (J,) as Human3.6M joints (17, 2) / (17,) (unmapped joints unlabelled)."""
    table = AUX_TO_H36M[fmt]
    kp = np.zeros((len(table), 2), dtype=np.float64)
    vis = np.zeros(len(table), dtype=np.float32)
    for j, src in enumerate(table):
        if src >= 0:
            kp[j], vis[j] = keypoints[src], visible[src]
    return kp, vis


@dataclass(frozen=True)
class Pose3DAug:
    """``task.augmentation`` of conf/task/pose3d.yaml (module docstring)."""

    flip_prob: float = 0.5
    scale_factor: float = 0.3
    rotation: float = 30.0
    rotation_prob: float = 0.6
    color_factor: float = 0.2

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> Pose3DAug:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"task.augmentation: unknown keys {unknown} (known: {[f.name for f in fields(cls)]})")
        return cls(**{k: float(v) for k, v in cfg.items()})


class Pose3DDataset(SeededDataset):
    """Crops of records from :func:`sar.data.formats.h36m.load_h36m` (3D) or 2D auxiliary records (no
    ``joints_cam``). ``codec``: a :mod:`sar.codecs.pose3d` codec; ``spec``: the ``h36m`` spec (flip pairs)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], spec: Any, codec: Any, train: bool,
                 aug: Pose3DAug | Mapping[str, Any] | None = None, padding: float = 1.0, seed: int = 0,
                 root_joint: int = 0, decode_rows_only: bool = True) -> None:
        self.records = list(records)
        self.spec, self.codec, self.train = spec, codec, bool(train)
        self.decode_rows_only = bool(decode_rows_only)  # JPEG rows below the crop skipped (sar.data.decode): exact
        self.aug = aug if isinstance(aug, Pose3DAug) else Pose3DAug.from_mapping(aug)
        self.padding, self.seed, self.root = float(padding), int(seed), int(root_joint)
        self.input_size = tuple(int(v) for v in codec.input_size)
        self.flip_indices = np.asarray(spec.flip_indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def get_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        r = self.records[int(index)]
        encoded = EncodedImage(str(r["image_path"]), int(r.get("index", index)))
        keypoints = np.asarray(r["keypoints"], dtype=np.float64).copy()
        visible = np.asarray(r["visible"], dtype=np.float32).copy()
        joints = None if r.get("joints_cam") is None else np.asarray(r["joints_cam"], dtype=np.float64).copy()
        aspect = self.input_size[0] / self.input_size[1]
        center, scale = T.bbox_to_center_scale(r["bbox"], aspect, self.padding)
        rotation, pre = 0.0, None
        if rng is not None:
            a = self.aug
            if rng.random() < a.flip_prob:
                width = encoded.size[0]
                keypoints, visible, center = T.flip_instance(width, keypoints, visible, center, self.flip_indices)
                joints = None if joints is None else joints[self.flip_indices]
                pre = T.flip_matrix(width)
            sf = a.scale_factor
            scale = scale * float(np.clip(rng.normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
            if rng.random() < a.rotation_prob:
                rotation = float(np.clip(rng.normal() * a.rotation, -2 * a.rotation, 2 * a.rotation))
        crop_affine = T.get_affine(center, scale, rotation, self.input_size)
        matrix = crop_affine if pre is None else T.compose_affine(crop_affine, pre)
        inverse = T.invert_affine(matrix)
        image, _ = encoded.decode_for_warp(inverse, self.input_size, max_factor=1, rows_only=self.decode_rows_only)
        crop = T.warp(image, matrix, self.input_size)
        if rng is not None and self.aug.color_factor > 0:
            c = self.aug.color_factor
            gains = rng.uniform(1.0 - c, 1.0 + c, 3).astype(np.float32)
            crop = np.clip(crop.astype(np.float32) * gains, 0, 255).astype(np.uint8)
        points = T.transform_points(keypoints, crop_affine)
        depth = None if joints is None else joints[:, 2] - joints[self.root, 2]
        targets = self.codec.encode(points, visible, depth)
        meta: dict[str, Any] = {"index": int(index), "inv_warp": torch.from_numpy(inverse.astype(
            np.float32)), "is_3d": joints is not None}
        if joints is not None and rng is None:  # evaluation: what back-projection and the metrics need
            meta.update({"joints_cam": torch.from_numpy(joints.astype(np.float64)),
                         "f": torch.as_tensor(np.asarray(r["f"], dtype=np.float64)),
                         "c": torch.as_tensor(np.asarray(r["c"], dtype=np.float64)),
                         "action": str(r.get("action", "")), "imgname": str(r.get("imgname", ""))})
        return {"image": T.image_to_tensor(crop, bgr=True), "targets": {k: _to_tensor(v) for k, v in targets.items()},
                "meta": meta}


class MixedDataset(Dataset):
    """Human3.6M samples plus 2D auxiliary samples at ``aux_ratio`` of the whole: an epoch is every 3D sample
    and ``round(n3d * aux_ratio / (1 - aux_ratio))`` auxiliary ones (a different slice of the auxiliary set each
    epoch). Keys are ``(index, epoch)`` (:class:`sar.data.sampler.EpochSampler`)."""

    def __init__(self, main: Pose3DDataset, aux: Pose3DDataset, aux_ratio: float) -> None:
        if not 0 <= aux_ratio < 1:
            raise ValueError(f"dataset.aux_ratio must be in [0, 1), got {aux_ratio}")
        self.main, self.aux = main, aux
        self.num_aux = round(len(main) * aux_ratio / (1.0 - aux_ratio)) if len(aux) else 0

    def __len__(self) -> int:
        return len(self.main) + self.num_aux

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        if index < len(self.main):
            return self.main[(index, epoch)]
        j = (index - len(self.main) + epoch * self.num_aux) % len(self.aux)
        return self.aux[(j, epoch)]


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collation, except the evaluation meta keys that only 3D samples carry."""
    from torch.utils.data import default_collate

    keys = set.intersection(*(set(b["meta"]) for b in batch))
    return {"image": default_collate([b["image"] for b in batch]),
            "targets": default_collate([b["targets"] for b in batch]),
            "meta": default_collate([{k: b["meta"][k] for k in keys} for b in batch])}


class Pose3DDataModule(pl.LightningDataModule):
    """The DataModule of task=pose3d: Human3.6M-format train / test files (``dataset.*``, the synthetic default
    generated when ``dataset.root`` is null) under the protocol ``dataset.protocol``, plus the optional 2D
    auxiliary set ``dataset.aux`` mixed in at ``dataset.aux_ratio``."""

    CONFIG_KEYS = ("name", "format", "root", "train_ann", "val_ann", "images", "cameras", "protocol", "aux", "aux_ratio",
                   "batch_size", "val_batch_size", "num_workers")

    def __init__(self, dataset_cfg: Mapping[str, Any], spec: Any, codec: Any, augmentation: Mapping[str, Any],
                 padding: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.cfg = dict(dataset_cfg)
        for key in self.CONFIG_KEYS:
            require(self.cfg, key, "dataset")
        if self.cfg["format"] != "h36m":
            raise ValueError(f"task=pose3d reads the Human3.6M format (dataset.format: h36m); dataset "
                             f"{self.cfg['name']} has format {self.cfg['format']!r}")
        self.spec, self.codec, self.padding, self.seed = spec, codec, float(padding), int(seed)
        self.augmentation = Pose3DAug.from_mapping(augmentation)
        self.root: Path | None = None
        self.train_set: Dataset | None = None
        self.val_sets: list[Pose3DDataset] = []
        self.val_ann_file = None  # no COCO-style evaluator file: the system scores MPJPE itself

    @property
    def format(self) -> str:
        return str(self.cfg["format"])

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any], system: Any) -> Pose3DDataModule:
        task = require(config, "task")
        return cls(require(config, "dataset"), system.spec, system.codec, require(task, "augmentation", "task"),
                   padding=float(require(task, "padding", "task")), seed=int(require(config, "seed")))

    def resolve_root(self) -> Path:
        if self.cfg["root"]:
            root = Path(str(self.cfg["root"])).expanduser()
            if not root.exists():
                raise FileNotFoundError(f"dataset.root {root} does not exist (dataset={self.cfg['name']})")
            return root
        if self.cfg.get("synthetic") is None:
            raise ValueError(f"dataset {self.cfg['name']}: set dataset.root to the Human3.6M folder (docs/datasets.md)")
        from sar.data.synthetic.body3d import ensure_synthetic_h36m

        return ensure_synthetic_h36m(dict(self.cfg["synthetic"]), Path(str(self.cfg["cache_dir"])).expanduser())

    def prepare_data(self) -> None:
        self.resolve_root()

    def _file(self, key: str) -> Path:
        p = Path(str(self.cfg[key]))
        return p if p.is_absolute() else self.root / p

    def records(self, split: str) -> list[dict[str, Any]]:
        """The protocol's records of ``train`` or ``test`` (the val set)."""
        if self.root is None:
            self.root = self.resolve_root()
        ann = self._file("train_ann" if split == "train" else "val_ann")
        protocol = H36MProtocol.from_mapping(self.cfg["protocol"], split)
        records = load_h36m(ann, self._file("images"), self._file("cameras"), protocol)
        if not records:
            raise ValueError(f"{ann}: no frame of subjects {list(protocol.subjects)} every {protocol.frame_step}th "
                             f"frame (dataset.protocol)")
        return records

    def aux_records(self) -> list[dict[str, Any]]:
        """The 2D auxiliary people (``dataset.aux``: ``format`` mpii | coco, ``root`` or a synthetic block,
        ``ann``, ``images``) with their joints mapped onto the Human3.6M joints."""
        aux = dict(self.cfg["aux"])
        fmt = str(require(aux, "format", "dataset.aux"))
        if fmt not in AUX_TO_H36M:
            raise ValueError(f"dataset.aux.format must be one of {sorted(AUX_TO_H36M)}, got {fmt!r}")
        from sar.data.datamodule import resolve_dataset_root
        from sar.data.spec import load_spec

        root = resolve_dataset_root(aux)
        ann, images = root / str(aux["ann"]), root / str(aux["images"])
        if fmt == "mpii":
            from sar.data.formats.mpii import load_mpii_instances

            people = load_mpii_instances(ann, images, load_spec("mpii"))
        else:
            from sar.data.formats.coco import load_coco_instances

            people = load_coco_instances(ann, images, load_spec("coco"), min_keypoints=1)
        out = []
        for p in people:
            kp, vis = map_aux_joints(np.asarray(p["keypoints"]), np.asarray(p["visible"]), fmt)
            if vis.sum() == 0:
                continue
            out.append({"image_path": p["image_path"], "index": int(p["image_id"]), "bbox": np.asarray(p["bbox"]),
                        "keypoints": kp, "visible": vis, "joints_cam": None})
        return out

    def setup(self, stage: str | None = None) -> None:
        checks: list[tuple[str, list]] = []
        if stage in (None, "fit") and self.train_set is None:
            records = self.records("train")
            checks.append((f"train set {self._file('train_ann')}", records))
            main = self._dataset(records, train=True)
            self.train_set = main
            if self.cfg["aux"]:
                aux = self.aux_records()
                checks.append(("dataset.aux", aux))
                self.train_set = MixedDataset(main, self._dataset(aux, train=True), float(self.cfg["aux_ratio"]))
            if len(self.train_set) < int(self.cfg["batch_size"]):
                raise ValueError(f"batch_size {self.cfg['batch_size']} is larger than the train set "
                                 f"({len(self.train_set)} samples): lower dataset.batch_size")
        if not self.val_sets:
            records = self.records("test")
            checks.append((f"val set {self._file('val_ann')}", records))
            self.val_sets = [self._dataset(records, train=False)]
        if checks:
            check_record_images(checks)

    def _dataset(self, records: list[dict], train: bool) -> Pose3DDataset:
        return Pose3DDataset(records, self.spec, self.codec, train=train, aug=self.augmentation,
                             padding=self.padding, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return resumable_train_loader(self, self.train_set, collate_fn=_collate)

    def val_dataloader(self) -> list[DataLoader]:
        workers = int(self.cfg["num_workers"])
        return [DataLoader(ds, batch_size=int(self.cfg["val_batch_size"]), shuffle=False, num_workers=workers,
                           persistent_workers=workers > 0, pin_memory=pin_memory(self), collate_fn=_collate)
                for ds in self.val_sets]

    def mean_pose_baseline(self) -> float:
        """MPJPE (mm) of predicting the mean root-relative training pose for every test frame (the baseline of
        docs/pose3d.md; same split as validation)."""
        from sar.evaluation.mpjpe import mpjpe

        train = np.stack([r["joints_cam"] - r["joints_cam"][:1] for r in self.records("train")])
        test = np.stack([r["joints_cam"] - r["joints_cam"][:1] for r in self.records("test")])
        mean = train.mean(0)
        return mpjpe(np.broadcast_to(mean, test.shape), test)


