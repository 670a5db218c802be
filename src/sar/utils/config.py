"""Config helpers: print the resolved config as a Rich tree and save it next to the run's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich import print as rprint
from rich.syntax import Syntax
from rich.tree import Tree

from sar.conf import CONF_DIR  # the installed config tree (conf/ of the repository)

GROUP_ORDER = ("task", "dataset", "backbone", "neck", "head", "trainer", "logger", "optim", "callbacks")


def print_config(cfg: DictConfig) -> None:
    """Print the resolved config, one branch per config group (the rest under 'run')."""
    tree = Tree("[bold]config[/bold]")
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # parts may refer to each other
    rest = {k: v for k, v in cfg.items() if k not in GROUP_ORDER}
    for name in GROUP_ORDER:
        if name in cfg:
            branch = tree.add(f"[bold cyan]{name}[/bold cyan]")
            branch.add(Syntax(OmegaConf.to_yaml(cfg[name], resolve=True), "yaml"))
    tree.add("[bold cyan]run[/bold cyan]").add(Syntax(OmegaConf.to_yaml(OmegaConf.create(rest), resolve=True), "yaml"))
    rprint(tree)


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    path = Path(run_dir) / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def write_run_config(cfg: DictConfig | Mapping[str, Any], run_dir: Path) -> Path:
    """Print the run config (:func:`print_config`) and save it resolved as ``<run_dir>/config.yaml``: the first
    thing a train or evaluate run writes."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    print_config(cfg)
    return save_config(cfg, run_dir)


def compose_train_config(*overrides: str, return_hydra_config: bool = False) -> DictConfig:
    """The ``sar.train`` config composed with ``overrides`` (as on its command line), outside a Hydra app; with
    ``return_hydra_config`` it includes the ``hydra`` node (launcher, run and sweep directories)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=return_hydra_config)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def default_augmentation() -> dict[str, Any]:
    """The top-down task's default augmentation settings (conf/task/topdown.yaml)."""
    return dict(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "topdown.yaml").augmentation))
