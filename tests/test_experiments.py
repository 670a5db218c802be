"""Paper rows: every `conf/experiment/*.yaml` is a recipe (`conf/recipe/`) plus the lines that make its row, composes,
and carries its row's recipe; the recipes state the sources' values; paper rows start from the paper's weights and
stop at start-up, naming them, when they cannot be had (no network needed: a local state dict stands in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from sar.build import build_system
from sar.models.backbones import PretrainedWeightsError
from sar.utils.config import CONF_DIR, compose_train_config, to_container

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))
HEADS = ("sar", "heatmap", "heatmap_offset", "regression", "rle")
DENSE = ("sar", "heatmap", "heatmap_offset")
MAX_ROW_LINES = 15  # non-comment, non-blank lines of an experiment file (issue 11)
RELEASED_SCHEDULE = ("multistep", [170, 200], 500, 0.001, 210)


def compose_row(name: str, *overrides: str) -> dict:
    return to_container(compose_train_config(f"experiment={name}", *overrides))


def defaults_of(name: str) -> dict[str, str]:
    """{group: option} of the experiment's `override /group: option` defaults."""
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_"), name
    out = {}
    for item in yaml.safe_load(text)["defaults"]:
        ((key, option),) = item.items()
        out[key.removeprefix("override ").lstrip("/")] = option
    return out


