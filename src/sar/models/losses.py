"""Losses: SAR mixture NLL + quality focal heatmap loss, and the baselines (heatmap MSE, heatmap + offset,
direct-regression L1, RLE). docs/heads.md describes each.

Every loss is ``loss(outputs, targets) -> dict(total=..., <parts>...)`` with batched codec targets
(torch). A batch without any keypoint of weight > 0 (or an empty batch) gives exactly 0 with a gradient
graph, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from sar.models.flow import RealNVP

__all__ = [
    "HeatmapMSELoss",
    "HeatmapOffsetLoss",
    "L1CoordLoss",
    "RLELoss",
    "SARLoss",
    "build_loss",
    "quality_focal_loss",
    "sar_nll",
]

_LOG_EPS = math.log(1e-6)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Head outputs or batched codec targets, by name.
Tensors: TypeAlias = Mapping[str, torch.Tensor]


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


def _valid_coords(targets: Tensors, key: str, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The target coordinates ``targets[key]`` (B,K,2) in ``like``'s dtype and device, 0 for the keypoints that are
    not ``valid`` (B,K): no NaN or inf of an unlabelled keypoint reaches the graph."""
    gt = targets[key].to(like)
    return torch.where(valid[..., None], gt, torch.zeros_like(gt))


class ScaledLoss(nn.Module):
    """A loss whose total is multiplied by ``loss_weight`` (its single constructor argument here)."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)


class SARLoss(nn.Module):
    """SAR objective (docs/method.md): ``total = loss_reg + aux_weight * loss_hm``.

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

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        logits = outputs["logits"].float()  # float32 math under autocast
        valid = targets["keypoint_weights"].to(logits.device) > 0  # (B,K)
        gt = _valid_coords(targets, "keypoints_norm", valid, logits)
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


class HeatmapMSELoss(ScaledLoss):
    """mmpose ``KeypointMSELoss(use_target_weight=True)``: ``mean_{B,K,H,W}(w_k * (pred - target)^2)``.

    The mean runs over all B*K*H*W elements (zero-weight keypoints count in the denominator), without the
    0.5 factor of the original JointsMSELoss. An empty batch gives 0.
    """

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        pred = outputs["heatmap"].float()
        target = targets["heatmap"].to(pred)
        weights = targets["keypoint_weights"].to(pred)[..., None, None]
        err = (pred - target).pow(2) * weights
        loss = err.mean() if err.numel() > 0 else err.sum()
        loss = self.loss_weight * loss
        return {"total": loss, "loss_hm": loss}


class HeatmapOffsetLoss(nn.Module):
    """Heatmap + offset baseline (docs/heads.md): ``total = hm_weight * loss_hm + offset_weight *
    loss_offset``, both averaged over the (image, keypoint) pairs with weight > 0.

    * ``loss_hm``: squared error of ``outputs["heatmap"]`` against the MSRA target ``targets["heatmap"]``,
      *summed* over the cells of a keypoint's map (then averaged over valid keypoints). This is mmpose's
      ``KeypointMSELoss`` rescaled by ``B*K*H*W / n_valid``: the per-map sum keeps the heatmap term of the
      same order as the offset term (a fresh head gives about ``pi * sigma^2`` vs. about 2.5), whereas the
      per-pixel mean would be ~1000x smaller and let the offsets dominate the shared features.
    * ``loss_offset``: L1 distance, in map cells (x error times W plus y error times H), between the cell's
      hypothesis ``p_t - o_t`` and the ground truth ``keypoints_norm``, averaged over the supervised cells of
      the keypoint: the cells whose centre lies within ``offset_radius`` cells (Euclidean) of the exact
      ground-truth map location. A keypoint with no such cell on the map contributes 0.

    Targets: ``keypoints_norm`` (B,K,2), ``heatmap`` (B,K,H,W), ``keypoint_weights`` (B,K).
    """

    def __init__(self, hm_weight: float = 1.0, offset_weight: float = 1.0, offset_radius: float = 3.0) -> None:
        super().__init__()
        if offset_radius < 0:
            raise ValueError(f"offset_radius must be >= 0, got {offset_radius}")
        self.hm_weight = float(hm_weight)
        self.offset_weight = float(offset_weight)
        self.offset_radius = float(offset_radius)

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        hm = outputs["heatmap"].float()
        h, w = hm.shape[-2:]
        valid = targets["keypoint_weights"].to(hm.device) > 0  # (B,K)
        n_valid = valid.sum().clamp_min(1)

        target_hm = targets["heatmap"].to(hm)
        sq = (hm - target_hm).pow(2).flatten(2).sum(-1)  # (B,K)
        loss_hm = torch.where(valid, sq, torch.zeros_like(sq)).sum() / n_valid

        gt = _valid_coords(targets, "keypoints_norm", valid, hm)
        gx, gy = _grid(h, w, hm.device, hm.dtype)  # (HW,)
        off = outputs["offsets"].float().flatten(3)  # (B,K,2,HW)
        err = ((gx - off[:, :, 0] - gt[..., 0:1]).abs() * w
               + (gy - off[:, :, 1] - gt[..., 1:2]).abs() * h)  # (B,K,HW), map cells
        dist2 = ((gx - gt[..., 0:1]) * w).pow(2) + ((gy - gt[..., 1:2]) * h).pow(2)
        near = (dist2 <= self.offset_radius**2) & valid[..., None]
        per_kpt = torch.where(near, err, torch.zeros_like(err)).sum(-1) / near.sum(-1).clamp_min(1)
        loss_offset = per_kpt.sum() / n_valid

        total = self.hm_weight * loss_hm + self.offset_weight * loss_offset
        return {"total": total, "loss_hm": loss_hm, "loss_offset": loss_offset}


