"""Scale: precision validation, global batch and the lr scaling rule (sar.utils.scale), trainer configs."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

import sar  # noqa: F401  (registers the sar.uid resolver)
from sar.utils.config import compose_train_config
from sar.utils.scale import (
    compute_scaling,
    cpu_description,
    describe_scaling,
    effective_lr,
    lr_scale_factor,
    num_devices,
    prepare_run_config,
    resolve_auto_precision,
    validate_precision,
)


@pytest.mark.parametrize("value,expected", [(32, 32), ("32", 32), ("32-true", 32), ("bf16-mixed", "bf16-mixed"),
                                            ("16-mixed", "16-mixed")])
def test_precision_accepted(value, expected) -> None:
    assert validate_precision(value) == expected


@pytest.mark.parametrize("value", [16, "16", "bf16", "64", "fp16", "transformer-engine", True])
def test_precision_rejected_with_clear_message(value) -> None:
    with pytest.raises(ValueError, match=r"trainer.precision=.*32.*bf16-mixed.*16-mixed"):
        validate_precision(value)


def test_auto_precision_follows_the_hardware() -> None:
    avx512 = {"avx512f", "avx512_bf16", "avx2"}
    assert resolve_auto_precision("cpu", cpu_flags=avx512 | {"amx_bf16", "amx_tile"})[0] == "bf16-mixed"
    precision, why = resolve_auto_precision("cpu", cpu_flags=avx512)
    assert precision == 32 and "AVX512-BF16 alone" in why
    assert resolve_auto_precision("cpu", cpu_flags=set())[0] == 32
    assert resolve_auto_precision("gpu", cuda_bf16=True)[0] == "bf16-mixed"
    assert resolve_auto_precision("cuda", cuda_bf16=False)[0] == "16-mixed"
    assert validate_precision("auto") == "auto"


def test_cpu_description_names_the_widest_vector_extension() -> None:
    genoa = {"avx2", "avx512f", "avx512_bf16", "fma"}
    assert cpu_description("AMD EPYC 9B14", genoa) == "AMD EPYC 9B14, AVX-512 + BF16"
    assert cpu_description("AMD EPYC", {"avx2", "fma"}) == "AMD EPYC, AVX2"
    assert cpu_description("Xeon", {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "Xeon, AVX-512 + BF16 + AMX"
    assert cpu_description("", {"asimd"}) == "unknown CPU, NEON"
    assert cpu_description("old", {"sse4_2"}) == "old, no AVX2"


def test_auto_precision_is_stored_resolved(monkeypatch) -> None:
    from sar.utils import scale

    for flags, expected in [({"amx_bf16"}, "bf16-mixed"), ({"avx512_bf16"}, 32)]:
        monkeypatch.setattr(scale, "_cpu_flags", lambda flags=flags: set(flags))
        cfg = compose_train_config("trainer.precision=auto")
        prepare_run_config(cfg)
        assert cfg.trainer.precision == expected
        assert f"precision: {expected}" in OmegaConf.to_yaml(cfg, resolve=True)  # what config.yaml stores


def test_lr_rule() -> None:
    assert lr_scale_factor(512, 256, "linear") == 2.0
    assert lr_scale_factor(64, 256, "linear") == 0.25
    assert lr_scale_factor(1024, 256, "sqrt") == 2.0
    assert lr_scale_factor(1024, 256, "none") == 1.0
    assert lr_scale_factor(1024, None, "linear") == 1.0  # no base batch: no scaling
    with pytest.raises(ValueError, match="scale_lr"):
        lr_scale_factor(64, 32, "cubic")
    with pytest.raises(ValueError, match="base_batch_size"):
        lr_scale_factor(64, 0, "linear")


def test_global_batch_and_effective_lr() -> None:
    optim = {"lr": 1e-3, "base_batch_size": 256, "scale_lr": "linear"}
    s = compute_scaling(optim, per_device_batch=32, devices=4, num_nodes=2, accumulate_grad_batches=2)
    assert s["world_size"] == 8
    assert s["global_batch_size"] == 32 * 4 * 2 * 2 == 512
    assert s["lr_factor"] == 2.0 and s["lr"] == pytest.approx(2e-3) and s["base_lr"] == 1e-3
    assert effective_lr({**optim, "scaled": s}) == pytest.approx(2e-3)
    assert effective_lr(optim) == 1e-3  # not prepared: the configured lr
    sq = compute_scaling({**optim, "scale_lr": "sqrt"}, 32, 4, 2, 2)
    assert sq["lr"] == pytest.approx(1e-3 * math.sqrt(2))
    off = compute_scaling({"lr": 1e-3, "base_batch_size": None, "scale_lr": "linear"}, 32, 4, 2, 2)
    assert off["lr"] == 1e-3 and off["scale_lr"] == "none" and off["global_batch_size"] == 512
    assert "global batch 512 = 32 per device x 4 device(s) x 2 node(s) x 2 accumulation" in describe_scaling(s)
    assert "not scaled" in describe_scaling(off)


def test_num_devices() -> None:
    assert num_devices({"accelerator": "cpu", "devices": 2}) == 2
    assert num_devices({"accelerator": "cpu", "devices": "auto"}) == 1
    assert num_devices({"accelerator": "gpu", "devices": [0, 2, 3]}) == 3
    assert num_devices({"accelerator": "gpu", "devices": "0,1"}) == 2
    assert num_devices({"accelerator": "gpu", "devices": "4"}) == 4
    with pytest.raises(ValueError):
        num_devices({"accelerator": "cpu", "devices": 0})


def test_prepare_run_config_writes_scaled_into_config() -> None:
    cfg = compose_train_config("trainer=multinode", "trainer.precision=bf16-mixed",
                               "trainer.accumulate_grad_batches=2", "dataset.batch_size=32", "optim.lr=1e-3",
                               "optim.base_batch_size=256")
    scaled = prepare_run_config(cfg)
    assert cfg.optim.scaled.global_batch_size == 32 * 4 * 2 * 2 == scaled["global_batch_size"]
    assert cfg.optim.scaled.lr == pytest.approx(2e-3)
    assert cfg.optim.lr == 1e-3  # the configured (base) lr stays as it was
    saved = OmegaConf.to_yaml(cfg, resolve=True)  # what save_config writes to the run dir
    assert "scaled:" in saved and "global_batch_size: 512" in saved

    default = compose_train_config()
    prepare_run_config(default)
    assert default.trainer.precision == 32
    assert default.optim.scaled.global_batch_size == default.dataset.batch_size
    assert default.optim.scaled.lr == default.optim.lr

    with pytest.raises(ValueError, match="trainer.precision"):
        prepare_run_config(compose_train_config("trainer.precision=16"))


def test_trainer_group() -> None:
    ddp = compose_train_config("trainer=ddp").trainer
    assert (ddp.accelerator, ddp.devices, ddp.strategy, ddp.sync_batchnorm) == ("gpu", -1, "ddp", False)
    multi = compose_train_config("trainer=multinode").trainer
    assert (multi.num_nodes, multi.devices, multi.strategy) == (2, 4, "ddp")
    assert compose_train_config("trainer=gpu").trainer.devices == 1
    assert compose_train_config().trainer.accelerator == "cpu"
