"""One source of defaults (issue 10): the YAML under conf/ states every config key the code reads.

* Every option of every config group composes with ``train.yaml``, resolves, and builds what it names (the task's
  system and DataModule, optimiser and schedule, callbacks, logger, and the Trainer on the CPU) with no key filled
  in by code: the fallbacks kept for configs stored by older checkpoints
  (``sar.stored_config.STORED_CONFIG_DEFAULTS``) are switched off here.
* A required key deleted from a composed config makes the code that reads it raise an error naming the key.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from sar import stored_config
from sar.bench_peer import torch_threads
from sar.build import build_datamodule, build_system
from sar.data.datamodule import TopDownDataModule
from sar.data.pose3d import Pose3DDataModule
from sar.data.spec import load_spec
from sar.data.topdown import AugConfig
from sar.evaluate import build_run_config, evaluation_knobs
from sar.stored_config import STORED_CONFIG_DEFAULTS, upgrade_config
from sar.train import build_callbacks, build_trainer, check_resume_compatible, merge_head_evaluation
from sar.utils import config_keys
from sar.utils.config import CONF_DIR, to_container
from sar.utils.config_keys import MissingConfigKey
from sar.utils.loggers import build_logger
from sar.utils.scale import prepare_run_config

GROUPS = ("task", "dataset", "backbone", "neck", "head", "trainer", "logger", "optim", "callbacks", "recipe",
          "experiment")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]
# A multiple of every backbone's stride and input_multiple (32): small enough to build every network in seconds.
SMALL_INPUT = "input_size=[64,64]"


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def no_stored_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A composed config must not need the values kept for old checkpoints' configs."""
    monkeypatch.setattr(stored_config, "STORED_CONFIG_DEFAULTS", {})


