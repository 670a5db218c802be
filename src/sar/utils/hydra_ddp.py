"""DDP inside a local Hydra sweep (``python -m sar.train -m ... trainer=ddp``).

Lightning's DDP launcher starts the ranks > 0 by re-running the command line (``sys.argv``) with
``hydra.run.dir=<HydraConfig run.dir>`` appended. In a job of a sweep that command line is the whole sweep
(``-m`` and every swept value), and ``hydra.run.dir`` is not the job's directory: the extra ranks would re-run
the sweep elsewhere and never join (or join the wrong job). :func:`pin_ddp_children_to_sweep_job` rewrites
both, so that the extra ranks run exactly this job, as a single run, in this job's directory, and
:func:`sweep_job` (used by ``sar.train.main``) also closes the job's process group when the job ends, so that
the next job of the sweep starts its own ranks.

Under SLURM (``hydra/launcher=slurm``) every rank is a task started by srun and Lightning launches nothing, so
nothing is needed there; the rewrite is skipped when ``sar.train`` is not the ``__main__`` module (submitit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

__all__ = ["pin_ddp_children_to_sweep_job", "sweep_job"]

# Set by Lightning's DDP launcher in the launching process (restored after each sweep job).
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")

# Hydra's own command-line flags that take a value and must reach the children unchanged.
_VALUE_FLAGS = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir")


def _config_flags(argv: list[str]) -> list[str]:
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
            i += 1
        elif arg.split("=", 1)[0] in _VALUE_FLAGS and "=" in arg:
            kept.append(arg)
        i += 1
    return kept


def pin_ddp_children_to_sweep_job(module: str = "sar.train") -> bool:
    """In a sweep job run by the in-process (basic) launcher, make Lightning's DDP children re-run this job
    as a single run in its directory. Returns True when it rewrote the command line."""
    import __main__

    if not HydraConfig.initialized():
        return False
    hc = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    if hc.mode != RunMode.MULTIRUN or spec is None or spec.name != module:
        return False
    output_dir = str(hc.runtime.output_dir)
    sys.argv = [sys.argv[0], *_config_flags(sys.argv[1:]), *[str(o) for o in hc.overrides.task]]
    with read_write(hc.run):
        hc.run.dir = output_dir  # Lightning appends hydra.run.dir=<this> to the children's command
    return True


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back to ``saved`` (``None``: the variable was unset, so remove it)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def sweep_job(module: str = "sar.train") -> Iterator[None]:
    """Around one job: pin the DDP children to it (see above); in a sweep, destroy the job's process group
    and Lightning's DDP environment variables at the end (its ranks > 0 have exited), so that the next job's
    DDP starts afresh."""
    pinned = pin_ddp_children_to_sweep_job(module)
    saved = {key: os.environ.get(key) for key in _DDP_ENV}
    try:
        yield
    finally:
        if pinned:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            # Lightning's launcher exported these for the job's ranks; left set, the next job would believe
            # its processes were started externally (LOCAL_RANK) and wait for ranks that never come.
            restore_env(saved)
