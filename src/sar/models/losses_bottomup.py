"""Bottom-up losses (docs/bottomup.md): ``SARAELoss`` (B1), ``SARCenterLoss`` (B2), ``AELoss`` (HigherHRNet),
``DEKRLoss`` (DEKR). Each is ``forward(outputs, targets) -> {"total": ..., <parts>}`` on the batched codec
targets of :mod:`sar.codecs.bottomup` (torch tensors).

Common rules: the loss mask (``targets["mask"]`` (B,H,W), 0 = ignored cell) is honoured by every map term;
a batch without any person gives 0 for the person terms (a graph-connected 0, never NaN).

SAR mixture (docs/method.md "Multi-person", our formulation, the top-down objective of docs/method.md per target): for a target with
ground truth ``K*`` and normalisation set Omega, ``c_t = sigmoid(s_t)``, ``w_t = c_t / sum_Omega c``,
``r_t = exp(-lambda / s * d_t)``, ``loss = -log(sum_Omega w_t r_t + 1e-6)``, computed in log space like
:func:`sar.models.losses.sar_nll`. Switches (all [I], docs/method.md "Multi-person", defaults first):

* ``normalisation``: ``global`` = the whole map's unmasked cells | ``local`` = the person's ``region`` box
  (its keypoint cells' box grown by the codec's ``region_margin``) minus masked cells. The target's own cell
  (its keypoint cell for B1, its centre cell for B2) is always in Omega, so Omega is never empty.
* ``kernel``: ``person`` (``s`` = the codec's ``scale`` ``sqrt(area / (w * h))``, ``lambda_`` default 12.5) |
  ``image`` (``s = 1``, ``lambda_`` default 16).
* B2 ``pose_kernel``: ``mean`` (``d_t`` = mean over the person's visible keypoints of the L1 distance between
  the cell's pose hypothesis ``P_t,k = p_t - O_t,k`` and ``K*_k``, in normalised units) | ``per_keypoint``
  (the product of the per-keypoint kernels: ``d_t`` = the sum over visible keypoints).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sar.codecs.sar import sar_grid
from sar.models.losses import quality_focal_loss

__all__ = ["AELoss", "DEKRLoss", "SARAELoss", "SARCenterLoss", "ae_pull_push", "local_offset_loss",
           "masked_focal_loss", "masked_mse_loss", "mixture_nll"]

_LOG_EPS = math.log(1e-6)


def _zero(ref: torch.Tensor) -> torch.Tensor:
    """A 0 connected to ``ref``'s graph (so backward works on an empty batch)."""
    return ref.sum() * 0.0


