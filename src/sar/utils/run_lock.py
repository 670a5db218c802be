"""One run per directory: an exclusive lock on a run directory, held for the whole run.

Two runs started in the same ``hydra.run.dir`` (or a requeued job while the first still lives) would otherwise
mix checkpoints, ``metrics.json``, ``config.yaml`` and the CSV log. :class:`RunDirLock` creates
``<run_dir>/.run.lock`` exclusively (``O_CREAT | O_EXCL``) and writes its holder into it (host, pid, SLURM
job id and restart count, start time). It also holds an ``fcntl.flock`` on the file, which the kernel drops
when the process dies, however it dies.

A second run finding the lock:

* **same host**: the flock tells whether the holder lives. A live holder -> :class:`RunDirLocked` naming it;
  a dead one (kill -9, crash) -> the stale lock is reclaimed with a warning.
* **another host** (a shared filesystem): the flock is not reliable across hosts, so the lock is reclaimed
  only when it belongs to an earlier incarnation of this same SLURM job (same ``SLURM_JOB_ID``, a smaller
  ``SLURM_RESTART_COUNT``: SLURM ends a job before it requeues it); otherwise the run is refused, and the
  message says how to remove a lock known to be stale.

Under DDP / multi-node only global rank 0 takes the lock (:func:`env_global_rank`); the other ranks are
processes of the same run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "RunDirLock", "RunDirLocked", "env_global_rank"]

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class RunDirLocked(RuntimeError):
    """The run directory is held by another live run."""


def env_global_rank() -> int:
    """This process's global rank from the launcher's environment, before any Trainer exists.

    torchrun / Lightning multi-node set ``RANK``; SLURM sets ``SLURM_PROCID`` (one task per device); Lightning's
    local DDP launcher starts the extra ranks of a node with ``LOCAL_RANK`` (and ``NODE_RANK`` on other nodes).
    """
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").strip().isdigit():
            return int(os.environ[key])
    local = os.environ.get("LOCAL_RANK", "0").strip()
    node = os.environ.get("NODE_RANK", "0").strip()
    return int(local or 0) + int(node or 0)


def _holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['slurm_job_id']}" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('started')}"


class RunDirLock:
    """Exclusive lock on a run directory (module docstring). Use as a context manager or acquire/release."""

    def __init__(self, run_dir: str | os.PathLike[str], enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.enabled = enabled
        self._fd: int | None = None

    # -- holder ------------------------------------------------------------------------------------
    def read_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or garbage: treated as a holder we know nothing about

    def _holder_is_dead(self, holder: dict[str, Any]) -> bool:
        me = _holder()
        if holder.get("host") == me["host"]:
            if fcntl is None:
                return not pid_alive(int(holder.get("pid") or -1))
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False  # the holder still has it
                return not pid_alive(int(holder.get("pid") or -1))
            finally:
                os.close(fd)  # drops the probe's flock
            return True
        job = holder.get("slurm_job_id")
        return bool(job) and job == me["slurm_job_id"] and int(holder.get("slurm_restart_count") or 0) < int(
            me["slurm_restart_count"])

    # -- acquire / release -------------------------------------------------------------------------
    def acquire(self) -> RunDirLock:
        if not self.enabled or self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                holder = self.read_holder()
                if holder is None:
                    continue  # released in between: try again
                if not self._holder_is_dead(holder):
                    raise RunDirLocked(
                        f"run directory {self.run_dir} is in use by another run ({describe(holder)}). Start this run "
                        f"in another directory (hydra.run.dir=...); if that run is known to be dead, delete {self.path}"
                    ) from None
                log.warning("reclaiming the stale lock of %s (%s): that run is no longer alive", self.run_dir,
                            describe(holder))
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, json.dumps(_holder()).encode())
            os.fsync(fd)
            self._fd = fd
            return self
        raise RunDirLocked(f"could not lock {self.run_dir}: {self.path} keeps changing (another run starting?)")

    def release(self) -> None:
        if self._fd is None:
            return
        holder = self.read_holder() or {}
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self._fd)  # drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunDirLock:  # noqa: PYI034
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id lives on this host (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
