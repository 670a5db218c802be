"""Top-down DataModule: one class for every COCO-format benchmark, parametrised by the `dataset` config.

Data flow: ``prepare_data`` makes sure the files exist (generating the synthetic default when asked),
``setup`` reads records through the format reader, and the dataloaders wrap :class:`TopDownDataset`
around the one codec object that the LightningModule also uses for decoding.

Validation uses up to two dataloaders:

* ``0``: the boxes the benchmark scores AP on (the detector results file, or GT boxes when none);
* ``1``: GT boxes, for the keypoint error in pixels (only when loader 0 uses detector boxes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from sar.data.formats.coco import load_coco_instances
from sar.data.spec import KeypointSpec
from sar.data.topdown import TopDownDataset

log = logging.getLogger(__name__)


def synthetic_config(dataset_cfg: Mapping[str, Any]):
    """The :class:`SyntheticConfig` a dataset config asks for (lists become tuples)."""
    from sar.data.synthetic import SyntheticConfig

    items = dict(dataset_cfg["synthetic"]).items()
    return SyntheticConfig(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in items})


def resolve_dataset_root(dataset_cfg: Mapping[str, Any]) -> Path:
    """The directory holding the dataset; the synthetic default is generated once when missing."""
    if dataset_cfg.get("root"):
        root = Path(str(dataset_cfg["root"])).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset.root {root} does not exist (dataset={dataset_cfg.get('name')})")
        return root
    if dataset_cfg.get("synthetic") is None:
        raise ValueError(f"dataset {dataset_cfg.get('name')}: set dataset.root to the benchmark directory")
    from sar.data.synthetic import ensure_synthetic

    cache_dir = Path(str(dataset_cfg.get("cache_dir") or "data")).expanduser()
    return ensure_synthetic(synthetic_config(dataset_cfg), cache_dir)


class TopDownDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset_cfg: Mapping[str, Any],
        spec: KeypointSpec,
        codec: Any,
        augmentation: Mapping[str, Any],
        padding: float = 1.25,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = dict(dataset_cfg)
        self.spec = spec
        self.codec = codec
        self.augmentation = dict(augmentation)
        self.padding = padding
        self.seed = seed
        self.root: Path | None = None
        self.train_set: TopDownDataset | None = None
        self.val_sets: list[TopDownDataset] = []

    # -- files -------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        resolve_dataset_root(self.cfg)

    def _path(self, key: str) -> Path | None:
        value = self.cfg.get(key)
        if value in (None, ""):
            return None
        p = Path(str(value))
        return p if p.is_absolute() else self.root / p

    @property
    def val_ann_file(self) -> Path:
        return self._path("val_ann")

    @property
    def uses_detector_boxes(self) -> bool:
        return self._path("val_bbox_file") is not None

    # -- records -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.root = resolve_dataset_root(self.cfg)
        min_kpts = int(self.cfg.get("min_keypoints", 1))
        if stage in (None, "fit") and self.train_set is None:
            records = load_coco_instances(
                self._path("train_ann"), self._path("train_images"), self.spec, min_keypoints=min_kpts
            )
            self.train_set = self._dataset(records, train=True)
            log.info("train: %d instances from %s", len(records), self._path("train_ann"))
        if not self.val_sets:
            images = self._path("val_images")
            sets = []
            if self.uses_detector_boxes:
                det = load_coco_instances(
                    self.val_ann_file, images, self.spec, bbox_file=self._path("val_bbox_file"),
                    det_score_thr=float(self.cfg.get("det_score_thr", 0.0)),
                )
                sets.append(self._dataset(det, train=False))
                log.info("val: %d detector boxes from %s", len(det), self._path("val_bbox_file"))
            gt = load_coco_instances(self.val_ann_file, images, self.spec, min_keypoints=min_kpts)
            sets.append(self._dataset(gt, train=False))
            log.info("val: %d GT instances from %s", len(gt), self.val_ann_file)
            self.val_sets = sets

    def _dataset(self, records: list[dict], train: bool) -> TopDownDataset:
        return TopDownDataset(records, self.spec, self.codec, train=train, aug=self.augmentation,
                              padding=self.padding, seed=self.seed)

    # -- loaders -----------------------------------------------------------------------------------
    def _loader(self, dataset: TopDownDataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = int(self.cfg.get("num_workers", 0))
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=shuffle,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, int(self.cfg["batch_size"]), shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        bs = int(self.cfg.get("val_batch_size", self.cfg["batch_size"]))
        return [self._loader(ds, bs, shuffle=False) for ds in self.val_sets]
