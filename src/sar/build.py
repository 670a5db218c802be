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

from sar.utils.instantiate import call_target

__all__ = ["build_datamodule", "build_system", "build_task", "upgrade_config"]

#: What a config stored by a checkpoint written before the task seam lacked (they were all top-down runs).
LEGACY_TASK = {
    "system": {"_target_": "sar.systems.topdown.TopDownSystem"},
    "datamodule": {"_target_": "sar.data.datamodule.TopDownDataModule.from_run_config"},
}


def upgrade_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run config as this version builds it. Configs stored by checkpoints written before the ``_target_``
    composition (no ``task.system``) are translated: they are top-down runs, their head modules, codecs and
    losses are mapped from their names (``sar.models.pose_model.LEGACY_HEADS``, ``sar.codecs.LEGACY_TYPES``,
    ``sar.models.losses.LEGACY_TYPES``) with the values code filled in then. Current configs pass unchanged."""
    config = dict(config)
    task = dict(config.get("task") or {})
    if "system" not in task:
        if task.get("name") not in (None, "topdown", "wholebody"):
            raise ValueError(f"config of task {task.get('name')!r} names no task.system (_target_ of its "
                             "LightningModule); only top-down configs from before the task seam are translated")
        task = {**LEGACY_TASK, **task}
        config.setdefault("family", {"name": "topdown"})
    config["task"] = task
    optim = dict(config.get("optim") or {})
    if optim and "optimizer" not in optim:  # before optim.optimizer / optim.lr_scheduler were _target_ configs
        names = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}
        if optim.get("name") not in names:
            raise ValueError(f"config with optimiser {optim.get('name')!r} names no optim.optimizer")
        default_wd = 0.0 if optim["name"] == "adam" else 0.01  # what code used when the file had no weight_decay
        optim["optimizer"] = {"_target_": names[optim["name"]], "weight_decay": optim.get("weight_decay", default_wd)}
        optim["lr_scheduler"] = {
            "_target_": "sar.systems.optim.warmup_schedule", "warmup_iters": optim.get("warmup_iters", 0),
            "warmup_ratio": optim.get("warmup_ratio", 0.001), "decay": optim.get("scheduler", "none"),
            "milestones": list(optim.get("milestones", [])), "gamma": optim.get("gamma", 0.1),
        }
        config["optim"] = optim
    return config


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
