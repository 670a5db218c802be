"""Build a configured part from its ``_target_`` config (``hydra.utils.instantiate``), with errors that name it.

Hydra's own error wraps the real one deep in its message; a config mistake (a misspelt key, a missing
``_target_``, a class that is not importable) should read as one line naming the part and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

__all__ = ["build", "call_target", "from_legacy_type"]


def build(cfg: Mapping[str, Any] | DictConfig, what: str, /, *args: Any, **kwargs: Any) -> Any:
    """``instantiate(cfg, **kwargs)`` (containers converted to plain Python); a ValueError naming ``what`` (e.g.
    ``"head.loss"``) when the config has no ``_target_`` or the target refuses its arguments."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        keys = sorted(cfg) if isinstance(cfg, Mapping) else type(cfg).__name__
        raise ValueError(f"{what}: the config needs a _target_ (the class or function to build), got {keys}")
    try:  # partial first: the run-time arguments (objects, whole configs) are passed as they are
        return instantiate(dict(cfg), _convert_="all", _partial_=True)(*args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ValueError(f"{what} ({cfg['_target_']}): {cause}") from err
    except TypeError as err:  # the target refused its keys (a misspelt or missing one)
        raise ValueError(f"{what} ({cfg['_target_']}): {err}") from err


def call_target(target_cfg: Mapping[str, Any], what: str, /, **kwargs: Any) -> Any:
    """Call ``cfg._target_`` with the config's other keys and ``kwargs``, without recursing into them (for
    parts that take whole configs as arguments, e.g. a LightningModule given the run config)."""
    from hydra.utils import get_object

    if not isinstance(target_cfg, Mapping) or "_target_" not in target_cfg:
        raise ValueError(f"{what}: the config needs a _target_ (the class or function to build)")
    try:
        target = get_object(str(target_cfg["_target_"]))
    except Exception as err:
        raise ValueError(f"{what}: cannot import _target_ {target_cfg['_target_']!r} ({err})") from err
    return target(**{k: v for k, v in target_cfg.items() if k != "_target_"}, **kwargs)


def from_legacy_type(cfg: Mapping[str, Any], types: Mapping[str, str], what: str,
                     defaults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A config of the old ``type: <name>`` form (configs stored by checkpoints written before ``_target_``
    composition) as a ``_target_`` config: ``types`` maps names to targets, ``defaults`` gives the values code
    filled in then. Configs with a ``_target_`` (or without a ``type``) are returned as they are."""
    cfg = dict(cfg)
    if "_target_" in cfg or "type" not in cfg:
        return cfg
    kind = cfg.pop("type")
    if kind not in types:
        raise ValueError(f"unknown {what} type {kind!r} (known: {', '.join(sorted(types))})")
    return {"_target_": types[kind], **dict((defaults or {}).get(kind, {})), **cfg}
