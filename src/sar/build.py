"""One builder for every entry point: a run config -> LightningModule + DataModule (+ Trainer parts).

``sar.train``, ``sar.evaluate``, ``sar.predict``, ``sar.export`` and checkpoint loading
(:func:`sar.utils.checkpoint.load_system`) all build through here, from a composed config or from the config a
checkpoint stores. Nothing in them names a task's classes: the task config does (``conf/task/<name>.yaml``)::

    system:      {_target_: <LightningModule class>}   # called with cfg=<the whole run config>
    datamodule:  {_target_: <DataModule factory>}      # called with config=<run config>, system=<that module>

so a new task is its modules plus its ``conf/task`` file (docs/extending.md). What the entry points then use of
a task is the interface of :class:`sar.systems.base.PoseSystem`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from sar.stored_config import upgrade_config
from sar.utils.instantiate import call_target

__all__ = ["build_datamodule", "build_system", "build_task", "upgrade_config"]

def build_system(config: Mapping[str, Any]) -> pl.LightningModule:
    """The task's LightningModule (``task.system``), built from the whole run config."""
    config = upgrade_config(config)
    return call_target(config["task"]["system"], "task.system", cfg=config)


def build_datamodule(config: Mapping[str, Any], system: pl.LightningModule) -> pl.LightningDataModule:
    """The task's DataModule (``task.datamodule``) for this run config, sharing ``system``'s codec and spec."""
    config = upgrade_config(config)
    return call_target(config["task"]["datamodule"], "task.datamodule", config=config, system=system)


def build_task(config: Mapping[str, Any]) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """System and DataModule of a run config (see the module docstring)."""
    system = build_system(config)
    return system, build_datamodule(system.cfg, system)
