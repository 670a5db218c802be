"""sar: Spatial-Aware Regression (SAR) and baselines for keypoint localization (Lightning + Hydra)."""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf


def unique_suffix() -> str:
    """8 random hex characters (os.urandom, untouched by seeding): run and sweep directories of jobs
    started in the same second (or microsecond, on different hosts) never collide."""
    return secrets.token_hex(4)


# `${sar.uid:}` in conf/train.yaml (hydra.run.dir, hydra.sweep.dir). Cached per config, like Hydra's `now`:
# every read of one config gives the same value, and Hydra copies the cache into each job of a sweep (also
# into submitit jobs), so all ranks and jobs of one launch agree on the directory.
OmegaConf.register_new_resolver("sar.uid", unique_suffix, use_cache=True, replace=True)
