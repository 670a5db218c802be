"""Lightning callbacks every task's training uses: the non-finite guard and the one ``last.ckpt`` writer."""

from sar.callbacks.finite import FiniteGuard, NonFiniteError
from sar.callbacks.last_checkpoint import LastCheckpoint

__all__ = ["FiniteGuard", "LastCheckpoint", "NonFiniteError"]
