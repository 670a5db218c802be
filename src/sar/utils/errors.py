"""Errors the user fixes in the config or the environment (a missing weights file, a missing config key): the entry
points print their message as one line (``sar.train: error: ...``) and exit with status 1, without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["UserFacingError", "one_line_errors"]


class UserFacingError(Exception):
    """Base of errors whose message says everything the user needs (what is wrong, where, how to fix it)."""


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """Turn a :class:`UserFacingError` raised inside into ``<prog>: error: <message>`` on stderr and exit 1."""
    try:
        yield
    except UserFacingError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
