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
