"""``key=value`` command lines of the tools that are not Hydra apps (``sar.predict``, ``sar.export``).

Same style as the Hydra entry points (``key=value``, no dashes); an unknown or misspelt key is one line naming it,
the closest accepted key and all accepted ones, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

__all__ = ["parse_key_values"]


def parse_key_values(argv: Sequence[str], defaults: Mapping[str, Any], prog: str) -> Any:
    """``argv`` (``key=value`` items) merged onto ``defaults``; SystemExit with one clear line on a bad item."""
    accepted = list(defaults)
    items = []
    for arg in argv:
        if arg in ("-h", "--help", "help"):
            raise SystemExit(f"usage: python -m {prog} " + " ".join(f"{k}=<{v}>" for k, v in defaults.items()))
        key, sep, _ = arg.partition("=")
        key = key.lstrip("+")
        if not sep or not key:
            raise SystemExit(f"{prog}: arguments are key=value, got {arg!r} (accepted keys: {', '.join(accepted)})")
        if key not in defaults:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SystemExit(f"{prog}: unknown key {key!r}{hint}; accepted keys: {', '.join(accepted)}")
        items.append(arg.lstrip("+"))
    try:
        cfg = OmegaConf.merge(OmegaConf.create(dict(defaults)), OmegaConf.from_dotlist(items))
    except Exception as err:
        raise SystemExit(f"{prog}: {err}".splitlines()[0]) from err
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SystemExit(f"{prog}: missing required argument(s): {', '.join(f'{k}=...' for k in missing)}")
    return cfg


def check_overrides(argv: Sequence[str], config_name: str, prog: str) -> None:
    """Before a Hydra entry point runs: every ``key=value`` override of ``argv`` must name an existing key of the
    config it composes (its group choices applied), else SystemExit with one line naming the key, the closest key
    and the keys accepted at that level. ``+key=`` (append), ``~key`` (delete), ``hydra.*`` keys, Hydra's flags,
    sweeps (``-m``) and runs with their own ``hydra.searchpath`` are left to Hydra, as is a group option that does
    not exist (Hydra names it and the options)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import DictConfig

    if any(a.startswith(("-", "hydra.searchpath")) for a in argv):
        return
    items = [a for a in argv if "=" in a and not a.startswith(("+", "~", "hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="sar.conf", version_base="1.3"):
            groups = _group_names(GlobalHydra.instance().config_loader())
            choices = [a for a in items if a.split("=", 1)[0].split("@")[0] in groups]
            try:
                cfg = compose(config_name=config_name, overrides=choices)
            except HydraException:
                return  # Hydra reports a bad group choice itself, with the options
    finally:
        GlobalHydra.instance().clear()
    for item in items:
        if item in choices:
            continue
        key = item.split("=", 1)[0]
        node: Any = cfg
        parts = key.split(".")
        if parts[0] in groups and parts[0] not in cfg:
            continue  # a group left null by the entry point (sar.evaluate's dataset: the checkpoint's own)
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig) or part not in node.keys():  # noqa: SIM118 - keys(): ??? counts
                parent = ".".join(parts[:depth]) or "the top level"
                accepted = [str(k) for k in node] if isinstance(node, DictConfig) else []
                close = difflib.get_close_matches(part, accepted, n=1)
                hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])!r}?)" if close else ""
                listed = ", ".join(accepted) if accepted else "none (it is a value, not a group of keys)"
                raise SystemExit(f"{prog}: unknown key {key!r}{hint}; accepted under {parent}: {listed}; add a new "
                                 f"key with +{key}=...")
            if depth + 1 < len(parts):
                node = node[part]


def _group_names(loader: Any, prefix: str = "") -> set[str]:
    """The config groups under ``prefix`` (``task``, ``head``, ``hydra/launcher``, ...), recursively."""
    names: set[str] = set()
    for sub in loader.list_groups(prefix):
        full = f"{prefix}/{sub}" if prefix else sub
        names.add(full)
        names |= _group_names(loader, full)
    return names
