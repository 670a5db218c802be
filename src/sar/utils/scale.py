"""Scale-related checks: the trainer precision, the global batch and the learning-rate scaling rule.

The global batch of one optimiser step is ``dataset.batch_size`` (per device) x devices x num_nodes x
``trainer.accumulate_grad_batches``. The optimiser's ``lr`` is the rate tuned for ``optim.base_batch_size``
(null: no scaling, ``lr`` is used as it is); with a base batch the effective rate is

    lr_effective = lr * f(global_batch / base_batch_size),  f = identity (``scale_lr: linear``),
                                                              sqrt (``sqrt``) or 1 (``none``).

:func:`prepare_run_config` (called at the start of ``sar.train.run``) validates the precision, computes this
from the config and writes the result into ``optim.scaled`` of the run's config, so that it appears in the
printed and saved ``config.yaml``, in the logger's hyperparameters and in the checkpoint.
``TopDownSystem.configure_optimizers`` recomputes it from the trainer's actual world size and warns when the
two disagree (the trainer is then right).
"""

from __future__ import annotations

import logging
import math
import os
import platform
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sar.utils.config_keys import require

__all__ = [
    "PRECISIONS",
    "SCALE_RULES",
    "TRAINER_INT_KEYS",
    "compute_scaling",
    "cpu_description",
    "describe_scaling",
    "effective_lr",
    "lr_scale_factor",
    "machine_description",
    "num_devices",
    "prepare_run_config",
    "resolve_auto_precision",
    "validate_precision",
    "validate_trainer_integers",
]

log = logging.getLogger("sar.scale")

#: Accepted ``trainer.precision`` values (Lightning's names; 32 may be written 32, "32" or "32-true").
PRECISIONS: tuple[str, ...] = ("32", "32-true", "bf16-mixed", "16-mixed")
#: CPU flags (``/proc/cpuinfo``) of bf16 matrix units that make ``bf16-mixed`` pay on the CPU: Intel AMX tiles.
#: AVX512-BF16 alone does not: the embedded default trained no faster in bf16-mixed than in fp32 on such a CPU
#: (BENCHMARKS.md, "Reading the numbers"), so ``precision: auto`` keeps fp32 there.
CPU_BF16_FLAGS: tuple[str, ...] = ("amx_bf16",)
SCALE_RULES: tuple[str, ...] = ("linear", "sqrt", "none")
#: Trainer keys that must be integers (or null); ``devices`` is checked too when it is a number.
TRAINER_INT_KEYS: tuple[str, ...] = (
    "max_epochs", "max_steps", "check_val_every_n_epoch", "log_every_n_steps", "accumulate_grad_batches",
    "num_sanity_val_steps", "checkpoint_every_n_steps", "num_nodes",
)


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of ``/proc/cpuinfo`` (None where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    return set((_cpuinfo_field("flags") or "").split())


#: The vector / matrix extensions a benchmark header names, widest first (the first present is the CPU's class;
#: AVX512-BF16 and AMX are named beside it: they decide what bf16 buys on the CPU).
_ISA_LADDER: tuple[tuple[str, str], ...] = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))


def cpu_description(model: str | None = None, flags: set[str] | None = None) -> str:
    """The CPU's model name and its widest vector extension, e.g. ``"AMD EPYC 9B14, AVX-512 + BF16"`` or
    ``"AMD EPYC, AVX2"``: the same core count runs the same code up to several times faster or slower by these
    (BENCHMARKS.md), so a benchmark header names them. ``model`` / ``flags``: the machine's, read when None."""
    model = (_cpuinfo_field("model name") if model is None else model) or "unknown CPU"
    flags = _cpu_flags() if flags is None else flags
    isa = next((label for flag, label in _ISA_LADDER if flag in flags), "no AVX2")
    extras = [label for flag, label in (("avx512_bf16", "BF16"), ("amx_bf16", "AMX")) if flag in flags]
    return f"{model}, {' + '.join([isa, *extras])}"


def machine_description() -> str:
    """``"<arch>, <cpu_description()>, <n> cores"``: what a run's timings depend on (``metrics.json``, bench blocks)."""
    return f"{platform.machine()}, {cpu_description()}, {os.cpu_count()} cores"


