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

Checks (``setup``, before any step; errors name the file, docs/datasets.md "Validation rules: images, splits and
inputs"): every image of the train set and of every val set exists, has a readable header and is not truncated
(:mod:`sar.data.image_check`); the train set is not empty and holds at least one batch; every val loader is
non-empty (detector boxes, GT persons). :meth:`TopDownDataModule.check_trainable` refuses a monitored metric
with a results-only val set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from sar.data.formats import read_json
from sar.data.formats.coco import load_coco_dict, load_coco_instances
from sar.data.formats.mpii import load_mpii_instances
from sar.data.image_check import check_record_images
from sar.data.sampler import EpochSampler, ResumableLoader
from sar.data.spec import KeypointSpec
from sar.data.topdown import AugConfig, TopDownDataset
from sar.utils.config_keys import require

log = logging.getLogger(__name__)


def synthetic_config(dataset_cfg: Mapping[str, Any]):
    """The :class:`SyntheticConfig` a dataset config asks for (lists become tuples)."""
    from sar.data.synthetic import SyntheticConfig

    items = {k: v for k, v in dict(dataset_cfg["synthetic"]).items() if k != "format"}.items()
    return SyntheticConfig(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in items})


def resolve_dataset_root(dataset_cfg: Mapping[str, Any]) -> Path:
    """The directory holding the dataset: ``dataset.root`` when set, else the synthetic version (written in the
    format ``dataset.synthetic.format``, see :mod:`sar.data.synthetic.formats`), generated once into
    ``dataset.cache_dir`` when missing."""
    name = require(dataset_cfg, "name", "dataset")
    if require(dataset_cfg, "root", "dataset"):
        root = Path(str(dataset_cfg["root"])).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"dataset.root {root} does not exist (dataset={name})")
        return root
    synthetic = require(dataset_cfg, "synthetic", "dataset")
    if synthetic is None:
        raise ValueError(f"dataset {name}: set dataset.root to the benchmark directory")
    from sar.data.synthetic import ensure_synthetic

    cache_dir = require(dataset_cfg, "cache_dir", "dataset")
    if cache_dir in (None, ""):
        raise ValueError(f"dataset {name}: dataset.cache_dir is null; set it to the folder the synthetic data is "
                         "generated in (dataset.root is null)")
    # Absent from the synthetic block of conf/dataset/synthetic.yaml (the plain COCO layout): coco.
    fmt = str(dict(synthetic).get("format") or "coco")
    return ensure_synthetic(synthetic_config(dataset_cfg), Path(str(cache_dir)).expanduser(), fmt=fmt)


def pin_memory(dm: pl.LightningDataModule) -> bool:
    """Pinned host memory for the loaders of a DataModule whose trainer runs on a CUDA device (faster, asynchronous
    host-to-device copies); unpinned otherwise (no trainer yet, CPU training)."""
    trainer = getattr(dm, "trainer", None)
    return bool(trainer is not None and trainer.strategy.root_device.type == "cuda")


def resumable_train_loader(dm: pl.LightningDataModule, dataset: Any, collate_fn: Any = None) -> ResumableLoader:
    """The training loader of a DataModule with ``cfg`` (``batch_size``, ``num_workers``) and ``seed``: shuffled by
    (seed, epoch), drop_last, and resumable mid-epoch from the attached trainer's (epoch, batches processed), which
    every checkpoint saves (sar.data.sampler)."""

    def progress() -> tuple[int, int]:
        trainer = dm.trainer
        if trainer is None:
            return 0, 0
        return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    workers = int(dm.cfg["num_workers"])
    kwargs = {} if collate_fn is None else {"collate_fn": collate_fn}
    return ResumableLoader(dataset, batch_size=int(dm.cfg["batch_size"]), sampler=EpochSampler(len(dataset), dm.seed),
                           num_workers=workers, drop_last=True, persistent_workers=workers > 0, progress=progress,
                           pin_memory=pin_memory(dm), **kwargs)


