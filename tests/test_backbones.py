"""Backbones (conf/backbone/*.yaml): documented channels/stride, HRNet stride-4 branch, ViT built for the input
size, `deconv.num_layers: auto`, and every backbone x head pair training one step and predicting at the
paper input size (192x256, width x height)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sar.bench_peer import torch_threads
from sar.models.backbones import build_backbone
from sar.models.necks import FPNNeck, resolve_deconv_layers
from sar.models.pose_model import build_pose_model
from sar.systems.topdown import TopDownSystem
from sar.utils.config import CONF_DIR, to_container
from sar.utils.instantiate import build

PAPER_INPUT = (192, 256)  # (w, h): the paper's ResNet / HRNet / ViT-S COCO input
BACKBONES = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
HEADS = sorted(p.stem for p in (CONF_DIR / "heads" / "topdown").glob("*.yaml"))  # the top-down heads

# (channels, stride) of the map the head reads; these three are the acceptance values.
EXPECTED = {"hrnet_w32": (32, 4), "hrnet_w48": (48, 4), "vit_small": (384, 16), "resnet50": (2048, 32)}
AUTO_DECONVS = {4: 0, 16: 2, 32: 3}  # backbone stride -> deconvs of `num_layers: auto`
CHEAP = {"resnet18", "mobilenetv3"}  # every head on these runs unmarked


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: these batch-1 steps (HRNet's many small ops above all) run several times slower
    with 2 OpenMP threads as soon as the cores are shared with another process (CI runner, parallel jobs)."""
    with torch_threads(1):
        yield


def backbone_cfg(name: str) -> dict:
    """conf/backbone/<name>.yaml as composed (without its defaults list: the neck it selects)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "backbone" / f"{name}.yaml"), resolve=True)
    cfg.pop("defaults", None)
    return cfg


# -- backbones -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_yaml_documents_channels_and_stride(name: str) -> None:
    cfg = backbone_cfg(name)
    size = (64, 96)  # small input (w, h) keeps this fast; the pair test below runs the paper input size
    backbone = build(cfg, "backbone", input_size=size)  # raises when the yaml's channels/stride are wrong
    channels, stride = backbone.channels[-1], backbone.strides[-1]
    if name in EXPECTED:
        assert (channels, stride) == EXPECTED[name]
        assert (cfg["channels"], cfg["stride"]) == EXPECTED[name]
    with torch.no_grad():
        feat = backbone.eval()(torch.zeros(1, 3, size[1], size[0]))[-1]
    assert feat.shape == (1, channels, size[1] // stride, size[0] // stride)


def test_documented_channels_are_checked() -> None:
    cfg = dict(backbone_cfg("resnet18"), channels=64)
    with pytest.raises(ValueError, match="channels=64"):
        build(cfg, "backbone", input_size=PAPER_INPUT)


def test_hrnet_branch_is_timm_final_stage_branch_1_without_unused_parameters() -> None:
    """The pruned model computes exactly timm's raw stride-4 output; every parameter gets a gradient."""
    torch.manual_seed(0)
    ours = build(backbone_cfg("hrnet_w32"), "backbone", input_size=(64, 64))
    assert ours.channels == [32] and ours.strides == [4]
    assert len(ours.body.stage4[-1].fuse_layers) == 1  # only the fuse into branch 1 is kept
    # The pose HRNet-W32 backbone: 28.5M parameters (the 32 -> K final conv adds ~0.6K).
    assert sum(p.numel() for p in ours.parameters()) == pytest.approx(28.53e6, rel=2e-3)
    reference = timm.create_model("hrnet_w32", features_only=True, feature_location="", out_indices=(0, 1, 2))
    missing, _ = reference.load_state_dict(ours.body.state_dict(), strict=False)
    assert all(".fuse_layers." in k for k in missing)  # only the dropped fuse layers are not shared
    x = torch.randn(1, 3, 64, 64)
    ours.eval(), reference.eval()
    with torch.no_grad():
        expected = reference(x)
    assert [f.shape[1] for f in expected] == [64, 32, 64]  # stem, branch 1, branch 2: index 1 is the 32-ch one
    out = ours(x)[-1]
    torch.testing.assert_close(out, expected[1])
    ours.train()
    ours(x)[-1].square().mean().backward()
    unused = [n for n, p in ours.named_parameters() if p.grad is None]
    assert not unused