def resolve_auto_precision(accelerator: Any, cpu_flags: set[str] | None = None,
                           cuda_bf16: bool | None = None) -> tuple[int | str, str]:
    """What ``trainer.precision: auto`` means on this machine, and why (for the log).

    CPU (``accelerator`` cpu, or auto without CUDA): ``bf16-mixed`` where the CPU has bf16 matrix units
    (:data:`CPU_BF16_FLAGS`), else 32. CUDA: ``bf16-mixed`` where the GPU supports bf16 (Ampere or newer), else
    ``16-mixed``. ``cpu_flags`` / ``cuda_bf16``: the machine's, read when None (tests pass them)."""
    accel = str(accelerator or "auto").lower()
    if accel in ("gpu", "cuda") or (accel == "auto" and _cuda_available()):
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if cuda_bf16:
            return "bf16-mixed", "the GPU supports bf16"
        return "16-mixed", "the GPU has no bf16: fp16 with loss scaling"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    units = sorted(flags & set(CPU_BF16_FLAGS))
    if units:
        return "bf16-mixed", f"the CPU has bf16 matrix units ({', '.join(units)})"
    extra = " (AVX512-BF16 alone trains the default no faster)" if "avx512_bf16" in flags else ""
    return 32, f"the CPU has no bf16 matrix units (amx_bf16){extra}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def validate_precision(value: Any) -> int | str:
    """``trainer.precision`` normalised for Lightning (32 -> 32); anything else than 32, bf16-mixed, 16-mixed
    and auto (see :func:`resolve_auto_precision`) raises a ``ValueError`` naming the accepted values."""
    text = str(value).strip().lower()
    if isinstance(value, bool) or (text not in PRECISIONS and text != "auto"):
        raise ValueError(
            f"trainer.precision={value!r} is not supported; use one of 32 (full precision), bf16-mixed "
            f"(Ampere or newer GPUs, CPUs with AMX; no loss scaling), 16-mixed (fp16 AMP with loss scaling) or "
            f"auto (bf16-mixed where the hardware has bf16 matrix units, else 32 on a CPU / 16-mixed on a GPU)"
        )
    return 32 if text in ("32", "32-true") else text


