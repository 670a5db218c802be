"""Helpers of the predict / export tests: small checkpoints written without training."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sar.systems.topdown import TopDownSystem

#: A small network: ResNet-18, 64x96 crops, 16-channel deconvolutions (map 16x24).
TINY = ("backbone=resnet18", "input_size=[64,96]", "head.deconv.channels=16")


def compose_run_config(*overrides: str) -> dict:
    """The resolved `python -m sar.train` config for ``overrides`` (what a checkpoint carries)."""
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def save_checkpoint(system: TopDownSystem, path: Path) -> Path:
    """The two entries of a Lightning checkpoint that predict / export read: weights and the run config."""
    torch.save({"state_dict": system.state_dict(), "hyper_parameters": {"cfg": system.cfg}}, path)
    return path
