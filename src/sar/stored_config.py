"""Configs stored by older checkpoints, translated to the config this version builds: one function,
:func:`upgrade_config`, applied wherever a stored config is read (building a system or DataModule, loading a
checkpoint, comparing a resumed run's config). A config composed from ``conf/`` passes through unchanged (tested).

What it translates (README, "Checkpoints from earlier versions"):

* keys added to ``conf/`` after checkpoints had been written, which code filled in until then: they get the value
  code used (:data:`STORED_CONFIG_DEFAULTS`; a key is added only where its parent mapping exists);
* configs written before the task seam (no ``task.system``): top-down runs, given the top-down system and
  DataModule (:data:`LEGACY_TASK`); head modules, codecs and losses named by ``type`` are mapped where they are
  built (``sar.models.pose_model.LEGACY_HEADS``, ``sar.codecs.LEGACY_TYPES``, ``sar.models.losses.LEGACY_TYPES``);
* optimiser settings from before ``optim.optimizer`` / ``optim.lr_scheduler`` were ``_target_`` configs;
* backbones from before the backbone and neck were ``_target_`` configs (``backbone.neck: deconv|fpn``,
  ``backbone.deconv_channels``, ``backbone.fpn_out_conv``): the ``neck`` config that builds the same network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["LEGACY_TASK", "STORED_CONFIG_DEFAULTS", "upgrade_config"]

#: What a config stored by a checkpoint written before the task seam lacked (they were all top-down runs).
LEGACY_TASK = {
    "system": {"_target_": "sar.systems.topdown.TopDownSystem"},
    "datamodule": {"_target_": "sar.data.datamodule.TopDownDataModule.from_run_config"},
}

#: Keys that configs stored by older checkpoints may lack, with the value code used for them then (when the key
#: was not in ``conf/`` yet, or not in every option of its group). Every option in ``conf/`` now states them.
STORED_CONFIG_DEFAULTS: dict[str, Any] = {
    # backbone keys documented since issue 3 (the first backbone files had name / timm_name / pretrained only)
    "backbone.out_indices": None,       # the last level
    "backbone.timm_kwargs": {},         # no extra timm.create_model arguments
    "backbone.set_img_size": False,
    "backbone.feature_norm": False,
    "backbone.input_multiple": None,    # no input size rule beyond the stride
    "backbone.channels": None,          # nothing documented: nothing checked
    "backbone.stride": None,
    "backbone.channels_last": False,
    # training augmentation settings that only sar.data.topdown.AugConfig stated until issue 10
    "task.augmentation.half_body_min_kpts": None,
    "task.augmentation.half_body_min_upper": 2,
    "task.augmentation.half_body_min_lower": 3,
    "task.augmentation.half_body_upper_prob": 0.7,
    "task.augmentation.scale_prob": 1.0,
    # reduced JPEG decoding for large crops (issue 14): runs before it decoded every image at full size
    "task.max_decode_reduction": 1,
}

BACKBONE_TARGET = "sar.models.backbones.timm_backbone"
DECONV_NECK = "sar.models.necks.DeconvNeck.on_backbone"
FPN_NECK = "sar.models.necks.FPNNeck.on_backbone"


#: The tasks whose checkpoints predate keys (every other task was written with them all).
LEGACY_TASK_NAMES = (None, "topdown", "wholebody")


def _fill_stored_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every key of :data:`STORED_CONFIG_DEFAULTS` it lacks filled in, where the parent exists
    (a partial config stays partial); the mappings on the way are copied, the caller's stay untouched. The
    ``task.*`` keys are top-down settings: only configs of the tasks of :data:`LEGACY_TASK_NAMES` get them."""
    copied: set[str] = set()
    task = config.get("task")
    legacy_task = not isinstance(task, Mapping) or task.get("name") in LEGACY_TASK_NAMES
    for dotted, value in STORED_CONFIG_DEFAULTS.items():
        if dotted.startswith("task.") and not legacy_task:
            continue
        *parents, key = dotted.split(".")
        node: Any = config
        path = ""
        for name in parents:
            child = node.get(name) if isinstance(node, dict) else None
            if not isinstance(child, Mapping):
                node = None
                break
            path = f"{path}.{name}" if path else name
            if path not in copied:
                child = dict(child)
                node[name] = child
                copied.add(path)
            node = child
        if node is not None and key not in node:
            node[key] = copy.deepcopy(value)
    return config


def _legacy_task(config: dict[str, Any]) -> None:
    task = dict(config.get("task") or {})
    if "system" not in task:
        if task.get("name") not in LEGACY_TASK_NAMES:
            raise ValueError(f"config of task {task.get('name')!r} names no task.system (_target_ of its "
                             "LightningModule); only top-down configs from before the task seam are translated")
        task = {**LEGACY_TASK, **task}
        config.setdefault("family", {"name": "topdown"})
    config["task"] = task


def _legacy_optim(config: dict[str, Any]) -> None:
    optim = dict(config.get("optim") or {})
    if not optim or "optimizer" in optim:
        return
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


def _legacy_backbone(config: dict[str, Any]) -> None:
    """A backbone stored before backbone and neck were ``_target_`` configs, with the neck it meant then: the FPN
    (``backbone.neck: fpn``) for a head with a ``deconv`` block, otherwise the head's deconvolutions (none for a
    head with ``deconv: null``)."""
    backbone = config.get("backbone")
    if not isinstance(backbone, Mapping) or "_target_" in backbone:
        return
    backbone = dict(backbone)
    kind = backbone.pop("neck", "deconv")
    deconv_channels = backbone.pop("deconv_channels", None)
    out_conv = backbone.pop("fpn_out_conv", "full")
    backbone["_target_"] = BACKBONE_TARGET
    backbone.setdefault("name", backbone.get("timm_name"))
    config["backbone"] = backbone
    if "neck" in config:
        return
    deconv = (config.get("head") or {}).get("deconv")
    if kind == "fpn" and deconv:
        if deconv_channels is None:
            raise ValueError("stored config: backbone.neck=fpn without backbone.deconv_channels (the FPN width)")
        config["neck"] = {"_target_": FPN_NECK, "channels": int(deconv_channels), "out_conv": out_conv}
    elif kind in ("deconv", "fpn"):
        config["neck"] = {"_target_": DECONV_NECK, "num_layers": deconv.get("num_layers", "auto") if deconv else 0,
                          "channels": deconv.get("channels", 256) if deconv else 256}
    else:
        raise ValueError(f"stored config: backbone.neck must be 'deconv' or 'fpn', got {kind!r}")


def upgrade_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a run config, possibly stored by an older checkpoint) as this version builds it; see the module
    docstring. ``config`` itself is not modified; a current config comes back equal."""
    config = _fill_stored_defaults(dict(config))
    _legacy_task(config)
    _legacy_optim(config)
    _legacy_backbone(config)
    return config