class L1CoordLoss(ScaledLoss):
    """Direct-regression L1 (docs/heads.md): ``loss_weight * sum_{b,k} w_bk (|dx| + |dy|) / sum w``.

    ``outputs["coords"]`` (B,K,2) and ``targets["keypoints_norm"]`` (B,K,2) are normalised crop coordinates;
    ``w`` = ``keypoint_weights`` (B,K), so with 0/1 weights this is the mean over valid keypoints of the L1
    distance. 0 when no weight is positive.
    """

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        pred = outputs["coords"].float()
        weights = targets["keypoint_weights"].to(pred)
        valid = weights > 0
        gt = _valid_coords(targets, "keypoints_norm", valid, pred)
        l1 = (pred - gt).abs().sum(-1)  # (B,K)
        w = torch.where(valid, weights, torch.zeros_like(weights))
        norm = w.sum()
        loss = (l1 * w).sum() / torch.where(norm > 0, norm, torch.ones_like(norm))
        loss = self.loss_weight * loss
        return {"total": loss, "loss_reg": loss}


class RLELoss(ScaledLoss):
    """Residual log-likelihood estimation loss (Li et al. 2021), official-code form (docs/heads.md).

    The RealNVP flow ``G_phi`` (:class:`sar.models.flow.RealNVP`) is owned by this module, so its parameters
    are trained with the network when the loss is a submodule of the LightningModule.

    With ``mu_hat`` = ``outputs["coords"]``, ``sigma`` = ``outputs["sigma"]`` (B,K,2), ``mu`` =
    ``targets["keypoints_rle"]`` (all in the RLE frame, normalised - 0.5) and ``eps = (mu_hat - mu) / sigma``,
    per keypoint ``k`` and axis ``c``:

    * flow term ``nf_kc = log sigma_kc - log G_phi(eps_k)``: ``log G_phi`` is one number per keypoint (a
      (B,K,1) tensor) broadcast over both axes, so ``-log G_phi`` is counted twice per keypoint, exactly as
      in the official code;
    * Laplace term ``q_kc = log(sigma_kc * sqrt(2 pi)) + |mu_hat_kc - mu_kc| / (sqrt(2) * sigma_kc + 1e-9)``
      (official ``logQ`` with ``amp = 1/sqrt(2 pi)``). Note the constant: a normalised Laplace of scale
      ``b = sigma / sqrt(2)`` would have ``log(sqrt(2) sigma)``; the official ``log(sqrt(2 pi) sigma)``
      differs by the constant ``log(sqrt(pi))`` per axis, which changes the loss value, not its gradient.
      mmpose's variant (``log(2 sigma) + |eps|``) uses a different scale and is not what is implemented.

    ``loss = loss_weight * sum_{b,k,c} w_bk (nf_kc + q_kc) / B`` with ``w`` = ``keypoint_weights`` (B,K),
    i.e. summed over keypoints and divided by the batch size (not by the number of valid keypoints). Logged
    parts: ``loss_nf`` and ``loss_q`` (the two sums, same normalisation). ``sigma`` is clamped at 1e-9
    before the logarithm (a guard; the sigmoid only gets there for logits below about -20). The flow runs in
    float32 with autocast disabled.
    """

    def __init__(self, loss_weight: float = 1.0, num_pairs: int = 3, hidden: int = 64) -> None:
        super().__init__(loss_weight)
        self.flow = RealNVP(num_pairs=int(num_pairs), hidden=int(hidden))

    def forward(self, outputs: Tensors, targets: Tensors) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=outputs["coords"].device.type, enabled=False):
            weights = targets["keypoint_weights"].float()
            mu_hat, sigma, gt, eps = rle_residual(outputs, targets["keypoints_rle"], (weights > 0)[..., None])
            b, k, _ = mu_hat.shape
            log_phi = self.flow.log_prob(eps.reshape(-1, 2)).reshape(b, k, 1)
            loss_nf, loss_q = rle_terms(mu_hat, gt, sigma, log_phi, weights[..., None])
            total = self.loss_weight * (loss_nf + loss_q)
        return {"total": total, "loss_nf": loss_nf, "loss_q": loss_q}


