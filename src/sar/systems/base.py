"""What the entry points use of a task's LightningModule: the task-level interface.

``sar.build`` builds a task's system from ``task.system`` of the run config; ``sar.train``, ``sar.evaluate``,
``sar.predict``, ``sar.export``, ``sar.bench`` and ``sar.table`` then rely only on this interface, so a new task
is its own modules (a :class:`PoseSystem` subclass, a DataModule) plus its ``conf/task`` file (docs/extending.md).

Required of every task (training and evaluation):

* ``__init__(cfg)``: the whole resolved run config; stored as ``hyper_parameters["cfg"]`` so that a checkpoint
  rebuilds the system on its own (:func:`sar.utils.checkpoint.load_system`);
* ``last_metrics``: the metrics of the latest validation (written to ``metrics.json`` by the entry points);
  ``results_dir``: where a validation writes its results files (None: nowhere);
* validation logs ``val/<metric>`` for the task's monitored metric (``task.monitor``);
* ``training_step`` returns ``{"loss": ..., "outputs": <raw network outputs>}`` and ``validation_step`` its
  decoded predictions, which :class:`sar.callbacks.FiniteGuard` checks (one divergence rule for every task).

Optional, for the tools (a task without them gets a clear error from the tool, not a crash):

* :meth:`predict_images` (``sar.predict``: raw images, with or without person boxes);
* :meth:`export_network` / :meth:`export_example` / :meth:`export_metadata` (``sar.export``);
* :meth:`bench_sections` (``sar.bench``) and :meth:`table_layouts` (``sar.table``).

The DataModule of a task may implement ``check_trainable(monitor)`` (``sar.train`` calls it before fitting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

__all__ = ["PoseSystem", "TaskFeatureMissing"]


class TaskFeatureMissing(NotImplementedError):
    """The task does not provide what a tool asked of it (e.g. ``sar.export`` of a task without an export)."""


class PoseSystem(pl.LightningModule):
    """Base class of every task's LightningModule (module docstring)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": dict(cfg)})
        self.cfg: dict[str, Any] = dict(cfg)
        self.results_dir: Path | None = None
        self.last_metrics: dict[str, float] = {}

    @property
    def task_name(self) -> str:
        return str(self.cfg["task"]["name"])

    def _missing(self, feature: str, tool: str) -> TaskFeatureMissing:
        return TaskFeatureMissing(f"task {self.task_name!r} ({type(self).__name__}) does not provide {feature}, "
                                  f"which {tool} needs")

    # -- prediction on raw images --------------------------------------------------------------------------
    def predict_images(self, images: Sequence[Path], ids: Sequence[int | None], det: Mapping[int, list] | None,
                       skipped: dict[int, str], *, batch_size: int, num_workers: int, device: torch.device,
                       use_nms: bool) -> tuple[list[dict[str, Any]], int]:
        """Instances on raw images (``det``: person boxes ``(xywh, score)`` per image id, None: none given):
        ``image_id``, ``keypoints`` (K, 3: x, y in image pixels, score), ``bbox``, ``score``, ``position`` (index
        in ``images``); unreadable images are added to ``skipped``. Returns (instances, boxes predicted)."""
        raise self._missing("predict_images()", "sar.predict")

    # -- export ----------------------------------------------------------------------------------------
    def export_network(self) -> nn.Module:
        """The network to export: images in, a dict of raw output tensors out."""
        raise self._missing("export_network()", "sar.export")

    def export_example(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """A random input batch of the network's input shape."""
        raise self._missing("export_example()", "sar.export")

    def export_metadata(self, output_names: Sequence[str], output_shapes: Mapping[str, list]) -> dict[str, Any]:
        """What a consumer of the exported file needs to feed it and decode its outputs."""
        raise self._missing("export_metadata()", "sar.export")

    # -- bench / table ---------------------------------------------------------------------------------
    @classmethod
    def bench_sections(cls) -> dict[str, Any]:
        """``{section name: runner}`` of the task's own ``sar.bench`` sections (none by default): ``runner(args)``
        returns the section's result, or the entry is ``(runner, table)`` with ``table(result)`` its markdown."""
        return {}

    @classmethod
    def table_layouts(cls) -> dict[str, Any]:
        """The task's ``sar.table`` layouts (paper tables its runs belong to; none by default)."""
        return {}