def test_vit_is_built_for_the_input_size_and_returns_the_normed_token_map() -> None:
    vit = build(backbone_cfg("vit_small"), "backbone", input_size=(96, 128))
    model = vit.body.model
    assert tuple(model.patch_embed.grid_size) == (8, 6)
    assert model.pos_embed.shape[1] == model.num_prefix_tokens + 8 * 6
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.blocks[0].attn.num_heads == 12  # ViTPose-S
    assert not isinstance(model.norm, torch.nn.Identity)  # the final LayerNorm is kept and applied
    x = torch.randn(1, 3, 128, 96)
    vit.eval()
    with torch.no_grad():
        feat = vit(x)[-1]
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]  # timm: blocks + final norm
    assert feat.shape == (1, 384, 8, 6)
    torch.testing.assert_close(feat.flatten(2).transpose(1, 2), tokens)


def test_vit_local_224_checkpoint_resamples_pos_embed(tmp_path: Path) -> None:
    classifier = timm.create_model("vit_small_patch16_224", pretrained=False)
    level = torch.randn(384)
    with torch.no_grad():  # a per-channel constant over the 14x14 grid survives any resampling
        classifier.pos_embed[:, 1:] = level
    path = tmp_path / "vit_s_224.pth"
    torch.save({"model": classifier.state_dict()}, path)
    cfg = dict(backbone_cfg("vit_small"), pretrained=str(path))
    vit = build(cfg, "backbone", input_size=(96, 128))
    model = vit.body.model
    assert model.pos_embed.shape == (1, 1 + 8 * 6, 384)
    torch.testing.assert_close(model.pos_embed[:, 0], classifier.pos_embed[:, 0])  # class token untouched
    torch.testing.assert_close(model.blocks[3].attn.qkv.weight, classifier.blocks[3].attn.qkv.weight)
    torch.testing.assert_close(model.pos_embed[0, 1:], level.expand(48, 384), atol=1e-4, rtol=1e-4)


def test_hrnet_local_file_round_trip(tmp_path: Path) -> None:
    source = build_backbone("hrnet_w32", out_indices=(1,), feature_location="")
    path = tmp_path / "hrnet.pth"
    torch.save(source.state_dict(), path)
    loaded = build(dict(backbone_cfg("hrnet_w32"), pretrained=str(path)), "backbone", input_size=PAPER_INPUT)
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


# -- deconv count ----------------------------------------------------------------------------------------
def test_resolve_deconv_layers() -> None:
    assert resolve_deconv_layers("auto", 32) == 3
    assert resolve_deconv_layers("auto", 16) == 2
    assert resolve_deconv_layers("auto", 4) == 0
    assert resolve_deconv_layers(None, 8) == 1
    assert resolve_deconv_layers(0, 32) == 0
    assert resolve_deconv_layers(2, 32) == 2
    assert resolve_deconv_layers("1", 16) == 1
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ValueError, match="num_layers"):
            resolve_deconv_layers(bad, 32)
    with pytest.raises(ValueError, match="power-of-two"):
        resolve_deconv_layers("auto", 24)


@pytest.mark.parametrize(
    ("backbone", "num_layers", "layers", "map_size"),
    [
        ("resnet18", "auto", 3, (48, 64)),
        ("resnet18", 0, 0, (6, 8)),
        ("vit_small", "auto", 2, (48, 64)),
        ("vit_small", 0, 0, (12, 16)),
        ("hrnet_w32", "auto", 0, (48, 64)),
    ],
)
def test_auto_deconvs_per_backbone(backbone: str, num_layers: object, layers: int, map_size: tuple) -> None:
    cfg = compose_cfg(backbone, "sar", num_layers)
    model, size = build_pose_model(cfg, 17)
    assert model.neck.num_layers == layers and size == map_size
    assert model.stride == PAPER_INPUT[0] // map_size[0]
    assert model.neck.out_channels == (256 if layers else model.backbone.channels[-1])