def composed(*overrides: str, run_dir: Path | None = None) -> DictConfig:
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    if run_dir is not None:
        cfg.run_dir = str(run_dir)  # what sar.train sets before anything is built
    return cfg


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run config as sar.train builds from (head evaluation merged, scaling planned), without downloads."""
    cfg = copy.deepcopy(cfg)
    if cfg.trainer.devices in (-1, "auto"):  # all visible GPUs: none here; the count does not matter for this test
        cfg.trainer.devices = 1
    merge_head_evaluation(cfg)
    prepare_run_config(cfg)
    config = to_container(cfg)
    config["backbone"]["pretrained"] = False
    return config


def test_every_group_option_is_tested() -> None:
    assert {group for group, _ in OPTIONS} == set(GROUPS)
    assert ("backbone", "hrnet_w48") in OPTIONS and ("experiment", "table2_vits_sar") in OPTIONS


def task_of(group: str, option: str) -> tuple[str, ...]:
    """A head name is composed with the task of a family that implements it (conf/heads/<family>/<name>.yaml; the
    shipped tasks are named as their families)."""
    if group != "head" or (CONF_DIR / "heads" / "topdown" / f"{option}.yaml").exists():
        return ()
    family = next(d.name for d in sorted((CONF_DIR / "heads").iterdir()) if (d / f"{option}.yaml").exists())
    return (f"task={family}",)


# The whole file runs in about 30 s on one CPU thread (HRNet-W48 and the experiments build in about a second each):
# nothing is marked slow.
@pytest.mark.parametrize(("group", "option"), [pytest.param(g, o, id=f"{g}={o}") for g, o in OPTIONS if g != "dataset"])
def test_option_composes_and_builds(group: str, option: str, tmp_path: Path, no_stored_fallbacks: None) -> None:
    cfg = composed(f"{group}={option}", *task_of(group, option), SMALL_INPUT, run_dir=tmp_path)
    config = run_config(cfg)

    system = build_system(config)
    datamodule = build_datamodule(config, system)
    # every shipped task's DataModule is the top-down one's or task=pose3d's (its own files and loaders)
    assert isinstance(datamodule, (TopDownDataModule, Pose3DDataModule)) and datamodule.spec is system.spec
    assert datamodule.format == config["dataset"]["format"]
    optimisers = system.configure_optimizers()
    assert optimisers["optimizer"].param_groups
    if group == "optim":  # every shipped optimiser runs torch's one-kernel update (conf/optim/*.yaml)
        assert optimisers["optimizer"].defaults["fused"] is True
    with torch.no_grad():
        outputs = system.model.eval()(torch.zeros(1, 3, 64, 64))
    assert outputs

    callbacks = build_callbacks(config)
    assert len(callbacks) == sum(1 for cb in config["callbacks"].values() if cb)
    try:
        logger = build_logger(config["logger"], tmp_path, "x", None)
    except ModuleNotFoundError as err:  # tensorboard is no dependency of sar: logger=tensorboard needs it installed
        assert option == "tensorboard" and "tensorboard" in str(err)
        logger = None
    if config["trainer"]["accelerator"] == "cpu":
        trainer = build_trainer(config, tmp_path, callbacks, logger)
        assert trainer.max_epochs == config["trainer"]["max_epochs"]
    if option == "wandb":
        assert config["logger"]["mode"] == "offline"  # nothing leaves the machine


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")))
def test_dataset_option_composes(option: str, no_stored_fallbacks: None) -> None:
    """Only the synthetic dataset has data here: compose, resolve, load the keypoint spec, and build the
    DataModule (which checks its keys and touches no file before setup)."""
    task = ("task=pose3d",) if option in ("h36m", "synthetic_h36m") else ()  # the Human3.6M formats: task=pose3d
    config = to_container(composed(f"dataset={option}", *task))
    spec = load_spec(config["dataset"]["spec"])
    datamodule = build_datamodule(config, SimpleNamespace(spec=spec, codec=None))
    assert datamodule.spec is spec and datamodule.format == config["dataset"]["format"]


def test_augmentation_defaults_of_code_are_the_yaml_values() -> None:
    """AugConfig's field defaults (direct library use) are the task YAML's values, which runs use."""
    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "topdown.yaml").augmentation)
    assert AugConfig.from_config(yaml) == AugConfig()


def test_stored_config_fallbacks_are_the_yaml_values_where_the_yaml_states_none_of_its_own() -> None:
    """The values kept for old checkpoints' configs are the ones the shipped configs that relied on them state now
    (results do not move): resnet / HRNet / ViT backbones and the task's augmentation."""
    for backbone in ("resnet18", "resnet50"):  # they relied on every one (channels / stride: not checked then)
        bcfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "backbone" / f"{backbone}.yaml"))
        for dotted, value in STORED_CONFIG_DEFAULTS.items():
            key = dotted.split(".", 1)[1]
            if dotted.startswith("backbone.") and key not in ("channels", "stride"):
                if (backbone, key) == ("resnet50", "channels_last"):
                    # NHWC since issue 14 (faster); older ResNet-50 checkpoints keep the NCHW they trained in
                    assert bcfg[key] is True and value is False
                    continue
                assert bcfg[key] == value, (backbone, dotted)
    augmentation = OmegaConf.load(CONF_DIR / "task" / "topdown.yaml").augmentation
    for dotted, value in STORED_CONFIG_DEFAULTS.items():
        if dotted.startswith("task.augmentation."):
            assert augmentation[dotted.rsplit(".", 1)[1]] == value, dotted


def test_an_old_stored_config_gets_the_keys_it_predates() -> None:
    old = {"backbone": {"name": "resnet18", "timm_name": "resnet18", "pretrained": False, "channels": 512},
           "head": {"deconv": {"num_layers": "auto", "channels": 256}},
           "task": {"system": {}, "padding": 1.25, "augmentation": {"flip_prob": 0.5}}, "dataset": {"name": "x"}}
    new = upgrade_config(old)
    assert new["neck"] == {"_target_": "sar.models.necks.DeconvNeck.on_backbone", "num_layers": "auto",
                           "channels": 256}
    assert new["backbone"]["_target_"] == "sar.models.backbones.timm_backbone"
    assert new["backbone"]["channels"] == 512 and new["backbone"]["out_indices"] is None
    assert new["task"]["augmentation"]["scale_prob"] == 1.0 and new["task"]["augmentation"]["flip_prob"] == 0.5
    assert "out_indices" not in old["backbone"] and "scale_prob" not in old["task"]["augmentation"]  # not modified
    assert "neck" not in old
    fpn = upgrade_config({**old, "backbone": {**old["backbone"], "neck": "fpn", "deconv_channels": 128}})
    assert fpn["neck"] == {"_target_": "sar.models.necks.FPNNeck.on_backbone", "channels": 128, "out_conv": "full"}
    assert "neck" not in fpn["backbone"] and "deconv_channels" not in fpn["backbone"]


