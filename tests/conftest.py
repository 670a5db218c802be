"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# `make test` runs the suite on every core with pytest-xdist (`-n auto`). Each worker, and every training
# subprocess it starts (they inherit the environment), gets an equal share of the cores for its intra-op threads:
# two workers with two threads each on a 2-core machine would make every OpenMP region wait for a thread the
# other worker has preempted. Set before any test module imports torch; an OMP_NUM_THREADS of the user's wins.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _XDIST_WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS))

# Process-wide state a Trainer leaves behind: Lightning's SLURM/torchelastic environments write MASTER_ADDR /
# MASTER_PORT (and the launcher the rank variables) into os.environ, and every Trainer sets the global
# rank_zero_only.rank. A test that builds a Trainer as rank 5 of a fake SLURM job would otherwise make every
# later in-process run skip its rank-zero writes (no CSV log) and send every later DDP child to "node01".
_DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real annotation samples in ``../shared/data`` (next to the repository); skip when absent."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"shared test data not found at {root} (expected a sibling 'shared/data' folder)")
    return root


@pytest.fixture(scope="session")
def coco_file(shared_data: Path) -> Path:
    """The real COCO keypoint sample ``shared/data/coco/test_coco.json`` (4 images, 14 persons, 12 with
    keypoints); skip when absent."""
    path = shared_data / "coco" / "test_coco.json"
    if not path.is_file():
        pytest.skip(f"shared COCO sample not found at {path}")
    return path


@pytest.fixture()
def coco_gt(coco_file: Path) -> dict[str, Any]:
    """A fresh copy of the COCO sample's content (a test may change it)."""
    return json.loads(coco_file.read_text())


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """Every test starts at the process's thread count: an in-process run compared bit for bit with a training
    subprocess (tests/test_reliability.py, test_resume.py) must use the subprocess's threads."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolate_distributed_state() -> Iterator[None]:
    from lightning_fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero
    from pytorch_lightning.utilities.rank_zero import rank_zero_only as pl_rank_zero

    from sar.utils.hydra_ddp import restore_env

    env = {key: os.environ.get(key) for key in _DIST_ENV}
    ranks = [(fn, getattr(fn, "rank", None)) for fn in {fabric_rank_zero, pl_rank_zero}]
    yield
    restore_env(env)
    for fn, rank in ranks:
        if rank is not None:
            fn.rank = rank


def local_ddp_env() -> dict[str, str]:
    """The environment for a DDP subprocess on this machine: rendezvous on loopback at a free port, with no
    cluster variables inherited. Two DDP jobs on one machine (e.g. two test runs) must not share Lightning's
    default port, and a SLURM_* variable would make Lightning wait for ranks that srun never starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in _DIST_ENV}
    return {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"}
