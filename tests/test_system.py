"""TopDownSystem: flip test on a mirrored input, crop->image mapping, LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from sar.evaluation.coco_ap import evaluator_name
from sar.stored_config import upgrade_config
from sar.systems.topdown import TopDownSystem, apply_affine, lr_factor
from sar.utils.config import default_augmentation


def tiny_cfg(head: str) -> dict:
    """A config of the old layout (named codec / loss types, backbone without _target_), upgraded as sar.build
    does."""
    head_cfg = {
        "sar": {"name": "sar", "with_heatmap": True, "deconv": {"num_layers": 3, "channels": 16},
                "codec": {"type": "sar", "sigma": 2.0}, "loss": {"type": "sar"}},
        "heatmap": {"name": "heatmap", "deconv": {"num_layers": 3, "channels": 16},
                    "codec": {"type": "msra_heatmap", "sigma": 2.0, "unbiased": True}, "loss": {"type": "mse"}},
    }[head]
    return upgrade_config({
        "input_size": [64, 96],
        "backbone": {"name": "resnet18", "timm_name": "resnet18", "pretrained": False},
        "head": head_cfg,
        "dataset": {"spec": "coco"},
        "task": {"flip_test": True, "augmentation": default_augmentation()},
        "optim": {"name": "adam", "lr": 1e-3},
    })


def test_flip_test_on_mirrored_input_gives_mirrored_keypoints() -> None:
    torch.manual_seed(0)
    system = TopDownSystem(tiny_cfg("sar")).eval()
    # Give the random head a spatial structure so argmax is not a tie.
    with torch.no_grad():
        for p in system.model.head.parameters():
            p.normal_(0, 0.5)
    images = torch.randn(2, 3, 96, 64)
    kp, sc = system.predict_crops(images)
    kp_m, sc_m = system.predict_crops(images.flip(-1))
    flip = torch.as_tensor(system.spec.flip_indices)
    mirrored = kp_m[:, flip].clone()
    mirrored[..., 0] = 64 - 1 - mirrored[..., 0]
    torch.testing.assert_close(mirrored, kp, atol=1e-4, rtol=0)
    torch.testing.assert_close(sc_m[:, flip], sc, atol=1e-6, rtol=0)


def test_apply_affine_matches_hand_values() -> None:
    m = torch.tensor([[[2.0, 0.0, 10.0], [0.0, 3.0, -1.0]]])
    pts = torch.tensor([[[1.0, 1.0], [0.5, 2.0]]])
    assert apply_affine(m, pts).tolist() == [[[12.0, 2.0], [11.0, 5.0]]]


def test_lr_factor_warmup_cosine_multistep() -> None:
    assert lr_factor(0, 10, 0.001, 100, "cosine", [], 0.1) == pytest.approx(0.001)
    assert lr_factor(5, 10, 0.0, 100, "cosine", [], 0.1) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(50, 0, 0.0, 100, "cosine", [], 0.1) == pytest.approx(0.5)
    assert lr_factor(100, 0, 0.0, 100, "cosine", [], 0.1) == pytest.approx(0.0)
    assert lr_factor(30, 0, 0.0, 100, "multistep", [20, 40], 0.1) == pytest.approx(0.1)
    assert lr_factor(45, 0, 0.0, 100, "multistep", [20, 40], 0.1) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="scheduler"):
        lr_factor(0, 0, 0.0, 1, "bogus", [], 0.1)


def test_trainer_groups_compose() -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        cpu = compose("train")
        gpu = compose("train", overrides=["trainer=gpu", "trainer.precision=bf16-mixed"])
    assert cpu.trainer.accelerator == "cpu" and cpu.backbone.name == "mobilenetv3"
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == "bf16-mixed"
    assert gpu.trainer.num_sanity_val_steps == 0  # inherited from the cpu group


def test_task_wholebody_selects_the_wholebody_dataset_unless_overridden() -> None:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="sar.conf", version_base="1.3"):
        wb = compose("train", overrides=["task=wholebody"])
        wb_coco = compose("train", overrides=["task=wholebody", "dataset=coco"])
    assert wb.task.name == "wholebody" and wb.dataset.spec == "coco_wholebody" and evaluator_name(wb.dataset.evaluator) == "wholebody"
    assert wb.task.monitor == "val/AP"  # inherited from the top-down task
    assert wb_coco.dataset.name == "coco"
