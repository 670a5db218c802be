"""Top-down DataModule: one class for every COCO-format benchmark, parametrised by the `dataset` config.

Data flow: ``prepare_data`` makes sure the files exist (generating the synthetic default when asked),
``setup`` reads records through the format reader, and the dataloaders wrap :class:`TopDownDataset`
around the one codec object that the LightningModule also uses for decoding.

Validation uses up to two dataloaders:

* ``0``: the boxes the benchmark scores AP on (the detector results file, or GT boxes when none);
* ``1``: GT boxes, for the keypoint error in pixels (only when loader 0 uses detector boxes).

Formats (``dataset.format``): ``coco`` (COCO, COCO-WholeBody, CrowdPose, OCHuman: the COCO reader) and ``mpii``
(the HRNet / MMPose MPII json, :func:`sar.data.formats.mpii.load_mpii_instances`; GT boxes only).

Results-only mode (``dataset.results_only``; ``null`` = automatic): a COCO-format val file with images but no
annotations (an image-info json such as ``image_info_test-dev2017.json``) has nothing to score, so validation
uses the detector boxes only and the evaluator writes the results json without metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from sar.data.formats.coco import load_coco_instances
from sar.data.formats.mpii import load_mpii_instances
from sar.data.sampler import EpochSampler, ResumableLoader
from sar.data.spec import KeypointSpec
from sar.data.topdown import TopDownDataset
from sar.evaluation.keypoint_error import load_coco_dict

log = logging.getLogger(__name__)


def synthetic_config(dataset_cfg: Mapping[str, Any]):
    """The :class:`SyntheticConfig` a dataset config asks for (lists become tuples)."""
    from sar.data.synthetic import SyntheticConfig

    items = {k: v for k, v in dict(dataset_cfg["synthetic"]).items() if k != "format"}.items()
    return SyntheticConfig(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in items})


def resolve_dataset_root(dataset_cfg: Mapping[str, Any]) -> Path:
    """The directory holding the dataset: ``dataset.root`` when set, else the synthetic version (written in the
    format ``dataset.synthetic.format``, default ``coco``, see :mod:`sar.data.synthetic_formats`), generated once
    into ``dataset.cache_dir`` when missing."""
    if dataset_cfg.get("root"):
        root = Path(str(dataset_cfg["root"])).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset.root {root} does not exist (dataset={dataset_cfg.get('name')})")
        return root
    if dataset_cfg.get("synthetic") is None:
        raise ValueError(f"dataset {dataset_cfg.get('name')}: set dataset.root to the benchmark directory")
    from sar.data.synthetic import ensure_synthetic

    cache_dir = Path(str(dataset_cfg.get("cache_dir") or "data")).expanduser()
    fmt = str(dict(dataset_cfg["synthetic"]).get("format") or "coco")
    return ensure_synthetic(synthetic_config(dataset_cfg), cache_dir, fmt=fmt)


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
        self._results_only: bool | None = None

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

    @property
    def format(self) -> str:
        return str(self.cfg.get("format") or "coco")

    @property
    def results_only(self) -> bool:
        """``dataset.results_only``, or (null) whether the COCO-format val file lacks annotations."""
        value = self.cfg.get("results_only")
        if value is not None:
            return bool(value)
        if self.format != "coco":
            return False
        if self._results_only is None:
            data = load_coco_dict(self.val_ann_file)
            self._results_only = bool(data.get("images")) and not data.get("annotations")
        return self._results_only

    @property
    def evaluator_options(self) -> dict[str, Any]:
        """Dataset-specific keyword arguments of the evaluator (``build_evaluator``)."""
        if self.format == "mpii":
            return {"headbox_file": self._path("headbox_file")}
        return {"results_only": True} if self.results_only else {}

    # -- records -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.root = resolve_dataset_root(self.cfg)
        min_kpts = int(self.cfg.get("min_keypoints", 1))
        if stage in (None, "fit") and self.train_set is None:
            if self._path("train_ann") is None:
                raise ValueError(f"dataset {self.cfg.get('name')} has no training split (train_ann is null): train on "
                                 "another dataset and evaluate here with `python -m sar.evaluate`")
            if self.format == "mpii":
                records = load_mpii_instances(self._path("train_ann"), self._path("train_images"), self.spec)
            else:
                records = load_coco_instances(
                    self._path("train_ann"), self._path("train_images"), self.spec, min_keypoints=min_kpts
                )
            self.train_set = self._dataset(records, train=True)
            log.info("train: %d instances from %s", len(records), self._path("train_ann"))
        if not self.val_sets:
            images = self._path("val_images")
            sets = []
            if self.format == "mpii":  # GT boxes only (the MPII protocol)
                gt = load_mpii_instances(self.val_ann_file, images, self.spec)
                self.val_sets = [self._dataset(gt, train=False)]
                log.info("val: %d GT instances from %s", len(gt), self.val_ann_file)
                return
            if self.results_only and not self.uses_detector_boxes:
                raise ValueError(f"{self.val_ann_file} has no annotations (results-only mode): set "
                                 "dataset.val_bbox_file to the person detections of its images")
            if self.uses_detector_boxes:
                det = load_coco_instances(
                    self.val_ann_file, images, self.spec, bbox_file=self._path("val_bbox_file"),
                    det_score_thr=float(self.cfg.get("det_score_thr", 0.0)),
                )
                sets.append(self._dataset(det, train=False))
                log.info("val: %d detector boxes from %s", len(det), self._path("val_bbox_file"))
            if self.results_only:
                log.info("val: %s has no annotations: results-only mode (results json, no metrics)",
                         self.val_ann_file)
                self.val_sets = sets
                return
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
        """Shuffled by (seed, epoch) and resumable mid-epoch (sar.data.sampler)."""
        workers = int(self.cfg.get("num_workers", 0))
        return ResumableLoader(
            self.train_set, batch_size=int(self.cfg["batch_size"]), sampler=EpochSampler(len(self.train_set), self.seed),
            num_workers=workers, drop_last=True, persistent_workers=workers > 0, progress=self._train_progress,
        )

    def _train_progress(self) -> tuple[int, int]:
        """(epoch, batches processed in it) of the attached trainer, saved with every checkpoint."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> list[DataLoader]:
        bs = int(self.cfg.get("val_batch_size", self.cfg["batch_size"]))
        return [self._loader(ds, bs, shuffle=False) for ds in self.val_sets]
