"""Oracle outputs: the network outputs that a perfect head would give for a batch of encoded ground truth
(``targets`` as the DataModule batches them, torch tensors with a leading batch axis). Decoding them must give the
ground-truth poses back; the codec tests and ``python -m sar.bench bottomup`` (the oracle AP beside the trained
heads) use them. Each codec's ``oracle_outputs(targets)`` calls the function of its head here.

Probabilities become logits clamped at 1e-4 (the outputs are logits where the head gives logits). Per person:
``sar_center`` puts a 1-cell-wide Gaussian peak of its centre selector on the centre cell (it survives the
codec's average-pool smoothing) and the exact pose offsets there; ``dekr`` the GT heatmaps and the exact offsets
at the centre cell (the encoded disc elsewhere); ``sar_ae`` a confident selector (logit 10, else -10) and the
exact offset at each keypoint's cell; the AE heads the GT heatmaps. Tags: every cell of channel k carries the
index of the person whose keypoint k is nearest (in cells), so grouping by tags is exact.
"""

from __future__ import annotations

import torch

from sar.codecs.sar import sar_grid

__all__ = ["oracle_ae", "oracle_dekr", "oracle_sar_ae", "oracle_sar_center"]

_HI, _LO = 10.0, -10.0


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.float().clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def _nearest_person_tags(t: dict[str, torch.Tensor], width: int, height: int) -> torch.Tensor:
    """(B,K,H,W) tags: each cell of channel k = index of the person whose keypoint k is nearest (in cells)."""
    valid = (t["keypoint_valid"] > 0) & (t["person_valid"] > 0)[..., None]  # (B,P,K)
    cells = t["keypoint_cells"]
    cx, cy = (cells % width).float(), (cells // width).float()
    xs = torch.arange(width).float()[None, None, None, None, :]
    ys = torch.arange(height).float()[None, None, None, :, None]
    d2 = (xs - cx[..., None, None]) ** 2 + (ys - cy[..., None, None]) ** 2  # (B,P,K,H,W)
    d2 = torch.where(valid[..., None, None], d2, torch.full_like(d2, float("inf")))
    return d2.argmin(1).float()


def oracle_sar_center(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    b, p, k, _ = t["keypoints_norm"].shape
    conf = torch.zeros((b, 1, height * width))
    offsets = torch.zeros(b, k, 2, height * width)
    grid = sar_grid(width, height).flatten(1)  # (2,T)
    xs, ys = torch.arange(height * width) % width, torch.arange(height * width) // width
    for bi in range(b):
        for pi in range(p):
            if t["person_valid"][bi, pi] > 0:
                c = t["center_cells"][bi, pi]
                blob = torch.exp(-0.5 * ((xs - c % width) ** 2 + (ys - c // width) ** 2).float())
                conf[bi, 0] = torch.maximum(conf[bi, 0], blob)
                offsets[bi, :, :, c] = grid[:, c][None] - t["keypoints_norm"][bi, pi].float()
    return {"center_logits": _logit(conf).reshape(b, 1, height, width),
            "offsets": offsets.reshape(b, k, 2, height, width), "heatmap": _logit(t["heatmap"])}


def oracle_dekr(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    b, p, k, _ = t["keypoints_norm"].shape
    offsets = t["offsets"].float().clone().flatten(3)
    kp_cells = t["keypoints_norm"].float() * torch.tensor([width, height]).float()
    for bi in range(b):
        for pi in range(p):
            if t["person_valid"][bi, pi] > 0:
                c = t["center_cells"][bi, pi]
                loc = torch.tensor([float(c % width), float(c // width)])
                offsets[bi, :, :, c] = loc[None] - kp_cells[bi, pi]
    return {"heatmap": t["heatmap"].float().clone(), "offsets": offsets.reshape(b, k, 2, height, width)}


def oracle_sar_ae(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    b, p, k, _ = t["keypoints_norm"].shape
    logits = torch.full((b, k, height * width), _LO)
    offsets = torch.zeros(b, k, 2, height * width)
    grid = sar_grid(width, height).flatten(1)
    for bi in range(b):
        for pi in range(p):
            for ki in range(k):
                if t["person_valid"][bi, pi] > 0 and t["keypoint_valid"][bi, pi, ki] > 0:
                    c = t["keypoint_cells"][bi, pi, ki]
                    logits[bi, ki, c] = _HI
                    offsets[bi, ki, :, c] = grid[:, c] - t["keypoints_norm"][bi, pi, ki].float()
    return {"logits": logits.reshape(b, k, height, width), "offsets": offsets.reshape(b, k, 2, height, width),
            "tags": _nearest_person_tags(t, width, height), "heatmap": _logit(t["heatmap"])}


def oracle_ae(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    return {"heatmap": t["heatmap"].float().clone(), "tags": _nearest_person_tags(t, width, height)}
