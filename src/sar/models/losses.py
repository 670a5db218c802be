"""Losses: SAR mixture NLL + quality focal heatmap loss, and the heatmap MSE baseline.

Every loss is ``loss(outputs, targets) -> dict(total=..., <parts>...)`` with batched codec targets
(torch). A batch without any keypoint of weight > 0 (or an empty batch) gives exactly 0 with a gradient
graph, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HeatmapMSELoss", "SARLoss", "build_loss", "quality_focal_loss", "sar_nll"]

_LOG_EPS = math.log(1e-6)


def _grid(
    height: int, width: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised cell positions ``(j / W, i / H)`` as flat (H*W,) x and y vectors."""
    xs = torch.arange(width, device=device, dtype=dtype) / width
    ys = torch.arange(height, device=device, dtype=dtype) / height
    return xs.repeat(height), ys.repeat_interleave(width)


def sar_nll(
    logits: torch.Tensor, offsets: torch.Tensor, target: torch.Tensor, lambda_: float
) -> torch.Tensor:
    """Per-(image, keypoint) SAR loss (B,K): ``-log(sum_t w_t exp(-lambda * L1(K_t, K*)) + 1e-6)``.

    ``w_t = sigmoid(s_t) / sum sigmoid(s)``, ``K_t = p_t - o_t`` with ``p_t = (j/W, i/H)``; ``target`` (B,K,2)
    is the normalised ground truth. Computed in log space:
    ``log w = logsigmoid(s) - logsumexp(logsigmoid(s))``,
    ``A = logsumexp(log w + log r)`` and ``-log(exp(A) + 1e-6) = -logaddexp(A, log 1e-6)``, which equals the
    formula exactly and never overflows.
    """
    h, w = logits.shape[-2:]
    gx, gy = _grid(h, w, logits.device, logits.dtype)
    log_c = F.logsigmoid(logits.flatten(2))  # (B,K,HW)
    log_w = log_c - torch.logsumexp(log_c, dim=-1, keepdim=True)
    off = offsets.flatten(3)  # (B,K,2,HW)
    dist = (gx - off[:, :, 0] - target[..., 0:1]).abs() + (gy - off[:, :, 1] - target[..., 1:2]).abs()
    log_mix = torch.logsumexp(log_w - lambda_ * dist, dim=-1)  # (B,K)
    return -torch.logaddexp(log_mix, log_mix.new_tensor(_LOG_EPS))


def quality_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise quality focal loss (GFL) on heatmap logits against soft targets in [0, 1].

    Positives (target > 0): ``BCE(h, target) * |target - sigmoid(h)|^gamma``; negatives:
    ``BCE(h, 0) * sigmoid(h)^gamma``.
    """
    prob = torch.sigmoid(logits)
    pos = target > 0
    bce_pos = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce_neg = F.softplus(logits)  # BCE(h, 0)
    return torch.where(pos, bce_pos * (target - prob).abs().pow(gamma), bce_neg * prob.pow(gamma))


class SARLoss(nn.Module):
    """SAR objective (sar-method.md 2.2): ``total = loss_reg + aux_weight * loss_hm``.

    * ``loss_reg``: mean of :func:`sar_nll` over the (image, keypoint) pairs with weight > 0 (a mask: the
      weight's value beyond > 0 is not used, as in the official code).
    * ``loss_hm``: :func:`quality_focal_loss` on ``outputs["heatmap"]`` against ``targets["heatmap"]``, summed
      over the maps of valid keypoints and divided by ``max(1, #(target > 0.7))`` over the same maps. Skipped
      (0) when the head has no heatmap output or ``aux_weight == 0``.

    Targets: ``keypoints_norm`` (B,K,2), ``heatmap`` (B,K,H,W), ``keypoint_weights`` (B,K).
    """

    def __init__(self, lambda_: float = 16.0, aux_weight: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)
        self.aux_weight = float(aux_weight)
        self.gamma = float(gamma)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        logits = outputs["logits"].float()  # float32 math under autocast
        valid = targets["keypoint_weights"].to(logits.device) > 0  # (B,K)
        gt = targets["keypoints_norm"].to(logits)
        gt = torch.where(valid[..., None], gt, torch.zeros_like(gt))  # no NaN/inf into the graph
        nll = sar_nll(logits, outputs["offsets"].float(), gt, self.lambda_)
        n_valid = valid.sum().clamp_min(1)
        loss_reg = torch.where(valid, nll, torch.zeros_like(nll)).sum() / n_valid

        if "heatmap" in outputs and self.aux_weight != 0:
            hm = outputs["heatmap"].float()
            target = targets["heatmap"].to(hm)
            mask = valid[..., None, None]
            qfl = quality_focal_loss(hm, target, self.gamma)
            num_pos = ((target > 0.7) & mask).sum().clamp_min(1)
            loss_hm = torch.where(mask, qfl, torch.zeros_like(qfl)).sum() / num_pos
            total = loss_reg + self.aux_weight * loss_hm
        else:
            loss_hm = loss_reg.new_zeros(())
            total = loss_reg
        return {"total": total, "loss_reg": loss_reg, "loss_hm": loss_hm}


class HeatmapMSELoss(nn.Module):
    """mmpose ``KeypointMSELoss(use_target_weight=True)``: ``mean_{B,K,H,W}(w_k * (pred - target)^2)``.

    The mean runs over all B*K*H*W elements (zero-weight keypoints count in the denominator), without the
    0.5 factor of the original JointsMSELoss. An empty batch gives 0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        pred = outputs["heatmap"].float()
        target = targets["heatmap"].to(pred)
        weights = targets["keypoint_weights"].to(pred)[..., None, None]
        err = (pred - target).pow(2) * weights
        loss = err.mean() if err.numel() > 0 else err.sum()
        loss = self.loss_weight * loss
        return {"total": loss, "loss_hm": loss}


def build_loss(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a loss from ``cfg.type``: ``"sar"`` (keys lambda_ / lambda, aux_weight, gamma) or ``"mse"``
    (alias ``"heatmap_mse"``; key loss_weight). Unknown keys raise ``ValueError``."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind == "sar":
        if "lambda" in cfg:
            cfg["lambda_"] = cfg.pop("lambda")
        allowed = {"lambda_", "aux_weight", "gamma"}
        factory: type[nn.Module] = SARLoss
    elif kind in ("mse", "heatmap_mse"):
        allowed = {"loss_weight"}
        factory = HeatmapMSELoss
    else:
        raise ValueError(f"unknown loss type {kind!r} (known: sar, mse)")
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"unknown keys for loss {kind!r}: {sorted(unknown)} (allowed: {sorted(allowed)})")
    return factory(**{k: float(v) for k, v in cfg.items()})