class TopDownDataModule(pl.LightningDataModule):
    """``dataset_cfg`` must hold every key of :data:`CONFIG_KEYS` (checked here: a missing one raises naming it,
    ``dataset.<key>``); ``headbox_file`` too with ``format: mpii``, and ``synthetic`` and ``cache_dir`` when
    ``root`` is null (checked where they are read)."""

    #: The ``dataset`` keys every top-down dataset config states (conf/dataset/*.yaml).
    CONFIG_KEYS: tuple[str, ...] = (
        "name", "root", "format", "train_ann", "train_images", "val_ann", "val_images", "val_bbox_file",
        "det_score_thr", "min_keypoints", "batch_size", "val_batch_size", "num_workers",
    )

    def __init__(
        self,
        dataset_cfg: Mapping[str, Any],
        spec: KeypointSpec,
        codec: Any,
        augmentation: Mapping[str, Any],
        padding: float = 1.25,
        seed: int = 0,
        max_decode_reduction: int = 8,
    ) -> None:
        super().__init__()
        self.cfg = dict(dataset_cfg)
        for key in self.CONFIG_KEYS:
            require(self.cfg, key, "dataset")
        self.spec = spec
        self.codec = codec
        self.augmentation = dict(augmentation)
        self.padding = padding
        self.seed = seed
        self.max_decode_reduction = int(max_decode_reduction)
        self.root: Path | None = None
        self.train_set: TopDownDataset | None = None
        self.val_sets: list[TopDownDataset] = []
        self._val_annotations: dict[str, Any] | None = None

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any], system: Any) -> TopDownDataModule:
        """The DataModule of a run config (``task.datamodule`` of conf/task/topdown.yaml): the dataset config,
        the task's augmentation with the dataset's own block over it, the box padding and the seed; the keypoint
        spec and the codec are the system's (one codec object for targets and decoding)."""
        task, dataset = require(config, "task"), require(config, "dataset")
        # dataset.augmentation is an optional block of overrides (only some dataset configs have one)
        augmentation = {**require(task, "augmentation", "task"), **(dataset.get("augmentation") or {})}
        AugConfig.from_config(augmentation, "task.augmentation")  # every setting present (and known)
        return cls(dataset, system.spec, system.codec, augmentation, padding=float(require(task, "padding", "task")),
                   seed=int(require(config, "seed")),
                   max_decode_reduction=int(require(task, "max_decode_reduction", "task")))

    # -- files -------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        resolve_dataset_root(self.cfg)

    def _path(self, key: str) -> Path | None:
        value = require(self.cfg, key, "dataset")
        if value in (None, ""):
            return None
        p = Path(str(value))
        return p if p.is_absolute() else self.root / p

    def train_ann_file(self) -> Path:
        """``dataset.train_ann``; a dataset without a training split (null) is refused, naming it."""
        train_ann = self._path("train_ann")
        if train_ann is None:
            raise ValueError(f"dataset {self.cfg['name']} has no training split (train_ann is null): train on "
                             "another dataset and evaluate here with `python -m sar.evaluate`")
        return train_ann

    @property
    def val_ann_file(self) -> Path:
        return self._path("val_ann")

    @property
    def uses_detector_boxes(self) -> bool:
        return self._path("val_bbox_file") is not None

    @property
    def format(self) -> str:
        return str(self.cfg["format"])

    @property
    def results_only(self) -> bool:
        """``dataset.results_only``, or (null) whether the COCO-format val file lacks annotations."""
        # Optional: only conf/dataset/coco.yaml states it (null, as when absent: automatic).
        value = self.cfg.get("results_only")
        if value is not None:
            return bool(value)
        if self.format != "coco":
            return False
        data = self.val_annotations
        return bool(data.get("images")) and not data.get("annotations")

    @property
    def val_annotations(self) -> dict[str, Any]:
        """The COCO-format val annotation file, read once (records, results-only check, keypoint error); treat it
        as read-only. (The evaluator reads its own validated copy: it is also a standalone tool.)"""
        if self._val_annotations is None:
            self._val_annotations = load_coco_dict(self.val_ann_file)
        return self._val_annotations

    @property
    def evaluator_options(self) -> dict[str, Any]:
        """Dataset-specific keyword arguments of the evaluator (``build_evaluator``)."""
        if self.format == "mpii":
            return {"headbox_file": self._path("headbox_file")}
        return {"results_only": True} if self.results_only else {}

    # -- checks ------------------------------------------------------------------------------------
    def check_trainable(self, monitor: str | None) -> None:
        """Refuse, before training, a run whose monitored metric can never be logged: a results-only val set
        (a val file without annotations, scored with detector boxes, or ``dataset.results_only=true``) writes a
        results json but no metrics. ``monitor`` is the task's monitored metric (``task.monitor``); None or ""
        (nothing monitored) always passes."""
        if monitor in (None, "", "null", "None"):
            return
        if self.root is None:
            self.root = resolve_dataset_root(self.cfg)
        if self.results_only:
            raise ValueError(
                f"val file {self.val_ann_file} has no annotations (results-only): nothing to monitor; train with a "
                f"val set that has annotations, or set task.monitor=null (it is {monitor})"
            )

    def _check_train_size(self, records: list, ann_file: Path) -> None:
        """A train set must give at least one full batch per device (the train loader drops the last partial
        batch): an empty one, or a batch larger than it, would end the run with no step and no checkpoint."""
        if not records:
            raise ValueError(f"train set {ann_file}: 0 instances (no usable person annotation: check the file, "
                             f"dataset.train_images and dataset.min_keypoints={self.cfg['min_keypoints']})")
        batch_size = int(self.cfg["batch_size"])
        trainer = self.trainer  # attached by Lightning before setup; None otherwise (tests, sar.evaluate)
        world = max(int(getattr(trainer, "world_size", 1) or 1), 1) if trainer is not None else 1
        per_device = math.ceil(len(records) / world)
        if batch_size > per_device:
            over = f" over {world} devices = {per_device} per device" if world > 1 else ""
            raise ValueError(f"batch_size {batch_size} is larger than the train set ({len(records)} instances in "
                             f"{ann_file}{over}): every batch would be dropped; lower dataset.batch_size")

    def _detection_skips(self, bbox_file: Path) -> str:
        """How the detections of ``bbox_file`` divide into kept and skipped (the reader's rules, for errors)."""
        thr = float(self.cfg["det_score_thr"])
        try:
            detections = read_json(bbox_file)
            counts = {"non-person": 0, "below": 0, "empty": 0}
            for det in detections:
                box = det.get("bbox") or [0, 0, 0, 0]
                if int(det.get("category_id", 1)) != 1:
                    counts["non-person"] += 1
                elif float(det["score"]) < thr:
                    counts["below"] += 1
                elif float(box[2]) <= 0 or float(box[3]) <= 0:
                    counts["empty"] += 1
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
            return "its detections could not be counted"
        return (f"the file has {len(detections)} detections: skipped {counts['non-person']} non-person, "
                f"{counts['below']} with score < {thr:g} (dataset.det_score_thr), {counts['empty']} empty boxes")

    def _gt_skips(self, ann_file: Path) -> str:
        """How the annotations of ``ann_file`` divide into crowd and the rest (for errors)."""
        try:
            data = load_coco_dict(ann_file) if self.format == "coco" else read_json(ann_file)
            annotations = data.get("annotations") if isinstance(data, Mapping) else data
            annotations = annotations if isinstance(annotations, list) else []
            crowd = sum(1 for a in annotations if isinstance(a, Mapping) and a.get("iscrowd", 0))
        except (OSError, ValueError, TypeError):
            return "its annotations could not be counted"
        min_kpts = self.cfg["min_keypoints"]
        return (f"the file has {len(annotations)} annotations: {crowd} crowd, {len(annotations) - crowd} with fewer "
                f"than dataset.min_keypoints={min_kpts} labelled keypoints or an empty box")

    def _require_gt(self, records: list, ann_file: Path) -> None:
        if not records:
            raise ValueError(f"val set {ann_file}: 0 usable GT persons ({self._gt_skips(ann_file)}): nothing to "
                             "score; use a val file with person annotations")

    # -- records -----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read the splits and check them before any step: a train set with at least one full batch, val loaders
        that are not empty, and every image of every split present, readable and complete
        (:mod:`sar.data.image_check`). Errors name the file."""
        self.root = resolve_dataset_root(self.cfg)
        min_kpts = int(self.cfg["min_keypoints"])
        train_records = None
        checks: list[tuple[str, list]] = []
        if stage in (None, "fit") and self.train_set is None:
            train_ann = self.train_ann_file()
            if self.format == "mpii":
                train_records = load_mpii_instances(train_ann, self._path("train_images"), self.spec)
            else:
                train_records = load_coco_instances(
                    train_ann, self._path("train_images"), self.spec, min_keypoints=min_kpts
                )
            self._check_train_size(train_records, train_ann)
            checks.append((f"train set {train_ann}", train_records))
            log.info("train: %d instances from %s", len(train_records), train_ann)
        val_records = self._val_records(min_kpts) if not self.val_sets else []
        for source, records in val_records:
            checks.append((source, records))
        if checks:
            start = time.perf_counter()
            count = check_record_images(checks)
            log.info("checked %d images (present, readable, complete) in %.1f s", count, time.perf_counter() - start)
        if train_records is not None:
            self.train_set = self._dataset(train_records, train=True)
        if val_records:
            self.val_sets = [self._dataset(records, train=False) for _, records in val_records]

    def _val_records(self, min_kpts: int) -> list[tuple[str, list]]:
        """``(source, records)`` per validation loader (see the module docstring), each checked non-empty."""
        images = self._path("val_images")
        ann = self.val_ann_file
        if self.format == "mpii":  # GT boxes only (the MPII protocol)
            gt = load_mpii_instances(ann, images, self.spec)
            self._require_gt(gt, ann)
            log.info("val: %d GT instances from %s", len(gt), ann)
            return [(f"val set {ann}", gt)]
        if self.results_only and not self.uses_detector_boxes:
            raise ValueError(f"{ann} has no annotations (results-only mode): set "
                             "dataset.val_bbox_file to the person detections of its images")
        sets = []
        if self.uses_detector_boxes:
            bbox_file = self._path("val_bbox_file")
            det = load_coco_instances(
                ann, images, self.spec, bbox_file=bbox_file, det_score_thr=float(self.cfg["det_score_thr"]),
                data=self.val_annotations,
            )
            if not det:
                raise ValueError(f"val detections {bbox_file}: 0 person boxes for the images of {ann} "
                                 f"({self._detection_skips(bbox_file)}); validation would have nothing to score")
            sets.append((f"val detections {bbox_file} (images of {ann})", det))
            log.info("val: %d detector boxes from %s", len(det), bbox_file)
        if self.results_only:
            log.info("val: %s has no annotations: results-only mode (results json, no metrics)", ann)
            return sets
        gt = load_coco_instances(ann, images, self.spec, min_keypoints=min_kpts, data=self.val_annotations)
        self._require_gt(gt, ann)
        sets.append((f"val set {ann}", gt))
        log.info("val: %d GT instances from %s", len(gt), ann)
        return sets

    def _dataset(self, records: list[dict], train: bool) -> TopDownDataset:
        return TopDownDataset(records, self.spec, self.codec, train=train, aug=self.augmentation,
                              padding=self.padding, seed=self.seed, max_decode_reduction=self.max_decode_reduction)

    # -- loaders -----------------------------------------------------------------------------------
    def _loader(self, dataset: TopDownDataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = int(self.cfg["num_workers"])
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=shuffle,
            persistent_workers=workers > 0, pin_memory=pin_memory(self),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch) and resumable mid-epoch (sar.data.sampler)."""
        return resumable_train_loader(self, self.train_set)

    def val_dataloader(self) -> list[DataLoader]:
        bs = int(self.cfg["val_batch_size"])
        return [self._loader(ds, bs, shuffle=False) for ds in self.val_sets]
