"""Oracle outputs: the network outputs that a perfect head would give for a batch of encoded ground truth
(``targets`` as the DataModule batches them, torch tensors with a leading batch axis). Decoding them must give the
ground-truth poses back; the codec tests and ``python -m sar.bench bottomup`` (the oracle AP beside the trained
heads) use them. Each codec's ``oracle_outputs(targets)`` calls the function of its head here.

Probabilities become logits clamped at 1e-4 (the outputs are logits where the head gives logits). Per person:
``sar_center`` puts a 1-cell-wide Gaussian peak of its centre selector on the centre cell (it survives the
codec's average-pool smoothing) and the exact pose offsets there and at the cells within 2 of it that are nearest
to this centre (unlabelled keypoints: at the mean of the
labelled ones, ``_filled_keypoints``); ``dekr`` the GT heatmaps and the exact offsets
at the centre cell (the encoded disc elsewhere); ``sar_ae`` a confident selector (logit 10, else -10) and the
exact offset at each keypoint's cell; the AE heads the GT heatmaps. Tags: every cell of channel k carries the
index of the person whose keypoint k is nearest (in cells), so grouping by tags is exact.
"""

from __future__ import annotations

import torch

from sar.codecs.sar import sar_grid

__all__ = ["oracle_ae", "oracle_dekr", "oracle_sar_ae", "oracle_sar_center"]

_HI, _LO = 10.0, -10.0
_OWN_RADIUS = 2  # cells around a centre whose sar_center offsets regress that person


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


def _filled_keypoints(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """``keypoints_norm`` (B,P,K,2) with each person's unlabelled keypoints at the mean of its labelled ones.

    The targets hold 0 there (no ground truth), so an oracle that regresses them verbatim would put every
    person's unlabelled keypoints on the image corner: two such poses then overlap there and the pose OKS-NMS
    suppresses true people. A network predicts unlabelled joints near the body; the mean of the labelled ones is
    the oracle's stand-in (COCO OKS ignores unlabelled keypoints, so the score of the labelled ones is unchanged)."""
    kp = t["keypoints_norm"].float()
    valid = (t["keypoint_valid"] > 0)[..., None].float()
    mean = (kp * valid).sum(2, keepdim=True) / valid.sum(2, keepdim=True).clamp_min(1)
    return torch.where(valid > 0, kp, mean.expand_as(kp))


def oracle_sar_center(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    b, p, k, _ = t["keypoints_norm"].shape
    conf = torch.zeros((b, 1, height * width))
    offsets = torch.zeros(b, k, 2, height * width)
    grid = sar_grid(width, height).flatten(1)  # (2,T)
    xs, ys = torch.arange(height * width) % width, torch.arange(height * width) // width
    keypoints = _filled_keypoints(t)
    for bi in range(b):
        for pi in range(p):
            if t["person_valid"][bi, pi] > 0:
                c = t["center_cells"][bi, pi]
                d2 = ((xs - c % width) ** 2 + (ys - c // width) ** 2).float()
                blob = torch.exp(-0.5 * d2)
                # the cells within 2 of the centre that are nearer this person's centre than any earlier one's
                # regress this person's pose, as a trained network's dense offsets do near a centre (the codec's
                # smoothing may move the peak off the centre cell)
                own = (d2 <= _OWN_RADIUS**2) & (blob > conf[bi, 0])
                conf[bi, 0] = torch.maximum(conf[bi, 0], blob)
                cells = own.nonzero().flatten()
                offsets[bi, :, :, cells] = grid[:, cells][None] - keypoints[bi, pi][..., None]
    out = {"center_logits": _logit(conf).reshape(b, 1, height, width),
           "offsets": offsets.reshape(b, k, 2, height, width), "heatmap": _logit(t["heatmap"])}
    if "local_offsets" in t:  # the short-range offsets of refine: local, exact where they are trained
        out["local_offsets"] = t["local_offsets"].float().clone()
    return out


def oracle_dekr(t: dict[str, torch.Tensor], hm_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = hm_size
    b, p, k, _ = t["keypoints_norm"].shape
    offsets = t["offsets"].float().clone().flatten(3)
    kp_cells = _filled_keypoints(t) * torch.tensor([width, height]).float()
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