def _batch_mean(values: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean over the batch (0 for an empty batch)."""
    return values.mean() if values.numel() else _zero(ref)


def masked_focal_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      gamma: float = 2.0) -> torch.Tensor:
    """The top-down auxiliary loss (:func:`sar.models.losses.quality_focal_loss`, docs/method.md) on
    (B,C,H,W) maps with the (B,H,W) loss mask: summed over unmasked cells, divided by
    ``max(1, #(target > 0.7 on unmasked cells))``."""
    m = (mask > 0)[:, None].expand_as(logits)
    qfl = quality_focal_loss(logits, target, gamma)
    num_pos = ((target > 0.7) & m).sum().clamp_min(1)
    return torch.where(m, qfl, torch.zeros_like(qfl)).sum() / num_pos


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    background: float = 0.1) -> torch.Tensor:
    """DEKR's weighted MSE heatmap loss on raw (B,C,H,W) maps (weight 1 on cells with target > 0, ``background``
    elsewhere, 0 on masked cells), normalised as :func:`masked_focal_loss` (summed, divided by
    ``max(1, #(target > 0.7 on unmasked cells))``) so that one ``aux_weight`` means about as much for either."""
    m = (mask > 0)[:, None].expand_as(pred)
    weight = torch.where(target > 0, 1.0, background) * m
    num_pos = ((target > 0.7) & m).sum().clamp_min(1)
    return ((pred - target) ** 2 * weight).sum() / num_pos


def mixture_nll(log_c: torch.Tensor, allowed: torch.Tensor, dist: torch.Tensor,
                lam: torch.Tensor) -> torch.Tensor:
    """``-log(sum_Omega w_t exp(-lam * d_t) + 1e-6)`` per row: ``log_c`` (n,T) log-sigmoid selector, ``allowed``
    (n,T) bool (Omega, non-empty), ``dist`` (n,T), ``lam`` (n,). ``w = c / sum_Omega c``."""
    neg = torch.full_like(log_c, -float("inf"))
    log_c = torch.where(allowed, log_c, neg)
    log_w = log_c - torch.logsumexp(log_c, dim=-1, keepdim=True)
    log_mix = torch.logsumexp(torch.where(allowed, log_w - lam[:, None] * dist, neg), dim=-1)
    return -torch.logaddexp(log_mix, log_mix.new_tensor(_LOG_EPS))


def ae_pull_push(tags: torch.Tensor, cells: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative-embedding loss per image, as HigherHRNet's ``AELoss`` (``single_tag_loss``), docs/method.md "Multi-person".

    ``tags`` (B,K,H,W); ``cells`` (B,P,K) flat cell of each person's keypoint; ``valid`` (B,P,K) bool. Per
    image with ``n`` people that have a valid keypoint: the tag of a keypoint is its own channel's value at its
    cell; ``m_i`` = person i's mean tag; ``pull = sum_i mean_k (t_ik - m_i)^2 / n``;
    ``push = sum_{i != j} exp(-(m_i - m_j)^2) / (n (n - 1)) * 0.5`` (HigherHRNet's 0.5 on the ordered pairs,
    i.e. half the mean over unordered pairs), 0 when ``n < 2``. Returns (pull (B,), push (B,)).
    """
    p = valid.shape[1]
    t = tags.flatten(2).gather(2, cells.transpose(1, 2).clamp_min(0)).transpose(1, 2)  # (B,P,K)
    v = valid.to(t.dtype)
    nk = v.sum(-1)  # (B,P)
    has = nk > 0
    mean = (t * v).sum(-1) / nk.clamp_min(1)
    pull_i = ((t - mean[..., None]) ** 2 * v).sum(-1) / nk.clamp_min(1)
    n = has.sum(-1).to(t.dtype)  # (B,)
    pull = torch.where(has, pull_i, torch.zeros_like(pull_i)).sum(-1) / n.clamp_min(1)
    pair = has[:, :, None] & has[:, None, :] & ~torch.eye(p, dtype=torch.bool, device=t.device)[None]
    e = torch.exp(-((mean[:, :, None] - mean[:, None, :]) ** 2))
    push = torch.where(pair, e, torch.zeros_like(e)).sum((1, 2)) / (n * (n - 1)).clamp_min(1) * 0.5
    return pull, push


def _omega(mask: torch.Tensor, b: torch.Tensor, own: torch.Tensor, region: torch.Tensor | None,
           width: int) -> torch.Tensor:
    """(n,T) Omega per target: unmasked cells of image ``b`` (intersected with ``region`` (n,4) when given),
    plus the target's own cell ``own`` (n,)."""
    flat = mask.flatten(1)[b] > 0  # (n,T)
    if region is not None:
        t = flat.shape[1]
        cols = torch.arange(t, device=flat.device) % width
        rows = torch.arange(t, device=flat.device) // width
        inside = ((cols[None] >= region[:, 0:1]) & (cols[None] <= region[:, 2:3])
                  & (rows[None] >= region[:, 1:2]) & (rows[None] <= region[:, 3:4]))
        flat = flat & inside
    return flat | F.one_hot(own, flat.shape[1]).bool()


def local_offset_loss(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """PersonLab's short-range offset loss (docs/method.md "Multi-person", our addition): the L1 distance (x + y)
    between ``local_offsets`` (B,K,2,H,W) and the codec's targets (units of ``local_radius`` cells), summed over the
    cells of ``local_weight`` (B,K,H,W) (in reach of a keypoint, unmasked) and divided by their number (1 when
    none)."""
    if "local_offsets" not in targets:
        raise ValueError("the head gives local_offsets but the codec wrote no targets for them: set "
                         "head.codec.local_radius > 0")
    pred = outputs["local_offsets"].float()
    weight = targets["local_weight"].to(pred)
    l1 = (pred - targets["local_offsets"].to(pred)).abs().sum(2)  # (B,K,H,W)
    return (l1 * weight).sum() / weight.sum().clamp_min(1.0)


class _SARMixin(nn.Module):
    """Switches shared by the two SAR losses (module docstring)."""

    #: trailing auxiliary channels that stay focal with ``aux_loss: mse`` (B2's centre map)
    focal_channels = 0

    def __init__(self, normalisation: str, kernel: str, lambda_: float | None, aux_weight: float,
                 gamma: float, aux_loss: str = "focal") -> None:
        super().__init__()
        if aux_loss not in ("focal", "mse"):
            raise ValueError(f"aux_loss must be 'focal' or 'mse', got {aux_loss!r}")
        self.aux_loss = aux_loss
        if normalisation not in ("global", "local"):
            raise ValueError(f"normalisation must be 'global' or 'local', got {normalisation!r}")
        if kernel not in ("person", "image"):
            raise ValueError(f"kernel must be 'person' or 'image', got {kernel!r}")
        self.normalisation, self.kernel = normalisation, kernel
        self.lambda_ = float(lambda_) if lambda_ is not None else (12.5 if kernel == "person" else 16.0)
        self.aux_weight = float(aux_weight)
        self.gamma = float(gamma)

    def _lam(self, targets: Mapping[str, torch.Tensor], b: torch.Tensor, p: torch.Tensor,
             ref: torch.Tensor) -> torch.Tensor:
        if self.kernel == "image":
            return ref.new_full(b.shape, self.lambda_)
        return self.lambda_ / targets["scale"].to(ref)[b, p].clamp_min(1e-6)

    def _region(self, targets: Mapping[str, torch.Tensor], b: torch.Tensor, p: torch.Tensor) -> torch.Tensor | None:
        return targets["region"].to(b.device)[b, p] if self.normalisation == "local" else None

    def _aux(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
             mask: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if "heatmap" not in outputs or self.aux_weight == 0:
            return _zero(ref)
        hm = outputs["heatmap"].float()
        target = targets["heatmap"].to(hm)
        if self.aux_loss == "mse":  # the keypoint channels; B2's last (centre) channel stays focal
            n = hm.shape[1] - self.focal_channels
            return (masked_mse_loss(hm[:, :n], target[:, :n], mask)
                    + masked_focal_loss(hm[:, n:], target[:, n:], mask, self.gamma))
        return masked_focal_loss(hm, target, mask, self.gamma)


class SARAELoss(_SARMixin):
    """B1 ``sar_ae`` (docs/method.md "Multi-person", our formulation): ``total = loss_reg + pull_weight * loss_pull + push_weight *
    loss_push + aux_weight * loss_hm``.

    * ``loss_reg``: the SAR mixture (module docstring) of every visible GT keypoint of every person, on that
      keypoint type's selector / offsets (hypothesis ``p_t - o_t``, normalised units), L1 distance; mean over
      those (person, keypoint) pairs.
    * ``loss_pull`` / ``loss_push``: :func:`ae_pull_push` on ``tags`` at the GT keypoint cells, mean over the
      batch. Weights 0.1 / 0.1 are our choice (HigherHRNet's 1e-3 is sized for its MSE heatmaps).
    * ``loss_hm``: :func:`masked_focal_loss` of the auxiliary heatmap (K).
    """

    def __init__(self, normalisation: str = "global", kernel: str = "person", lambda_: float | None = None,
                 pull_weight: float = 0.1, push_weight: float = 0.1, aux_weight: float = 1.0,
                 gamma: float = 2.0) -> None:
        super().__init__(normalisation, kernel, lambda_, aux_weight, gamma)
        self.pull_weight, self.push_weight = float(pull_weight), float(push_weight)

    def forward(self, outputs: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = outputs["logits"].float()
        dev = logits.device
        _, _, h, w = logits.shape
        mask = targets["mask"].to(logits)
        valid = (targets["keypoint_valid"].to(dev) > 0) & (targets["person_valid"].to(dev) > 0)[..., None]
        b, p, k = valid.nonzero(as_tuple=True)
        gx, gy = sar_grid(w, h, dev, logits.dtype).flatten(1)
        off = outputs["offsets"].float().flatten(3)  # (B,K,2,T)
        gt = targets["keypoints_norm"].to(logits)[b, p, k]  # (n,2)
        dist = (gx - off[b, k, 0] - gt[:, 0:1]).abs() + (gy - off[b, k, 1] - gt[:, 1:2]).abs()
        cells = targets["keypoint_cells"].to(dev)
        allowed = _omega(mask, b, cells[b, p, k], self._region(targets, b, p), w)
        nll = mixture_nll(F.logsigmoid(logits.flatten(2))[b, k], allowed, dist, self._lam(targets, b, p, logits))
        loss_reg = nll.sum() / max(nll.numel(), 1) + _zero(logits) + _zero(off)

        if "tags" in outputs:
            pull, push = ae_pull_push(outputs["tags"].float(), cells, valid)
            loss_pull, loss_push = _batch_mean(pull, logits), _batch_mean(push, logits)
        else:
            loss_pull = loss_push = _zero(logits)
        loss_hm = self._aux(outputs, targets, mask, logits)
        total = loss_reg + self.pull_weight * loss_pull + self.push_weight * loss_push + self.aux_weight * loss_hm
        return {"total": total, "loss_reg": loss_reg, "loss_pull": loss_pull, "loss_push": loss_push,
                "loss_hm": loss_hm}


class SARCenterLoss(_SARMixin):
    """B2 ``sar_center`` (docs/method.md "Multi-person", our formulation): ``total = loss_reg + aux_weight * loss_hm
    + local_weight * loss_local``.

    * ``loss_reg``: the instance-level SAR mixture of every person: the centre selector's weights over Omega,
      the cell's pose hypothesis ``P_t = p_t - O_t`` (K points) against the person's visible keypoints
      (``pose_kernel``, module docstring); mean over people.
    * ``loss_hm``: the auxiliary heatmaps (K keypoints + centre): ``aux_loss`` ``focal`` =
      :func:`masked_focal_loss` of all K + 1 logits | ``mse`` = :func:`masked_mse_loss` of the K raw keypoint maps
      (DEKR's) + :func:`masked_focal_loss` of the centre logits (head and codec read the same key,
      ``head.aux_loss`` in conf/heads/bottomup/sar_center.yaml).
    * ``loss_local`` (only when the head gives ``local_offsets``): PersonLab's short-range offset loss (our
      addition), :func:`local_offset_loss`.
    """

    def __init__(self, normalisation: str = "global", kernel: str = "person", lambda_: float | None = None,
                 pose_kernel: str = "mean", aux_weight: float = 1.0, gamma: float = 2.0,
                 local_weight: float = 1.0, aux_loss: str = "focal") -> None:
        super().__init__(normalisation, kernel, lambda_, aux_weight, gamma, aux_loss)
        if pose_kernel not in ("mean", "per_keypoint"):
            raise ValueError(f"pose_kernel must be 'mean' or 'per_keypoint', got {pose_kernel!r}")
        self.pose_kernel = pose_kernel
        self.local_weight = float(local_weight)
        self.focal_channels = 1

    def forward(self, outputs: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = outputs["center_logits"].float()
        dev = logits.device
        _, _, h, w = logits.shape
        mask = targets["mask"].to(logits)
        vis = targets["keypoint_valid"].to(logits)  # (B,P,K)
        valid = (targets["person_valid"].to(dev) > 0) & (vis > 0).any(-1)
        b, p = valid.nonzero(as_tuple=True)
        gx, gy = sar_grid(w, h, dev, logits.dtype).flatten(1)
        off = outputs["offsets"].float().flatten(3)  # (B,K,2,T)
        gt = targets["keypoints_norm"].to(logits)[b, p]  # (n,K,2)
        v = vis[b, p]  # (n,K)
        dist = logits.new_zeros((b.numel(), h * w))
        for j in range(off.shape[1]):  # one keypoint at a time: (n,T) memory, not (n,K,T)
            dist = dist + v[:, j:j + 1] * ((gx - off[b, j, 0] - gt[:, j, 0:1]).abs()
                                           + (gy - off[b, j, 1] - gt[:, j, 1:2]).abs())
        if self.pose_kernel == "mean":
            dist = dist / v.sum(-1, keepdim=True).clamp_min(1)
        allowed = _omega(mask, b, targets["center_cells"].to(dev)[b, p], self._region(targets, b, p), w)
        nll = mixture_nll(F.logsigmoid(logits.flatten(1))[b], allowed, dist, self._lam(targets, b, p, logits))
        loss_reg = nll.sum() / max(nll.numel(), 1) + _zero(logits) + _zero(off)
        loss_hm = self._aux(outputs, targets, mask, logits)
        total = loss_reg + self.aux_weight * loss_hm
        out = {"loss_reg": loss_reg, "loss_hm": loss_hm}
        if "local_offsets" in outputs:
            out["loss_local"] = local_offset_loss(outputs, targets)
            total = total + self.local_weight * out["loss_local"]
        return {"total": total, **out}


class AELoss(nn.Module):
    """HigherHRNet baseline (docs/method.md "Multi-person", confirmed): ``total = hm_weight * loss_hm + pull_weight * loss_pull +
    push_weight * loss_push`` with HigherHRNet's factors 1, 1e-3, 1e-3.

    * ``loss_hm``: ``mean_{B,K,H,W}(mask * (pred - target)^2)`` (HigherHRNet's ``HeatmapLoss``; masked cells
      count in the mean as zeros, as there).
    * ``loss_pull`` / ``loss_push``: :func:`ae_pull_push`, mean over the batch.
    """

    def __init__(self, hm_weight: float = 1.0, pull_weight: float = 1e-3, push_weight: float = 1e-3) -> None:
        super().__init__()
        self.hm_weight, self.pull_weight, self.push_weight = float(hm_weight), float(pull_weight), float(push_weight)

    def forward(self, outputs: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hm = outputs["heatmap"].float()
        mask = targets["mask"].to(hm)[:, None]
        err = (hm - targets["heatmap"].to(hm)) ** 2 * mask
        loss_hm = err.mean() if err.numel() else _zero(hm)
        valid = (targets["keypoint_valid"].to(hm.device) > 0) & (targets["person_valid"].to(hm.device) > 0)[..., None]
        pull, push = ae_pull_push(outputs["tags"].float(), targets["keypoint_cells"].to(hm.device), valid)
        loss_pull, loss_push = _batch_mean(pull, hm), _batch_mean(push, hm)
        total = self.hm_weight * loss_hm + self.pull_weight * loss_pull + self.push_weight * loss_push
        return {"total": total, "loss_hm": loss_hm, "loss_pull": loss_pull, "loss_push": loss_push}


class DEKRLoss(nn.Module):
    """DEKR baseline (docs/method.md "Multi-person", confirmed): ``total = hm_weight * loss_hm + offset_weight * loss_offset``.

    * ``loss_hm``: ``mean_{B,K+1,H,W}(heatmap_weight * (pred - target)^2)`` (the codec's weight: mask x
      (1 on the Gaussians, 0.1 background)).
    * ``loss_offset``: smooth-L1 (beta 1/9) of predicted minus target offsets (map cells), times the codec's
      ``offset_weight`` (mask x visible / sqrt(area in map cells^2)), summed and divided by the number of
      weighted (cell, keypoint, axis) entries (DEKR's ``OffsetsLoss`` normalisation; 1 when none).
      ``offset_weight`` 0.03 is our default (the value we recall from DEKR's configs; not verified here).
    """

    def __init__(self, hm_weight: float = 1.0, offset_weight: float = 0.03, beta: float = 1.0 / 9.0) -> None:
        super().__init__()
        self.hm_weight, self.offset_weight, self.beta = float(hm_weight), float(offset_weight), float(beta)

    def forward(self, outputs: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hm = outputs["heatmap"].float()
        err = (hm - targets["heatmap"].to(hm)) ** 2 * targets["heatmap_weight"].to(hm)
        loss_hm = err.mean() if err.numel() else _zero(hm)
        off = outputs["offsets"].float()  # (B,K,2,H,W)
        weight = targets["offset_weight"].to(off)[:, :, None].expand_as(off)
        sl1 = F.smooth_l1_loss(off, targets["offsets"].to(off), reduction="none", beta=self.beta)
        num = (weight > 0).sum().clamp_min(1)
        loss_offset = torch.where(weight > 0, sl1 * weight, torch.zeros_like(sl1)).sum() / num
        total = self.hm_weight * loss_hm + self.offset_weight * loss_offset
        return {"total": total, "loss_hm": loss_hm, "loss_offset": loss_offset}
