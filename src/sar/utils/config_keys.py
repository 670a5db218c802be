"""Reading the keys of a run config: the YAML under ``conf/`` is the only source of their values.

Code reads a key it needs with ``cfg[key]`` or :func:`require`, never with a fallback value of its own: a key missing
from the config raises :class:`MissingConfigKey`, whose message names the full dotted key
(``dataset.num_workers is missing from the config``). Every composed config has every key read that way
(``tests/test_config_defaults.py`` composes and builds every option of every group).

The one exception is :data:`STORED_CONFIG_DEFAULTS`: keys that were added to ``conf/`` after checkpoints had been
written (until then code filled them in). A config stored by such a checkpoint lacks them; it gets the value the code
used then (:func:`with_stored_defaults`, applied where stored configs are read: building the network and the
DataModule, comparing a resumed run's config). A composed config never needs them (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["STORED_CONFIG_DEFAULTS", "MissingConfigKey", "require", "with_stored_defaults"]


class MissingConfigKey(KeyError):
    """A config key the code needs is not in the config; the message names the full dotted key."""

    def __init__(self, key: str, hint: str = "") -> None:
        super().__init__(f"{key} is missing from the config{hint}")
        self.key = key

    def __str__(self) -> str:  # KeyError would print the repr of the message (quoted)
        return str(self.args[0])


def require(cfg: Mapping[str, Any], key: str, where: str = "") -> Any:
    """``cfg[key]``; :class:`MissingConfigKey` naming ``<where>.<key>`` (``where``: the dotted path of ``cfg`` in
    the run config, e.g. ``"dataset"``) when the key is absent. A key whose value is null is present."""
    dotted = f"{where}.{key}" if where else key
    if not isinstance(cfg, Mapping) and not hasattr(cfg, "keys"):
        raise MissingConfigKey(dotted, f" ({where or 'the config'} is {type(cfg).__name__}, not a mapping)")
    if key not in cfg:
        raise MissingConfigKey(dotted)
    return cfg[key]


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
    "backbone.neck": "deconv",          # the FPN neck came later, for mobilenetv3 only
    "backbone.fpn_out_conv": "full",
    "backbone.channels_last": False,
    # training augmentation settings that only sar.data.topdown.AugConfig stated until issue 10
    "task.augmentation.half_body_min_kpts": None,
    "task.augmentation.half_body_min_upper": 2,
    "task.augmentation.half_body_min_lower": 3,
    "task.augmentation.half_body_upper_prob": 0.7,
    "task.augmentation.scale_prob": 1.0,
}


def with_stored_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with every key of :data:`STORED_CONFIG_DEFAULTS` it lacks filled in; a key is added
    only where its parent mapping exists (a partial config stays partial). ``config`` itself is not modified."""
    out = dict(config)
    copied: set[str] = set()
    for dotted, value in STORED_CONFIG_DEFAULTS.items():
        *parents, key = dotted.split(".")
        node: Any = out
        path = ""
        for name in parents:
            child = node.get(name) if isinstance(node, dict) else None
            if not isinstance(child, Mapping):
                node = None
                break
            path = f"{path}.{name}" if path else name
            if path not in copied:  # copy each parent once, on the way down (the caller's dicts stay untouched)
                child = dict(child)
                node[name] = child
                copied.add(path)
            node = child
        if node is not None and key not in node:
            node[key] = copy.deepcopy(value)
    return out
