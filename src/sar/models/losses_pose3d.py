"""Losses of the monocular 3D task (task=pose3d; docs/pose3d.md). ``loss(outputs, targets) -> {"total", parts}``.

Targets (batched, from :mod:`sar.codecs.pose3d`): ``uvd`` (B, K, 3), ``keypoint_weights`` (B, K) and
``depth_weights`` (B, K; 0 for 2D-only samples: their depth term is dropped). A batch without a positive weight
gives exactly 0 with a graph, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sar.models.flow import RealNVP
from sar.models.losses import quality_focal_loss, rle_residual, rle_terms

__all__ = ["L1Coord3DLoss", "RLE3DLoss", "SAR3DLoss", "sar3d_nll"]

_LOG_EPS = math.log(1e-6)
Tensors = Mapping[str, torch.Tensor]


def _targets(targets: Tensors, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(uvd with 0 where the weight is 0, valid (B, K) bool, component weights (B, K, 3): w, w, w * depth_w)."""
    w = targets["keypoint_weights"].to(like)
    valid = w > 0
    dw = targets["depth_weights"].to(like) * w
    gt = torch.where(valid[..., None], targets["uvd"].to(like), torch.zeros_like(like))
    return gt, valid, torch.stack([w, w, dw], dim=-1)


def sar3d_nll(logits: torch.Tensor, offsets: torch.Tensor, depth: torch.Tensor, target: torch.Tensor,
              depth_on: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Per-(image, joint) SAR-3D loss (B, K): ``-log(sum_t w_t exp(-lambda (|du| + |dv| + |dd|)) + 1e-6)`` with
    ``w = sigmoid(s) / sum sigmoid(s)``, the cell hypothesis ``(p_t - o_t - 0.5, d_t)`` and ``target`` (B, K, 3) in
    RLE's frame; ``depth_on`` (B, K) in {0, 1} drops the depth term (2D-only samples). Log-space, as ``sar_nll``."""
    h, w = logits.shape[-2:]
    xs = torch.arange(w, device=logits.device, dtype=logits.dtype) / w
    ys = torch.arange(h, device=logits.device, dtype=logits.dtype) / h
    gx, gy = xs.repeat(h) - 0.5, ys.repeat_interleave(w) - 0.5
    log_c = F.logsigmoid(logits.flatten(2))
    log_w = log_c - torch.logsumexp(log_c, dim=-1, keepdim=True)
    off = offsets.flatten(3)
    dist = ((gx - off[:, :, 0] - target[..., 0:1]).abs() + (gy - off[:, :, 1] - target[..., 1:2]).abs()
            + depth_on[..., None] * (depth.flatten(2) - target[..., 2:3]).abs())
    log_mix = torch.logsumexp(log_w - lambda_ * dist, dim=-1)
    return -torch.logaddexp(log_mix, log_mix.new_tensor(_LOG_EPS))


class SAR3DLoss(nn.Module):
    """SAR-3D (our formulation, docs/method.md "3D"): ``total = loss_reg + aux_weight * loss_hm``; ``loss_reg`` is
    the mean of :func:`sar3d_nll` over the joints with weight > 0, ``loss_hm`` the top-down SAR auxiliary term
    (quality focal loss over the maps of valid joints / #(target > 0.7)); skipped without a heatmap output."""

    def __init__(self, lambda_: float = 16.0, aux_weight: float = 1.0, gamma: float = 2.0) -> None:
        super().__init__()
        self.lambda_, self.aux_weight, self.gamma = float(lambda_), float(aux_weight), float(gamma)

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        logits = outputs["logits"].float()
        gt, valid, comp = _targets(targets, logits.new_zeros(logits.shape[:2] + (3,)))
        depth_on = (comp[..., 2] > 0).to(logits)
        nll = sar3d_nll(logits, outputs["offsets"].float(), outputs["depth"].float(), gt, depth_on, self.lambda_)
        loss_reg = torch.where(valid, nll, torch.zeros_like(nll)).sum() / valid.sum().clamp_min(1)
        loss_hm = loss_reg.new_zeros(())
        if "heatmap" in outputs and self.aux_weight != 0:
            hm = outputs["heatmap"].float()
            target = targets["heatmap"].to(hm)
            mask = valid[..., None, None]
            qfl = quality_focal_loss(hm, target, self.gamma)
            loss_hm = torch.where(mask, qfl, torch.zeros_like(qfl)).sum() / ((target > 0.7) & mask).sum().clamp_min(1)
        return {"total": loss_reg + self.aux_weight * loss_hm, "loss_reg": loss_reg, "loss_hm": loss_hm}


class L1Coord3DLoss(nn.Module):
    """Direct 3D regression: ``loss_weight * sum_{b,k,c} w_bkc |pred - gt| / sum_{b,k} w_bk`` (the depth component
    weighted by ``depth_weights``), i.e. the mean over valid joints of the L1 distance in (u, v, d)."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        pred = outputs["coords"].float()
        gt, valid, comp = _targets(targets, pred)
        l1 = torch.where(valid[..., None], (pred - gt).abs() * comp, torch.zeros_like(pred)).sum()
        norm = comp[..., 0].sum()
        loss = self.loss_weight * l1 / torch.where(norm > 0, norm, torch.ones_like(norm))
        return {"total": loss, "loss_reg": loss}


class RLE3DLoss(nn.Module):
    """RLE-3D [C, RLE ``regression_nf_3d``]: a 3-D RealNVP for joints with depth and a 2-D RealNVP (on u, v) for
    2D-only samples. With ``eps = (mu_hat - mu) / sigma`` per joint:
    ``nf_c = log sigma_c - log G(eps)`` (``log G`` of the 3-D flow, or of the 2-D flow on the first two
    components, broadcast over the components) and ``q_c = log(sigma_c sqrt(2 pi)) + |mu_hat_c - mu_c| /
    (sqrt(2) sigma_c + 1e-9)``; ``loss = loss_weight * sum_{b,k,c} w_bkc (nf_c + q_c) / B`` with the component
    weights ``(w, w, w * depth_w)`` (the 2D top-down RLE's form, extended). The flows run in float32."""

    def __init__(self, loss_weight: float = 1.0, num_pairs: int = 3, hidden: int = 64) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.flow3d = RealNVP(num_pairs=int(num_pairs), hidden=int(hidden), dim=3)
        self.flow2d = RealNVP(num_pairs=int(num_pairs), hidden=int(hidden), dim=2)

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        coords = outputs["coords"]
        with torch.autocast(device_type=coords.device.type, enabled=False):
            gt, valid, comp = _targets(targets, coords.float())
            mu_hat, sigma, gt, eps = rle_residual(outputs, gt, valid[..., None])
            b, k, _ = mu_hat.shape
            is3d = comp[..., 2] > 0
            log3 = self.flow3d.log_prob(eps.reshape(-1, 3)).reshape(b, k)
            log2 = self.flow2d.log_prob(eps[..., :2].reshape(-1, 2)).reshape(b, k)
            log_phi = torch.where(is3d, log3, log2)[..., None]
            loss_nf, loss_q = rle_terms(mu_hat, gt, sigma, log_phi, comp)
            total = self.loss_weight * (loss_nf + loss_q)
        return {"total": total, "loss_nf": loss_nf, "loss_q": loss_q}