def _as_int(key: str, value: Any) -> int:
    """``value`` as an int: an int, an integral float or a string of digits; anything else raises naming ``key``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError(f"trainer.{key} must be an integer, got {value!r}")


def validate_trainer_integers(trainer_cfg: Mapping[str, Any]) -> dict[str, int]:
    """The integer keys of the trainer config (:data:`TRAINER_INT_KEYS`, and ``devices`` when it is a number) as
    ints; a value that is not an integer raises ``ValueError("trainer.<key> must be an integer, got <value>")``
    naming its own key (``trainer.max_epochs=abc`` is reported as such, not through a key interpolating it).
    Null and absent keys are left out."""
    out: dict[str, int] = {}
    for key in TRAINER_INT_KEYS:
        # .get: this checks what is set; a key may be absent (an optional Trainer argument such as max_steps,
        # added with +trainer.<arg>=..., or a key left out of the directly set ones by prepare_run_config)
        value = trainer_cfg.get(key)
        if value is not None:
            out[key] = _as_int(key, value)
    devices = trainer_cfg.get("devices")  # absent: an interpolated value, checked resolved (prepare_run_config)
    if isinstance(devices, (bool, int, float)):  # strings and lists: num_devices
        out["devices"] = _as_int("devices", devices)
    return out


def num_devices(trainer_cfg: Mapping[str, Any]) -> int:
    """Devices per node as Lightning will count them: an int, a list of ids, "0,1", or -1/"auto" (all
    visible GPUs for a GPU accelerator, 1 on CPU)."""
    devices = require(trainer_cfg, "devices", "trainer")
    accelerator = str(require(trainer_cfg, "accelerator", "trainer") or "auto").lower()  # null: Lightning's auto
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return max(len(devices), 1)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if text.lstrip("-").isdigit():
            devices = int(text)
        elif text == "auto":
            devices = -1 if accelerator in ("gpu", "cuda", "auto") else 1
        else:
            raise ValueError(f"trainer.devices={devices!r}: expected an int, a list of ids, -1 or 'auto'")
    devices = int(devices)
    if devices == -1:
        if accelerator in ("gpu", "cuda", "auto"):
            import torch

            count = torch.cuda.device_count()
            if count == 0 and accelerator != "auto":
                raise ValueError("trainer.devices=-1 with a GPU accelerator, but no GPU is visible")
            return max(count, 1)
        return 1
    if devices <= 0:
        raise ValueError(f"trainer.devices={devices}: must be positive, -1 or 'auto'")
    return devices


def lr_scale_factor(global_batch: int, base_batch_size: int | None, rule: str) -> float:
    """f(global_batch / base_batch_size) for ``rule`` in linear | sqrt | none; 1 when ``base_batch_size``
    is None."""
    rule = str(rule).lower()
    if rule not in SCALE_RULES:
        raise ValueError(f"optim.scale_lr={rule!r}: use one of {', '.join(SCALE_RULES)}")
    if base_batch_size is None or rule == "none":
        return 1.0
    if int(base_batch_size) <= 0:
        raise ValueError(f"optim.base_batch_size={base_batch_size}: must be a positive int or null")
    ratio = int(global_batch) / int(base_batch_size)
    return ratio if rule == "linear" else math.sqrt(ratio)


def compute_scaling(optim: Mapping[str, Any], per_device_batch: int, devices: int, num_nodes: int = 1,
                    accumulate_grad_batches: int = 1) -> dict[str, Any]:
    """The global batch and the effective learning rate (a plain dict, stored as ``optim.scaled``)."""
    base = require(optim, "base_batch_size", "optim")
    base = None if base in (None, "", "null") else int(base)
    rule = str(require(optim, "scale_lr", "optim") or "none")
    world_size = int(devices) * int(num_nodes)
    accumulate = int(accumulate_grad_batches or 1)
    global_batch = int(per_device_batch) * world_size * accumulate
    factor = lr_scale_factor(global_batch, base, rule)
    return {
        "per_device_batch_size": int(per_device_batch),
        "devices": int(devices),
        "num_nodes": int(num_nodes),
        "world_size": world_size,
        "accumulate_grad_batches": accumulate,
        "global_batch_size": global_batch,
        "base_batch_size": base,
        "scale_lr": rule if base is not None else "none",
        "lr_factor": float(factor),
        "base_lr": float(optim["lr"]),
        "lr": float(optim["lr"]) * float(factor),
    }


def describe_scaling(s: Mapping[str, Any]) -> str:
    """One console line: how the global batch and the effective lr came about."""
    batch = (f"global batch {s['global_batch_size']} = {s['per_device_batch_size']} per device x "
             f"{s['devices']} device(s) x {s['num_nodes']} node(s) x {s['accumulate_grad_batches']} accumulation")
    if s["base_batch_size"] is None:
        return f"{batch}; lr {s['lr']:.6g} (optim.base_batch_size=null: not scaled)"
    return (f"{batch}; lr {s['lr']:.6g} = {s['base_lr']:.6g} x {s['scale_lr']}({s['global_batch_size']}/"
            f"{s['base_batch_size']}) = {s['base_lr']:.6g} x {s['lr_factor']:.4g}")


def effective_lr(optim: Mapping[str, Any]) -> float:
    """The lr the optimiser uses: ``optim.scaled.lr`` when set (see :func:`prepare_run_config`), else ``lr``."""
    scaled = optim.get("scaled")  # not a YAML key: written by prepare_run_config (absent before, e.g. in tests)
    return float(scaled["lr"]) if scaled else float(optim["lr"])


def _trainer_scaling(cfg: Mapping[str, Any]) -> dict[str, Any]:
    trainer = cfg["trainer"]
    # null num_nodes / accumulate_grad_batches: Lightning's default (1; sar.train drops null Trainer arguments)
    return compute_scaling(
        cfg["optim"], int(cfg["dataset"]["batch_size"]), num_devices(trainer),
        int(require(trainer, "num_nodes", "trainer") or 1),
        int(require(trainer, "accumulate_grad_batches", "trainer") or 1),
    )


def prepare_run_config(cfg: DictConfig) -> dict[str, Any]:
    """Validate the trainer's integer keys (:func:`validate_trainer_integers`) and ``trainer.precision`` (``auto``
    resolved: :func:`resolve_auto_precision`), and write ``optim.scaled`` (global batch, effective lr) into ``cfg``.

    Logs the scaling line on the console and returns the ``optim.scaled`` dict."""
    with open_dict(cfg):
        # the keys set directly first: an interpolation (check_val_every_n_epoch: ${.max_epochs}) must not be
        # blamed for the value of the key it points to; then every key, resolved
        trainer = cfg.trainer
        direct = [k for k in trainer if not OmegaConf.is_interpolation(trainer, k)]
        validate_trainer_integers({k: trainer[k] for k in direct})
        for key, value in validate_trainer_integers(OmegaConf.to_container(trainer, resolve=True)).items():
            if key in direct:
                trainer[key] = value
        precision = validate_precision(require(cfg.trainer, "precision", "trainer"))
        if precision == "auto":  # resolved here, so config.yaml and the checkpoint store what ran
            precision, why = resolve_auto_precision(cfg.trainer.get("accelerator"))
            log.info("trainer.precision=auto -> %s: %s", precision, why)
        cfg.trainer.precision = precision
        scaled = _trainer_scaling(OmegaConf.to_container(cfg, resolve=True))
        cfg.optim.scaled = scaled
    log.info("%s", describe_scaling(scaled))
    if scaled["world_size"] * scaled["accumulate_grad_batches"] > 1 and scaled["base_batch_size"] is None:
        log.warning("the global batch (%d) depends on the device count but optim.base_batch_size is null: the lr "
                    "is not scaled (set optim.base_batch_size to the batch the lr was tuned for)",
                    scaled["global_batch_size"])
    return scaled