def _as_stored_before(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a checkpoint written just before issue 10 stored it: without the keys of STORED_CONFIG_DEFAULTS
    whose value it has (conf/ stated them for no resnet / augmentation then; channels and stride: since issue 3), and with
    the neck as backbone keys (``backbone.neck``: absent for the deconvolutions, ``fpn`` with its width and output
    conv), the backbone without ``_target_``."""
    config = copy.deepcopy(config)
    for dotted in set(STORED_CONFIG_DEFAULTS) - {"backbone.channels", "backbone.stride"}:
        *parents, key = dotted.split(".")
        node = config
        for name in parents:
            node = node[name]
        if node.get(key) == STORED_CONFIG_DEFAULTS[dotted]:  # a value of its own was stated then too
            node.pop(key)
    neck, backbone = config.pop("neck"), config["backbone"]
    backbone.pop("_target_")
    if neck["_target_"].startswith("sar.models.necks.FPNNeck"):
        backbone.update(neck="fpn", deconv_channels=neck["channels"], fpn_out_conv=neck["out_conv"])
    return config


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv3"])
def test_a_config_stored_before_the_keys_were_in_conf_builds_the_same_system(backbone: str) -> None:
    config = run_config(composed(f"backbone={backbone}", SMALL_INPUT))
    old = _as_stored_before(config)
    assert "neck" not in old and "scale_prob" not in old["task"]["augmentation"]
    assert upgrade_config(old)["neck"] == config["neck"]
    torch.manual_seed(0)
    new_system = build_system(config)
    torch.manual_seed(0)
    old_system = build_system(old)
    assert type(old_system.model.neck) is type(new_system.model.neck)
    new_weights, old_weights = new_system.state_dict(), old_system.state_dict()
    assert new_weights.keys() == old_weights.keys()
    assert all(torch.equal(new_weights[k], old_weights[k]) for k in new_weights)
    assert (AugConfig.from_mapping(build_datamodule(old, old_system).augmentation)
            == AugConfig.from_mapping(build_datamodule(config, new_system).augmentation))


def test_a_run_stored_before_the_keys_were_in_conf_resumes(tmp_path: Path) -> None:
    config = run_config(composed("backbone=resnet18", SMALL_INPUT))
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"cfg": _as_stored_before(config)}}, path)
    check_resume_compatible(str(path), config)  # the same run: no error
    other = _as_stored_before(config)
    other["backbone"].update(neck="fpn", deconv_channels=128)
    torch.save({"hyper_parameters": {"cfg": other}}, path)
    with pytest.raises(ValueError, match="neck differ"):
        check_resume_compatible(str(path), config)


def test_evaluate_knobs_come_from_conf_evaluate_yaml() -> None:
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        eval_cfg = OmegaConf.to_container(compose(config_name="evaluate", overrides=["ckpt=x.ckpt"]), resolve=True)
    assert evaluation_knobs({}) == evaluation_knobs(eval_cfg)  # a partial config gets the file's values
    ckpt_cfg = run_config(composed())
    run = build_run_config(eval_cfg, ckpt_cfg, None, "x.ckpt")
    assert run["task"]["evaluation"] == ckpt_cfg["task"]["evaluation"]  # null knobs keep the checkpoint's values
    assert run["trainer"]["accelerator"] == "cpu" and run["trainer"]["devices"] == 1
    assert run["dataset"]["num_workers"] == ckpt_cfg["dataset"]["num_workers"]


def test_the_evaluation_trainer_takes_any_trainer_argument(tmp_path: Path) -> None:
    """conf/evaluate.yaml's trainer block is a _target_ config: a key it does not list reaches the Trainer."""
    from pytorch_lightning.profilers import SimpleProfiler

    from sar.utils.instantiate import build

    overrides = ["ckpt=x.ckpt", "+trainer.profiler=simple", "trainer.limit_val_batches=2"]
    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        eval_cfg = OmegaConf.to_container(compose(config_name="evaluate", overrides=overrides), resolve=True)
    run = build_run_config(eval_cfg, run_config(composed()), None, "x.ckpt")
    trainer = build(run["evaluate"]["trainer"], "trainer", default_root_dir=str(tmp_path))
    assert isinstance(trainer.profiler, SimpleProfiler) and trainer.limit_val_batches == 2
    assert trainer.logger is None and trainer.checkpoint_callback is None and trainer.precision == "32-true"


# -- a required key deleted from a composed config: the error names it --------------------------------------------
def _delete(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    config = copy.deepcopy(config)
    *parents, key = dotted.split(".")
    node = config
    for name in parents:
        node = node[name]
    del node[key]
    return config


def _datamodule(config: dict[str, Any]) -> Any:
    return build_datamodule(config, SimpleNamespace(spec=load_spec("coco"), codec=None))


def _prepare(config: dict[str, Any]) -> Any:
    return prepare_run_config(OmegaConf.create(config))


DELETIONS = [
    ("task.padding", (), _datamodule),
    ("task.augmentation.flip_prob", (), _datamodule),
    ("dataset.num_workers", (), _datamodule),
    ("dataset.val_batch_size", (), _datamodule),
    ("dataset.format", (), _datamodule),
    ("input_size", (), build_system),
    ("trainer.accelerator", (), _prepare),
    ("trainer.precision", (), _prepare),
    ("trainer.num_nodes", (), _prepare),
    ("optim.scale_lr", (), _prepare),
    ("callbacks", (), build_callbacks),
]


@pytest.mark.parametrize(("key", "overrides", "reader"), DELETIONS, ids=[d[0] for d in DELETIONS])
def test_a_missing_required_key_is_named(key: str, overrides: tuple[str, ...], reader: Any, tmp_path: Path,
                                         no_stored_fallbacks: None) -> None:
    config = to_container(composed(*overrides, SMALL_INPUT, run_dir=tmp_path))
    config["backbone"]["pretrained"] = False
    with pytest.raises(MissingConfigKey, match=re.escape(f"{key} is missing from the config")):
        reader(_delete(config, key))


# Parts built from a `_target_` config: a missing argument is named with the part (its config's dotted path).
TARGET_DELETIONS = [
    ("backbone", "timm_name", ()),
    ("backbone", "out_indices", ()),
    ("neck", "channels", ()),                       # the FPN of the default backbone
    ("neck", "num_layers", ("backbone=resnet18",)),  # the deconvolutions of the paper backbones
    ("neck", "_target_", ()),
]


@pytest.mark.parametrize(("part", "key", "overrides"), TARGET_DELETIONS, ids=[f"{p}.{k}" for p, k, _ in TARGET_DELETIONS])
def test_a_missing_argument_of_a_built_part_is_named(part: str, key: str, overrides: tuple[str, ...],
                                                     no_stored_fallbacks: None) -> None:
    config = to_container(composed(*overrides, SMALL_INPUT))
    config["backbone"]["pretrained"] = False
    with pytest.raises(ValueError, match=rf"^{part}\b.*{key}"):
        build_system(_delete(config, f"{part}.{key}"))


def test_the_error_names_the_dotted_key() -> None:
    with pytest.raises(KeyError, match=re.escape("backbone.neck is missing from the config")):
        config_keys.require({}, "neck", "backbone")
    assert str(MissingConfigKey("dataset.num_workers")) == "dataset.num_workers is missing from the config"