def test_all_rows_present() -> None:
    expected = {f"coco_{b}_{h}" for b in ("r50", "hrnet_w32", "hrnet_w48") for h in HEADS}
    expected |= {"table1_mpii_regression_r50", "table1_mpii_rle_r50", "table1_mpii_heatmap_r50",
                 "table1_mpii_heatmap_hrnet_w48", "table1_mpii_sar_r50", "table1_mpii_sar_hrnet_w48"}
    expected |= {f"table2_vits_{h}" for h in (*HEADS, "sar_deconv")}
    expected |= {f"ablation_r50_{h}" for h in HEADS}
    expected |= {"coco_r50_sar_released", "coco_hrnet_w48_sar_released", "wholebody_hrnet_w48_sar_released"}
    expected |= {f"bottomup_{d}_hrnet_w32_{h}" for d in ("coco", "crowdpose") for h in ("sar_center", "sar_ae", "ae",
                                                                                         "dekr")}
    expected |= {f"h36m_r50_{h}" for h in ("sar", "rle", "regression", "integral")}
    assert set(EXPERIMENTS) == expected
    assert set(RECIPES) == {"topdown_released", "rle", "vitpose_s", "supp_ablation", "bottomup_coco",
                            "bottomup_crowdpose", "h36m_rle"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_a_row_is_a_recipe_plus_its_delta(name: str) -> None:
    lines = [line for line in (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) <= MAX_ROW_LINES, f"{name}: {len(lines)} lines"
    groups = defaults_of(name)
    assert groups["recipe"] in RECIPES
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    for key in ("optim:\n  lr", "max_epochs", "milestones", "warmup"):  # the schedule lives in the recipe
        assert key not in text, (name, key)


def test_recipes_state_the_sources_values() -> None:
    """Values transcribed from docs/method.md "Recipes" (the released configs, MMPose, the supplementary)."""
    base = to_container(compose_train_config("recipe=topdown_released"))
    o, t = base["optim"], base["trainer"]
    assert (o["name"], o["lr"], o["weight_decay"]) == ("adam", 5e-4, 0.0)
    assert (o["scheduler"], o["milestones"], o["warmup_iters"], o["warmup_ratio"], t["max_epochs"]) == \
        RELEASED_SCHEDULE
    assert (t["accelerator"], t["check_val_every_n_epoch"], base["backbone"]["pretrained"]) == ("gpu", 10, True)
    assert base["task"]["flip_test"] is True and base["head"]["evaluation"]["kpt_score_thr"] == 0.2

    assert to_container(compose_train_config("recipe=rle"))["optim"]["lr"] == 1e-3

    vit = to_container(compose_train_config("recipe=vitpose_s", "weights_dir=/w"))
    o = vit["optim"]
    assert (o["name"], o["lr"], o["weight_decay"], o["layer_decay"]) == ("adamw", 5e-4, 0.1, 0.8)
    assert vit["trainer"]["gradient_clip_val"] == 1.0
    assert vit["backbone"]["pretrained"] == "/w/mae_pretrain_vit_small.pth"

    mp = to_container(compose_train_config("task=bottomup", "recipe=bottomup_coco"))
    assert (mp["optim"]["lr"], mp["optim"]["milestones"], mp["trainer"]["max_epochs"], mp["input_size"]) == (
        1e-3, [90, 120], 140, [512, 512])

    abl = to_container(compose_train_config("recipe=supp_ablation"))
    o, t = abl["optim"], abl["trainer"]
    assert (o["lr"], o["milestones"], o["warmup_iters"], t["max_epochs"]) == (1e-3, [90, 120], 0, 140)
    assert abl["dataset"]["batch_size"] * t["devices"] == o["base_batch_size"] == 320
    assert abl["task"]["flip_test"] is False and abl["dataset"]["val_bbox_file"] is None  # GT boxes, no flip
    assert abl["input_size"] == [192, 256]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_recipe(name: str) -> None:
    cfg = compose_row(name)
    groups = defaults_of(name)
    head, backbone = groups["head"], groups["backbone"]
    assert cfg["head"]["name"] == head
    assert cfg["backbone"]["name"] == OmegaConf.load(CONF_DIR / "backbone" / f"{backbone}.yaml").name
    o, t = cfg["optim"], cfg["trainer"]
    deconv = cfg["neck"]["num_layers"]
    assert t["accelerator"] == "gpu" and isinstance(cfg["table"]["row"], str)
    if backbone == "vit_small":  # MAE weights: a local file
        assert cfg["backbone"]["pretrained"].endswith("mae_pretrain_vit_small.pth")
    else:  # ImageNet weights from timm, the tag naming the paper's source
        assert cfg["backbone"]["pretrained"] is True and "." in cfg["backbone"]["timm_name"]

    if name.startswith("bottomup_"):  # the supplementary's multi-person recipe (CID / DEKR schedule)
        crowdpose = "crowdpose" in name
        assert (cfg["task"]["name"], cfg["input_size"], o["lr"], o["warmup_iters"]) == ("bottomup", [512, 512], 1e-3, 0)
        assert (o["milestones"], t["max_epochs"]) == (([200, 260], 300) if crowdpose else ([90, 120], 140))
        assert cfg["dataset"]["batch_size"] * t["devices"] == o["base_batch_size"] == 40
        assert cfg["dataset"]["name"] == ("crowdpose" if crowdpose else "coco") and backbone == "hrnet_w32"
        return
    if name.startswith("h36m_"):  # the supplementary's 3D recipe (RLE's codebase), MPII + Human3.6M
        assert (cfg["task"]["name"], cfg["input_size"], o["lr"], o["milestones"], t["max_epochs"]) == (
            "pose3d", [256, 256], 1e-3, [90, 120], 140)
        assert cfg["dataset"]["batch_size"] * t["devices"] == o["base_batch_size"] == 256
        assert cfg["dataset"]["name"] == "h36m" and cfg["dataset"]["aux"]["format"] == "mpii"
        assert cfg["dataset"]["aux_ratio"] == 0.5 and t["gradient_clip_val"] == 1.0 and cfg["task"]["flip_test"]
        assert backbone == "resnet50" and deconv == ("auto" if head in ("sar", "integral") else 0)  # auto: 3 on R-50
        return
    if name.startswith("ablation_"):
        assert (o["lr"], t["max_epochs"], cfg["task"]["flip_test"]) == (1e-3, 140, False)
        assert deconv == (3 if head in DENSE else 0)
        return
    assert (o["scheduler"], o["milestones"], o["warmup_iters"], o["warmup_ratio"], t["max_epochs"]) == \
        RELEASED_SCHEDULE
    if name.startswith("table2_"):
        assert cfg["dataset"]["name"] == "coco" and cfg["input_size"] == [192, 256]
        assert (o["name"], o["lr"], o["weight_decay"], o["layer_decay"]) == ("adamw", 5e-4, 0.1, 0.8)
        assert t["gradient_clip_val"] == 1.0
        if head in DENSE:
            assert deconv == (0 if name == "table2_vits_sar" else 2)
        return
    assert o["name"] == "adam" and o["lr"] == (1e-3 if head == "rle" else 5e-4)
    if head in DENSE:
        assert deconv == (3 if backbone == "resnet50" else 0)
    if name.endswith("_released"):
        assert cfg["input_size"] == [288, 384] and cfg["head"]["codec"]["sigma"] == 3.0
        assert cfg["dataset"]["batch_size"] * t["devices"] == o["base_batch_size"] == \
            {"resnet50": 192, "hrnet_w48": 72}[backbone]
        assert t["check_val_every_n_epoch"] == (35 if name.startswith("wholebody") else 10)
        assert (cfg["task"]["name"], cfg["dataset"]["name"]) == \
            (("wholebody", "coco_wholebody") if name.startswith("wholebody") else ("topdown", "coco"))
    elif name.startswith("table1_"):
        assert cfg["dataset"]["name"] == "mpii" and cfg["input_size"] == [256, 256]
    else:
        assert cfg["dataset"]["name"] == "coco" and cfg["input_size"] == [192, 256]
        assert cfg["dataset"]["batch_size"] == (32 if backbone == "hrnet_w48" else 64)


@pytest.mark.parametrize("name", ["coco_r50_sar_released", "wholebody_hrnet_w48_sar_released"])
def test_released_rows_build_72x96_maps(name: str) -> None:
    cfg = compose_row(name, "backbone.pretrained=false")
    system = build_system(cfg)
    assert tuple(system.heatmap_size) == (72, 96) and system.codec.sigma == 3.0
    assert system.spec.num_keypoints == (133 if name.startswith("wholebody") else 17)


def test_default_has_no_table_and_no_recipe() -> None:
    cfg = compose_train_config()
    assert cfg.table is None and cfg.backbone.pretrained is False and cfg.trainer.accelerator == "cpu"


# -- the paper's weights ---------------------------------------------------------------------------------------
def test_a_row_with_a_weights_file_loads_it_and_a_missing_file_stops_naming_it(tmp_path: Path) -> None:
    """ViT-S rows read the MAE weights from weights_dir; a 224x224 checkpoint's pos_embed is resampled."""
    torch.manual_seed(0)
    patch = torch.randn(384, 3, 16, 16)
    pos = torch.randn(1, 197, 384)  # 1 class token + 14x14 patches
    torch.save({"model": {"patch_embed.proj.weight": patch, "pos_embed": pos}}, tmp_path / "mae_pretrain_vit_small.pth")
    system = build_system(compose_row("table2_vits_sar", f"weights_dir={tmp_path}", "input_size=[64,64]"))
    body = system.model.backbone.body.model
    assert torch.equal(body.patch_embed.proj.weight, patch) and body.pos_embed.shape == (1, 1 + 4 * 4, 384)
    with pytest.raises(PretrainedWeightsError, match=r"not found: .*nowhere/mae_pretrain_vit_small\.pth.*"
                                                     r"backbone\.pretrained=/path"):
        build_system(compose_row("table2_vits_sar", f"weights_dir={tmp_path / 'nowhere'}", "input_size=[64,64]"))


def test_pretrained_true_loads_timm_weights_and_offline_stops_naming_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's download is replaced by a local state dict (the same code path after the download)."""
    import safetensors.torch
    import timm
    from timm.models import _hub

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.normal_(source.conv1.weight)
    file = tmp_path / "model.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(file))
    asked: list[str] = []

    def download(repo_id: str, filename: str, **_: object) -> str:
        asked.append(repo_id)
        return str(file)

    monkeypatch.setattr(_hub, "hf_hub_download", download)
    overrides = ("recipe=topdown_released", "backbone=resnet18", "backbone.timm_name=resnet18.tv_in1k",
                 "input_size=[64,64]")
    system = build_system(to_container(compose_train_config(*overrides)))
    assert asked == ["timm/resnet18.tv_in1k"]
    assert torch.equal(system.model.backbone.body.conv1.weight, source.conv1.weight)

    def offline(*_: object, **__: object) -> str:
        raise OSError("cannot reach huggingface.co and the file is not in the local cache")

    monkeypatch.setattr(_hub, "hf_hub_download", offline)
    with pytest.raises(PretrainedWeightsError, match=r"'resnet18\.tv_in1k' from https://huggingface\.co/timm/"
                                                     r"resnet18\.tv_in1k .*backbone\.pretrained=/path"):
        build_system(to_container(compose_train_config(*overrides)))


def test_an_offline_paper_row_stops_at_start_up(tmp_path: Path) -> None:
    """`python -m sar.train experiment=coco_r50_sar` with no network and an empty weights cache: one clear error
    naming the weights, before any data or checkpoint is written; never a silent random init."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONWARNINGS": "ignore"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sar.train", "experiment=coco_r50_sar", "dataset=synthetic", "trainer=cpu",
         f"dataset.cache_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"],
        check=False, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "resnet50.tv_in1k" in proc.stderr and "backbone.pretrained=/path/to/weights.pth" in proc.stderr
    assert not (run_dir / "checkpoints").exists() and not (tmp_path / "data").exists()