def rle_residual(outputs: Tensors, gt: torch.Tensor,
                 valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The RLE heads' outputs in float32 and the normalised residual: ``(mu_hat, sigma clamped at 1e-9, gt,
    eps = (mu_hat - gt) / sigma)``; ``gt`` is replaced by the detached prediction where ``valid`` is false (no
    NaN/inf of an unlabelled target into the graph). Call it with autocast disabled."""
    mu_hat = outputs["coords"].float()
    sigma = outputs["sigma"].float().clamp_min(1e-9)
    gt = torch.where(valid, gt.to(mu_hat), mu_hat.detach())
    return mu_hat, sigma, gt, (mu_hat - gt) / sigma


def rle_terms(mu_hat: torch.Tensor, gt: torch.Tensor, sigma: torch.Tensor, log_phi: torch.Tensor,
              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RLE's two sums (float32, :class:`RLELoss`): ``nf = log sigma - log phi`` (``log_phi`` (B,K,1), the flow's
    log-density broadcast over the components) and ``q = log(sigma sqrt(2 pi)) + |mu_hat - gt| / (sqrt(2) sigma +
    1e-9)``, each weighted by ``weight`` (broadcastable to (B,K,C); entries with weight 0 left out) and summed over
    the batch, divided by the batch size. Returns (loss_nf, loss_q)."""
    log_sigma = sigma.log()
    nf = log_sigma - log_phi
    q = log_sigma + _LOG_SQRT_2PI + (mu_hat - gt).abs() / (math.sqrt(2.0) * sigma + 1e-9)
    on = (weight > 0).expand_as(nf)
    batch = max(mu_hat.shape[0], 1)
    loss_nf = torch.where(on, nf * weight, torch.zeros_like(nf)).sum() / batch
    loss_q = torch.where(on, q * weight, torch.zeros_like(q)).sum() / batch
    return loss_nf, loss_q


#: Loss ``type`` names of configs written before losses were built by ``_target_`` (old checkpoints).
LEGACY_TYPES: dict[str, str] = {
    "sar": "sar.models.losses.SARLoss",
    "mse": "sar.models.losses.HeatmapMSELoss",
    "heatmap_mse": "sar.models.losses.HeatmapMSELoss",
    "heatmap_offset": "sar.models.losses.HeatmapOffsetLoss",
    "l1": "sar.models.losses.L1CoordLoss",
    "regression": "sar.models.losses.L1CoordLoss",
    "rle": "sar.models.losses.RLELoss",
}


def translate_legacy(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A loss config of the old ``type:`` form as a ``_target_`` config (others are returned as they are)."""
    from sar.utils.instantiate import from_legacy_type

    cfg = dict(cfg)
    if "lambda" in cfg and "type" in cfg:
        cfg["lambda_"] = cfg.pop("lambda")
    return from_legacy_type(cfg, LEGACY_TYPES, "loss")


def build_loss(cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate a loss config (``_target_`` + the class's keys, conf/heads/<family>/<head>.yaml); old
    ``type:`` configs are translated. A misspelt key is a ValueError naming it."""
    from sar.utils.instantiate import build

    return build(translate_legacy(cfg), "head.loss")