def test_input_size_must_fit_backbone_stride() -> None:
    for backbone in ("resnet18", "hrnet_w32"):  # stride 32; stride 4 but with a stride-32 lowest branch
        cfg = dict(compose_cfg(backbone, "sar", None), input_size=[200, 256])
        with pytest.raises(ValueError, match="multiple"):
            build_pose_model(cfg, 17)


# -- every backbone x head: one training step and one predict at the paper input size ----------------------
def _pair_params() -> list:
    params = []
    for backbone in BACKBONES:
        deconv_options = [None, 0] if backbone == "vit_small" else [None]
        for head in HEADS:
            if backbone == "hrnet_w48" and head not in ("sar", "heatmap"):
                continue  # keeps the file's runtime modest; the HRNet path is covered by hrnet_w32
            for deconvs in deconv_options:
                if deconvs == 0 and head in ("regression", "rle"):
                    continue  # these heads have no deconvolutions anyway
                fast = backbone in CHEAP or (head == "sar" and backbone != "hrnet_w48")
                marks = () if fast else (pytest.mark.slow,)
                suffix = "-nodeconv" if deconvs == 0 else ""
                params.append(pytest.param(backbone, head, deconvs, marks=marks, id=f"{backbone}-{head}{suffix}"))
    return params


def compose_cfg(backbone: str, head: str, deconvs: int | str | None) -> dict:
    overrides = [f"backbone={backbone}", f"head={head}", f"input_size=[{PAPER_INPUT[0]},{PAPER_INPUT[1]}]"]
    if deconvs is not None:
        overrides.append(f"head.deconv.num_layers={deconvs}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_container(compose(config_name="train", overrides=overrides))


def make_batch(system: TopDownSystem, batch: int, rng: np.random.Generator) -> dict:
    w, h = PAPER_INPUT
    k = system.spec.num_keypoints
    items = []
    for _ in range(batch):
        keypoints = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(k, 2)).astype(np.float32)
        visible = (rng.random(k) > 0.2).astype(np.float32)
        items.append(system.codec.encode(keypoints, visible))
    targets = {key: torch.as_tensor(np.stack([it[key] for it in items])) for key in items[0]}
    return {"image": torch.randn(batch, 3, h, w), "targets": targets}


@pytest.mark.parametrize(("backbone", "head", "deconvs"), _pair_params())
def test_backbone_head_pair_trains_and_predicts(backbone: str, head: str, deconvs: int | None) -> None:
    torch.manual_seed(0)
    cfg = compose_cfg(backbone, head, deconvs)
    system = TopDownSystem(cfg)
    stride = system.model.backbone.strides[-1]
    layers = system.model.neck.num_layers
    if isinstance(system.model.neck, FPNNeck):  # the CPU default's neck: fused to the finest returned level
        assert cfg["neck"]["_target_"] == "sar.models.necks.FPNNeck.on_backbone"
        out_stride = system.model.backbone.strides[0]
    else:
        if cfg["head"].get("deconv", {}).get("num_layers") == "auto":
            assert layers == AUTO_DECONVS[stride]
        out_stride = stride // 2**layers
    assert tuple(system.heatmap_size) == (PAPER_INPUT[0] // out_stride, PAPER_INPUT[1] // out_stride)

    system.train()
    batch = make_batch(system, 1, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer
        loss = system.training_step(batch, 0)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in system.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    first = next(p for p in system.model.backbone.parameters() if p.ndim == 4)
    assert first.grad is not None  # the loss reaches the backbone's first convolution

    system.eval()
    keypoints, scores = system.predict_crops(batch["image"])
    assert keypoints.shape == (1, system.spec.num_keypoints, 2)
    assert scores.shape == (1, system.spec.num_keypoints)
    assert torch.isfinite(keypoints).all() and torch.isfinite(scores).all()
