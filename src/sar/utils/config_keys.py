"""Reading the keys of a run config: the YAML under ``conf/`` is the only source of their values.

Code reads a key it needs with ``cfg[key]`` or :func:`require`, never with a fallback value of its own: a key missing
from the config raises :class:`MissingConfigKey`, whose message names the full dotted key
(``dataset.num_workers is missing from the config``). Every composed config has every key read that way
(``tests/test_config_defaults.py`` composes and builds every option of every group).

The one exception: a config stored by an older checkpoint may lack keys added to ``conf/`` since; it is translated
where stored configs are read (:func:`sar.stored_config.upgrade_config`). A composed config never needs that (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sar.utils.errors import UserFacingError

__all__ = ["MissingConfigKey", "require"]


class MissingConfigKey(UserFacingError, KeyError):
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
