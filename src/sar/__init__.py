"""sar: Spatial-Aware Regression (SAR) and baselines for keypoint localization (Lightning + Hydra)."""

from __future__ import annotations

import hashlib
import re
import secrets

from omegaconf import OmegaConf


def unique_suffix() -> str:
    """8 random hex characters (os.urandom, untouched by seeding): run and sweep directories of jobs
    started in the same second (or microsecond, on different hosts) never collide."""
    return secrets.token_hex(4)


def safe_dirname(text: str, max_len: int = 120) -> str:
    """A sweep job's sub-directory name from its overrides: path separators and characters that are not
    safe in file names become "_", and a name over ``max_len`` characters is cut and ends with a hash of the
    full text (file systems refuse names over 255 bytes; the exact overrides stay in .hydra/overrides.yaml)."""
    text = str(text)
    name = re.sub(r"[^A-Za-z0-9=,.+\-_\[\]@]", "_", text)
    if len(name) > max_len:
        name = f"{name[: max_len - 9]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return name


# `${sar.uid:}` in conf/train.yaml (hydra.run.dir, hydra.sweep.dir). Cached per config, like Hydra's `now`:
# every read of one config gives the same value, and Hydra copies the cache into each job of a sweep (also
# into submitit jobs), so all ranks and jobs of one launch agree on the directory.
OmegaConf.register_new_resolver("sar.uid", unique_suffix, use_cache=True, replace=True)
OmegaConf.register_new_resolver("sar.safe_dirname", safe_dirname, replace=True)
