"""Centre-based bottom-up codecs: ``sar_center`` (B2, instance-level SAR) and ``dekr`` (the DEKR baseline).

Both find people as local maxima of a centre-confidence map and read a whole pose from per-cell offsets at
that cell (``pose = location - offset``, DEKR's convention and SAR's [C sar-bottomup-3d.md 1.1]). The person
centre is the mean of the person's visible keypoints (CID and DEKR [C]); its cell ``floor(c / stride + 0.5)``.

Decoding, per image [C 1.1 for the proposal rule]: (optional flip merge) -> local maxima of the confidence map
after an optional average-pool smoothing (CID; kernel ``smooth_kernel``, 1 = off) by max-pool NMS
(``nms_kernel``) -> of those, the top ``max_proposals`` (m = 30) cells whose *unsmoothed* confidence is
``> score_thr`` (gamma = 0.01; our choice: the smoothed map only locates peaks, the threshold and the scores
use the confidence itself) -> poses -> OKS-NMS (``nms_thr``, CID's 0.8) -> sorted by score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sar.codecs.bottomup.common import (
    BottomUpCodec,
    People,
    check_odd,
    finish_poses,
    flip_back_maps,
    flip_back_offsets,
    local_offset_targets,
    local_peaks,
    multi_person_heatmaps,
    person_regions,
)
from sar.codecs.bottomup.oracle import oracle_dekr, oracle_sar_center
from sar.codecs.heatmap import refine_quarter, shift_right
from sar.codecs.sar import sar_grid

__all__ = ["DEKRCodec", "SARCenterCodec"]


def sample_maps(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of (K,H,W) maps at points (M,K,2) given in map cells (cell j = coordinate j); 0 outside.
    Returns (M,K)."""
    k, h, w = maps.shape
    m = points.shape[0]
    if m == 0:
        return maps.new_zeros((0, k))
    grid = torch.stack([2 * points[..., 0] / max(w - 1, 1) - 1, 2 * points[..., 1] / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(maps[:, None], grid.permute(1, 0, 2)[:, :, None, :], mode="bilinear",
                        padding_mode="zeros", align_corners=True)  # (K,1,M,1)
    return out[:, 0, :, 0].T


def refine_to_peaks(points: torch.Tensor, maps: torch.Tensor, radius: torch.Tensor,
                    thr: float, rule: str = "best") -> tuple[torch.Tensor, torch.Tensor]:
    """Move regressed keypoints to a keypoint-map cell near them (the CenterNet rule for poses; docs/method.md
    "Multi-person", our choice). For each proposal ``m`` and keypoint ``k``, among the cells of ``maps[k]`` within
    ``radius[m]`` cells of ``points[m, k]``: ``rule="best"`` takes the highest one (of equal ones the nearest) and
    moves there when it exceeds ``thr``; ``rule="nearest"`` takes the nearest local maximum (3x3) above ``thr`` (CenterNet's choice of the
    closest keypoint detection, so a neighbour's stronger joint does not pull it away); ``rule="gauss"`` takes,
    among the cells above ``thr``, the highest map value times ``exp(-d^2 / (2 sigma^2))`` with ``sigma = radius /
    2`` (a soft reach: a strong peak far off loses to a fair one near the regressed point). A moved keypoint is refined
    by a quarter cell towards the higher neighbour in x and in y (HigherHRNet / MSRA rule); else it stays.
    ``points`` (M,K,2) map cells, ``maps`` (K,H,W), ``radius`` (M,) per pose or (M,K) per keypoint. Returns the
    points (M,K,2) and a (M,K) bool of the moved ones."""
    k, h, w = maps.shape
    m = points.shape[0]
    if m == 0 or k == 0:
        return points, torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    xs = torch.arange(w, device=maps.device, dtype=points.dtype)
    ys = torch.arange(h, device=maps.device, dtype=points.dtype)
    dx2 = (xs[None, None, :] - points[..., 0:1]) ** 2  # (M,K,W)
    dy2 = (ys[None, None, :] - points[..., 1:2]) ** 2  # (M,K,H)
    d2 = dy2[..., :, None] + dx2[..., None, :]  # (M,K,H,W)
    radius = radius if radius.dim() == 2 else radius[:, None].expand(m, k)
    inside = d2 <= (radius[..., None, None] ** 2)
    if rule == "nearest":
        peaks = (maps == F.max_pool2d(maps[None], 3, stride=1, padding=1)[0]) & (maps > thr)  # (K,H,W)
        d2 = torch.where(inside & peaks[None], d2, torch.full_like(d2, float("inf")))
        nearest, idx = d2.flatten(2).min(-1)  # (M,K)
        moved = torch.isfinite(nearest)
    elif rule == "best":
        # ties (equal map values, e.g. two people's peaks both in reach) go to the nearer cell
        vals = torch.where(inside, maps[None].to(points.dtype) - 1e-6 * d2, torch.full_like(d2, -1.0))
        best, idx = vals.flatten(2).max(-1)  # (M,K)
        moved = best > thr
    elif rule == "gauss":
        # among the cells in reach above thr, the highest map value times a Gaussian of the distance
        # (sigma = radius / 2, at least half a cell)
        sigma2 = (radius[..., None, None] / 2).clamp_min(0.5) ** 2
        weighted = maps[None].to(points.dtype) * torch.exp(-0.5 * d2 / sigma2)
        vals = torch.where(inside & (maps > thr)[None], weighted, torch.full_like(d2, -1.0))
        best, idx = vals.flatten(2).max(-1)  # (M,K)
        moved = best >= 0
    else:
        raise ValueError(f"rule must be 'best', 'nearest' or 'gauss', got {rule!r}")
    cx, cy = idx % w, idx // w
    peak = torch.stack([cx, cy], -1).to(points.dtype) + refine_quarter(maps[None].expand(m, k, h, w), cx, cy).to(
        points.dtype)
    return torch.where(moved[..., None], peak, points), moved


def refine_local(cells: torch.Tensor, field: torch.Tensor, radius: float, steps: int,
                 back: torch.Tensor | None = None, shift: float = 0.0) -> torch.Tensor:
    """PersonLab's refinement by short-range offsets (docs/method.md "Multi-person", our addition): ``steps`` times,
    each keypoint moves by ``radius`` x the field (K,2,H,W) of its type read bilinearly at its position (``cells``
    (M,K,2) map coordinates; 0 outside the map). ``back`` (K,2,H,W): the flipped-back field of the mirrored pass,
    whose column ``j`` stands for position ``j + shift`` (``1 - 1/stride``); the two readings are averaged.
    Returns the moved cells (M,K,2)."""
    def read(maps: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        return torch.stack([sample_maps(maps[:, 0], at), sample_maps(maps[:, 1], at)], -1)

    for _ in range(steps):
        step = read(field, cells)
        if back is not None:
            step = 0.5 * (step + read(back, cells - cells.new_tensor([shift, 0.0])))
        cells = cells + radius * step
    return cells


def pose_size(points: torch.Tensor) -> torch.Tensor:
    """The size ``sqrt(w * h)`` of each pose's keypoint box, in the unit of ``points`` (M,K,2), each side clamped
    at 1 unit (a pose collapsed to a line or a point still has a size): (M,)."""
    return (points.amax(1) - points.amin(1)).clamp_min(1.0).prod(-1).sqrt()


class _CentreCodec(BottomUpCodec):
    """Shared encode / decode skeleton; subclasses set the offset unit and the confidence / keypoint scores."""

    #: ``"norm"``: offsets in normalised units (SAR); ``"cell"``: in map cells (DEKR).
    offset_unit = "norm"

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float, center_sigma: float,
                 nms_kernel: int, smooth_kernel: int, nms_thr: float, max_people: int, max_proposals: int,
                 score_thr: float, sigmas: Sequence[float] | None, refine: str = "none",
                 refine_radius: float = 0.25, refine_thr: float = 0.1, refine_rule: str = "best",
                 pose_window: int = 1, pose_window_gate: float = 0.1, local_radius: float = 0.0,
                 local_steps: int = 2, refine_keep: float = 0.0, refine_far: float = 0.0) -> None:
        super().__init__(input_size, heatmap_size, sigma, nms_kernel, nms_thr, max_people, max_proposals,
                         score_thr, sigmas)
        if center_sigma <= 0:
            raise ValueError(f"center_sigma must be positive, got {center_sigma}")
        if refine not in ("none", "heatmap", "local"):
            raise ValueError(f"refine must be 'none', 'heatmap' or 'local', got {refine!r}")
        if local_radius < 0 or local_steps < 0:
            raise ValueError(f"local_radius and local_steps must be >= 0, got {local_radius}, {local_steps}")
        if refine == "local" and local_radius == 0:
            raise ValueError("refine: local needs the short-range offsets: set local_radius > 0 (map cells)")
        if refine_rule not in ("best", "nearest", "gauss"):
            raise ValueError(f"refine_rule must be 'best', 'nearest' or 'gauss', got {refine_rule!r}")
        check_odd("pose_window", pose_window)
        if pose_window_gate <= 0:
            raise ValueError(f"pose_window_gate must be positive, got {pose_window_gate}")
        if refine_radius < 0 or refine_keep < 0 or refine_far < 0:
            raise ValueError(f"refine_radius, refine_keep and refine_far must be >= 0, got {refine_radius}, "
                             f"{refine_keep}, {refine_far}")
        check_odd("smooth_kernel", smooth_kernel)
        self.center_sigma = float(center_sigma)
        self.smooth_kernel = int(smooth_kernel)
        self.refine = refine
        self.refine_radius = float(refine_radius)
        self.refine_thr = float(refine_thr)
        self.refine_rule = refine_rule
        self.refine_keep = float(refine_keep)
        self.refine_far = float(refine_far)
        self.pose_window = int(pose_window)
        self.pose_window_gate = float(pose_window_gate)
        self.local_radius = float(local_radius)
        self.local_steps = int(local_steps)

    # -- encoding ----------------------------------------------------------------------------------------------
    def _people(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
                mask: np.ndarray | None) -> tuple[People, dict[str, np.ndarray], np.ndarray]:
        """People, the common targets + ``center_cells`` (P,) flat index and ``heatmap`` (K+1,H,W) (K keypoint
        Gaussians of ``sigma``, then the centre Gaussian of ``center_sigma``), and the centre cells (P,2)."""
        people, targets = self.prepare(keypoints, visible, areas, mask)
        n_vis = np.maximum(people.visible.sum(1), 1)
        centres = (people.keypoints * people.visible[..., None]).sum(1) / n_vis[:, None]  # (P,2) input px
        width, height = self.heatmap_size
        cells = np.floor(centres / np.asarray(self.stride) + 0.5).astype(np.int64)
        cells = np.stack([np.clip(cells[:, 0], 0, width - 1), np.clip(cells[:, 1], 0, height - 1)], 1)
        cells = np.where(people.valid[:, None], cells, 0)
        targets["center_cells"] = (cells[:, 1] * width + cells[:, 0]).astype(np.int64)
        hm_k = multi_person_heatmaps(people.cells, people.visible, self.heatmap_size, self.sigma)
        hm_c = multi_person_heatmaps(cells[:, None], people.valid[:, None], self.heatmap_size, self.center_sigma)
        targets["heatmap"] = np.concatenate([hm_k, hm_c], axis=0)
        if self.local_radius > 0:
            local, weight = local_offset_targets(people, self.stride, self.heatmap_size, self.local_radius)
            targets["local_offsets"] = local
            targets["local_weight"] = weight * targets["mask"][None]
        return people, targets, cells

    # -- decoding ----------------------------------------------------------------------------------------------
    def _flip_shift(self) -> float:
        if self.offset_unit == "cell":
            return 1.0 - 1.0 / self.stride[0]
        return 1.0 / self.heatmap_size[0] - 1.0 / self.input_size[0]

    def _maps(self, outputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Centre confidence (B,1,H,W) and keypoint score maps (B,K,H,W) or None, in [0, 1]-ish units."""
        raise NotImplementedError

    def _keypoint_scores(self, conf: torch.Tensor, heat: torch.Tensor | None, k: int) -> torch.Tensor:
        """Keypoint scores (M,K) from proposal confidences (M,) and sampled keypoint maps (M,K) or None."""
        raise NotImplementedError

    def _refine_maps(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Keypoint maps (B,K,H,W) the ``refine: heatmap`` step searches (the auxiliary / baseline heatmaps)."""
        raise NotImplementedError

    @property
    def reads_heatmaps(self) -> bool:
        """Whether decoding reads the head's ``heatmap`` output (here: the refinement)."""
        return self.refine == "heatmap"

    def _merged_refine_maps(self, outputs: Mapping[str, torch.Tensor], flipped: Mapping[str, torch.Tensor] | None,
                            flip_indices: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        """The refine maps, flip-averaged; the flipped-back copy is moved ``1 - 1/stride`` cells right first
        (:func:`sar.codecs.heatmap.shift_right`), so that both copies' peaks sit on the same sub-cell position."""
        maps = self._refine_maps(outputs)
        if flipped is None:
            return maps
        back = flip_back_maps(self._refine_maps(flipped), flip_indices)
        return 0.5 * (maps + shift_right(back, 1.0 - 1.0 / self.stride[0]))

    def _merged(self, outputs: Mapping[str, torch.Tensor], flipped: Mapping[str, torch.Tensor] | None,
                flip_indices: Sequence[int] | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor,
                                                                            torch.Tensor | None]:
        conf, kmaps = self._maps(outputs)
        offsets = outputs["offsets"].float()
        if flipped is not None:
            if flip_indices is None:
                raise ValueError("flip_indices is needed to merge flipped outputs")
            f_conf, f_kmaps = self._maps(flipped)
            conf = 0.5 * (conf + flip_back_maps(f_conf, None))
            offsets = 0.5 * (offsets + flip_back_offsets(flipped["offsets"].float(), flip_indices,
                                                         self._flip_shift()))
            if kmaps is not None and f_kmaps is not None:
                kmaps = 0.5 * (kmaps + flip_back_maps(f_kmaps, flip_indices))
        return conf, offsets, kmaps

    def _window_points(self, conf: torch.Tensor, offsets: torch.Tensor, idx: torch.Tensor,
                       points: torch.Tensor) -> torch.Tensor:
        """``pose_window`` n > 1: the pose of each peak ``idx`` (M,) becomes the mean of the pose hypotheses of the
        n x n cells around it, weighted by their centre confidence ``conf`` (1,H,W), over the cells whose hypothesis
        agrees with the peak's own ``points`` (M,K,2) px: mean keypoint distance <= ``pose_window_gate`` x the
        size ``sqrt(w * h)`` of the peak pose's keypoint box (so a neighbouring person's cells never join).
        Cells outside the map are left out; the peak cell always counts."""
        _, h, w = conf.shape
        m, k = points.shape[:2]
        if m == 0:
            return points
        r = self.pose_window // 2
        d = torch.arange(-r, r + 1, device=idx.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        ny = (idx // w)[:, None] + dy.flatten()[None]  # (M,n*n)
        nx = (idx % w)[:, None] + dx.flatten()[None]
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        cells = ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1)
        hyp = self._points(offsets, cells.flatten()).view(m, -1, k, 2)  # (M,n*n,K,2) px
        dist = (hyp - points[:, None]).norm(dim=-1).mean(-1)  # (M,n*n)
        agree = dist <= self.pose_window_gate * pose_size(points)[:, None]  # size in px
        # DEKR's centre map is a raw MSE heatmap: a negative value weighs nothing, not against the mean
        weight = conf.flatten()[cells].to(points.dtype).clamp_min(0) * (inside & agree)
        weight = torch.where(cells == idx[:, None], weight.clamp_min(1e-12), weight)  # the peak always counts
        return (weight[..., None, None] * hyp).sum(1) / weight.sum(1)[:, None, None]

    def _points(self, offsets: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Pose hypotheses (M,K,2) in input px at flat cells ``idx`` (M,) from one image's offsets (K,2,H,W)."""
        k = offsets.shape[0]
        width, height = self.heatmap_size
        off = offsets.flatten(2)[:, :, idx].permute(2, 0, 1)  # (M,K,2)
        if self.offset_unit == "cell":
            loc = torch.stack([idx % width, idx // width], -1).to(off)[:, None, :].expand(-1, k, -1)
            return (loc - off) * off.new_tensor(self.stride)
        grid = sar_grid(width, height, off.device, off.dtype).flatten(1)[:, idx].T  # (M,2) normalised
        return (grid[:, None, :] - off) * off.new_tensor(self.input_size)

    @torch.no_grad()
    def decode(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped_outputs: Mapping[str, torch.Tensor] | None = None,
        flip_indices: Sequence[int] | torch.Tensor | None = None,
        sigmas: Sequence[float] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: ``(poses (M,K,3) float32 [x, y, score] input px, scores (M,) float32)``, sorted by score.

        Flip merge (``flipped_outputs`` = outputs of the mirrored input): the centre-confidence map and the
        keypoint score maps are averaged with their flipped-back copies (columns reversed, keypoint channels
        swapped with ``flip_indices``), and so are the offsets (flipped back exactly, :mod:`.common`), i.e. the
        two passes' pose hypotheses are averaged cell by cell.
        """
        outputs, flipped_outputs = self._native(outputs), self._native(flipped_outputs)
        conf, offsets, kmaps = self._merged(outputs, flipped_outputs, flip_indices)
        rmaps = (self._merged_refine_maps(outputs, flipped_outputs, flip_indices)
                 if self.refine == "heatmap" else None)
        field, back = self._local_fields(outputs, flipped_outputs, flip_indices)
        k = offsets.shape[1]
        sig = self.nms_sigmas(k, sigmas)
        smooth = conf
        if self.smooth_kernel > 1:
            smooth = F.avg_pool2d(conf, self.smooth_kernel, stride=1, padding=self.smooth_kernel // 2,
                                  count_include_pad=False)
        results = []
        for b in range(conf.shape[0]):
            vals, idx = local_peaks(smooth[b], self.nms_kernel, self.max_proposals, self.score_thr, conf[b])
            keep = torch.isfinite(vals[0])
            vals, idx = vals[0][keep], idx[0][keep]
            points = self._points(offsets[b], idx)  # (M,K,2) px
            if self.pose_window > 1:
                points = self._window_points(conf[b], offsets[b], idx, points)
            if rmaps is not None:
                points = self._refined(points, rmaps[b], idx)
            if field is not None:
                stride = points.new_tensor(self.stride)
                points = stride * refine_local(points / stride, field[b], self.local_radius, self.local_steps,
                                               None if back is None else back[b], 1.0 - 1.0 / self.stride[0])
            heat = None
            if kmaps is not None:
                cells = points / points.new_tensor(self.stride)
                heat = sample_maps(kmaps[b], cells)
            kscores = self._keypoint_scores(vals, heat, k)
            poses = torch.cat([points, kscores[..., None]], -1).cpu().double().numpy()
            scores = self._instance_scores(vals, kscores).cpu().double().numpy()
            results.append(finish_poses(poses, scores, sig, self.nms_thr, self.max_proposals))
        return results

    def _local_fields(self, outputs: Mapping[str, torch.Tensor], flipped: Mapping[str, torch.Tensor] | None,
                      flip_indices: Sequence[int] | torch.Tensor | None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``refine: local``: the short-range offsets (B,K,2,H,W) and the flipped-back ones of the mirrored pass
        (columns reversed, keypoints permuted, x negated; :func:`refine_local` reads them shifted), else None."""
        if self.refine != "local":
            return None, None
        if "local_offsets" not in outputs:
            raise ValueError("refine: local needs the head's short-range offsets (head.module.local_offsets: true)")
        field = outputs["local_offsets"].float()
        if flipped is None:
            return field, None
        return field, flip_back_offsets(flipped["local_offsets"].float(), flip_indices, 0.0)

    def _refined(self, points: torch.Tensor, maps: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``refine: heatmap``: :func:`refine_to_peaks` with a search radius of ``refine_radius`` times the
        size ``sqrt(w * h)`` of each regressed pose's keypoint box (at least 1 cell), widened per keypoint to
        ``refine_far`` times its distance from the pose's centre cell (flat cells ``idx`` (M,) of the maps) where
        that is larger: a keypoint regressed further from its centre is regressed less exactly (docs/bottomup.md)."""
        stride = points.new_tensor(self.stride)
        cells = points / stride
        radius = (self.refine_radius * pose_size(cells)).clamp_min(1.0)  # size in cells
        if self.refine_far > 0:
            width = maps.shape[-1]
            centres = torch.stack([idx % width, idx // width], -1).to(cells)  # (M,2)
            dist = (cells - centres[:, None, :]).norm(dim=-1)  # (M,K)
            radius = torch.maximum(radius[:, None], self.refine_far * dist)
        snapped, _ = refine_to_peaks(cells, maps, radius, self.refine_thr, self.refine_rule)
        # a keypoint whose peak lies within refine_keep cells (per axis) keeps its regressed sub-cell position
        keep = (snapped - cells).abs().amax(-1, keepdim=True) <= self.refine_keep
        return torch.where(keep, cells, snapped) * stride

    @staticmethod
    def _instance_scores(conf: torch.Tensor, kscores: torch.Tensor) -> torch.Tensor:
        """Mean keypoint score (the proposal confidence when K = 0)."""
        return kscores.mean(-1) if kscores.shape[-1] else conf


class SARCenterCodec(_CentreCodec):
    """B2 ``sar_center``: centre selector (1) + pose offsets (2K, normalised units) + auxiliary heatmaps (K+1).

    Encode (``encode(keypoints (N,K,2), visible (N,K), areas (N,), mask (H,W))``), P = ``max_people``:
    ``mask`` (H,W), ``person_valid`` (P,), ``keypoint_valid`` (P,K), ``keypoints_norm`` (P,K,2) (input px /
    input size), ``areas`` (P,), ``people_dropped`` (), ``center_cells`` (P,) flat centre cell ``i * W + j``,
    ``scale`` (P,) the person kernel scale, ``region`` (P,4) the person's cells box (the ``local`` Omega) and
    ``heatmap`` (K+1,H,W) auxiliary targets (MSRA Gaussians, max over people; the last channel is the centre).

    Person scale (our definition, docs/method.md "Multi-person", our formulation): ``s_i = sqrt(area_i / (w * h))``, i.e. ``sqrt(area) / S``
    for an S x S input. The loss's person kernel ``exp(-lambda * L1 / s_i)`` with L1 in normalised units is
    ``exp(-lambda * L1_px / sqrt(area))``; the top-down kernel ``exp(-16 * L1_px / (1.25 * side))`` of a
    1.25-padded crop is this with ``lambda = 16 / 1.25 = 12.8`` and ``area = side^2`` (the reference's
    ~12.5). ``kernel: image`` uses ``s_i = 1`` (the loss's switch; the codec always writes the person scale).

    Decode: pose ``P_t = p_t - O_t`` at the centre peaks; ``score``: ``selector`` (default [I]) ranks and
    thresholds on ``sigmoid(centre logits)`` and every keypoint score is that confidence; ``heatmap`` uses the
    auxiliary centre heatmap's sigmoid instead. ``keypoint_score``: ``confidence`` (default) | ``heatmap``
    multiplies each keypoint score by the auxiliary keypoint heatmap at the decoded keypoint (DEKR's keypoint
    score; always so with ``score: heatmap``). Instance score = mean keypoint score. No rescoring net.

    Args:
        sigma, center_sigma: auxiliary Gaussian sigmas (map cells) of keypoints / centres (DEKR's 2 and 4;
            our choice for the auxiliary focal targets).
        region_margin: cells added around a person's keypoint box for ``region``.
        smooth_kernel: average-pool kernel on the centre map before NMS (CID's 3; 1 = off).
        nms_kernel: max-pool NMS kernel (3: CID's at a map side <= 200).
        nms_thr: OKS threshold of the pose NMS (CID's 0.8; 1 = off).
        sigmas: OKS sigmas for the pose NMS (default: COCO's for K = 17, else a constant).
        aux_loss: how the auxiliary maps were trained: ``focal`` (read through a sigmoid) | ``mse`` (the keypoint
            maps raw, the centre map through a sigmoid).
    """

    _oracle = staticmethod(oracle_sar_center)

    offset_unit = "norm"

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], score: str = "selector",
                 sigma: float = 2.0, center_sigma: float = 4.0, region_margin: int = 1, smooth_kernel: int = 3,
                 nms_kernel: int = 3, nms_thr: float = 0.8, max_people: int = 30, max_proposals: int = 30,
                 score_thr: float = 0.01, sigmas: Sequence[float] | None = None, refine: str = "none",
                 refine_radius: float = 0.25, refine_thr: float = 0.1, refine_rule: str = "best",
                 pose_window: int = 1, pose_window_gate: float = 0.1, local_radius: float = 0.0,
                 local_steps: int = 2, refine_keep: float = 0.0, aux_loss: str = "focal",
                 keypoint_score: str = "confidence", refine_far: float = 0.0) -> None:
        super().__init__(input_size, heatmap_size, sigma, center_sigma, nms_kernel, smooth_kernel, nms_thr,
                         max_people, max_proposals, score_thr, sigmas, refine, refine_radius, refine_thr,
                         refine_rule, pose_window, pose_window_gate, local_radius, local_steps, refine_keep,
                         refine_far)
        if score not in ("selector", "heatmap"):
            raise ValueError(f"score must be 'selector' or 'heatmap', got {score!r}")
        if aux_loss not in ("focal", "mse"):
            raise ValueError(f"aux_loss must be 'focal' or 'mse', got {aux_loss!r}")
        self.aux_loss = aux_loss
        if keypoint_score not in ("confidence", "heatmap"):
            raise ValueError(f"keypoint_score must be 'confidence' or 'heatmap', got {keypoint_score!r}")
        self.keypoint_score = "heatmap" if score == "heatmap" else keypoint_score
        self.score = score
        self.region_margin = int(region_margin)

    def __repr__(self) -> str:
        return (f"SARCenterCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"score={self.score!r})")

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
               mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        people, targets, _ = self._people(keypoints, visible, areas, mask)
        w, h = self.input_size
        targets["scale"] = np.where(people.valid, np.sqrt(people.areas / (w * h)), 1.0).astype(np.float32)
        targets["region"] = person_regions(people.cells, people.visible, self.heatmap_size, self.region_margin)
        return targets

    @property
    def reads_heatmaps(self) -> bool:
        """The refinement or the keypoint scores (``keypoint_score: heatmap``) read the auxiliary heatmaps."""
        return super().reads_heatmaps or self.keypoint_score == "heatmap"

    def _maps(self, outputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.keypoint_score == "heatmap" and "heatmap" not in outputs:
            raise ValueError(f"score / keypoint_score '{self.keypoint_score}' needs the auxiliary heatmaps "
                             "(head.module.with_heatmap: true)")
        hm = self._aux_maps(outputs["heatmap"]) if self.keypoint_score == "heatmap" else None
        if self.score == "heatmap":
            return hm[:, -1:], hm[:, :-1]
        return torch.sigmoid(outputs["center_logits"].float()), None if hm is None else hm[:, :-1]

    def _refine_maps(self, outputs: Mapping[str, Any]) -> torch.Tensor:
        if "heatmap" not in outputs:
            raise ValueError("refine: heatmap needs the auxiliary heatmaps (head.module.with_heatmap: true)")
        return self._aux_maps(outputs["heatmap"])[:, :-1]

    def oracle_outputs(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().oracle_outputs(targets)
        if self.aux_loss == "mse" and "heatmap" in targets:  # raw keypoint maps: the targets themselves
            out["heatmap"][:, :-1] = targets["heatmap"][:, :-1].float()
        return out

    def _aux_maps(self, heatmap: torch.Tensor) -> torch.Tensor:
        """The auxiliary maps (B,K+1,H,W) as probabilities: ``sigmoid`` of the focal logits; with ``aux_loss: mse``
        the K keypoint maps as they are (the centre map stays a logit)."""
        heatmap = heatmap.float()
        if self.aux_loss == "focal":
            return torch.sigmoid(heatmap)
        return torch.cat([heatmap[:, :-1], torch.sigmoid(heatmap[:, -1:])], 1)

    def _keypoint_scores(self, conf: torch.Tensor, heat: torch.Tensor | None, k: int) -> torch.Tensor:
        base = conf[:, None].expand(-1, k)
        return base * heat.clamp(0, 1) if heat is not None else base


class DEKRCodec(_CentreCodec):
    """DEKR baseline: heatmaps (K keypoints + centre, MSE) and per-cell pose offsets (2K, map cells).

    Encode: the common targets (:class:`SARCenterCodec`), ``center_cells``, ``heatmap`` (K+1,H,W) (sigma 2
    keypoints / 4 centre, DEKR [C]), ``heatmap_weight`` (K+1,H,W) = mask x (1 on cells with target > 0, else
    ``bg_weight`` 0.1 [C]), ``offsets`` (K,2,H,W) = cell - keypoint (map cells) on the cells within
    ``offset_radius`` cells of a person's centre (a cell claimed by several people keeps the smallest one's,
    as DEKR), ``offset_weight`` (K,H,W) = mask x visible / sqrt(area in map cells^2) there, else 0.

    Decode: centre map = the raw centre heatmap (flip-averaged), NMS kernel 5 (DEKR), top 30 > 0.01, pose =
    location - offset; keypoint score = centre value x the keypoint heatmap at the decoded keypoint (clamped
    to [0, 1]); instance score = mean keypoint score. No rescoring net, no adaptive convolutions.
    """

    _oracle = staticmethod(oracle_dekr)

    offset_unit = "cell"

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 center_sigma: float = 4.0, offset_radius: float = 4.0, bg_weight: float = 0.1,
                 smooth_kernel: int = 1, nms_kernel: int = 5, nms_thr: float = 0.8, max_people: int = 30,
                 max_proposals: int = 30, score_thr: float = 0.01, sigmas: Sequence[float] | None = None,
                 refine: str = "none", refine_radius: float = 0.25, refine_thr: float = 0.1,
                 refine_rule: str = "best", pose_window: int = 1,
                 pose_window_gate: float = 0.1, local_radius: float = 0.0, local_steps: int = 2,
                 refine_keep: float = 0.0, refine_far: float = 0.0) -> None:
        super().__init__(input_size, heatmap_size, sigma, center_sigma, nms_kernel, smooth_kernel, nms_thr,
                         max_people, max_proposals, score_thr, sigmas, refine, refine_radius, refine_thr,
                         refine_rule, pose_window, pose_window_gate, local_radius, local_steps, refine_keep,
                         refine_far)
        if offset_radius < 0 or not 0 <= bg_weight <= 1:
            raise ValueError(f"offset_radius must be >= 0 and bg_weight in [0, 1], got {offset_radius}, {bg_weight}")
        self.offset_radius = float(offset_radius)
        self.bg_weight = float(bg_weight)

    def __repr__(self) -> str:
        return f"DEKRCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size})"

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
               mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        people, targets, cells = self._people(keypoints, visible, areas, mask)
        mask32 = targets["mask"]
        hm = targets["heatmap"]
        targets["heatmap_weight"] = (mask32[None] * np.where(hm > 0, 1.0, self.bg_weight)).astype(np.float32)
        k = people.visible.shape[1]
        width, height = self.heatmap_size
        offsets = np.zeros((k, 2, height, width), dtype=np.float32)
        weight = np.zeros((k, height, width), dtype=np.float32)
        xx, yy = np.meshgrid(np.arange(width), np.arange(height))
        kp_cells = people.keypoints / np.asarray(self.stride)  # (P,K,2) exact map coordinates
        area_cells = people.areas / (self.stride[0] * self.stride[1])
        for p in np.argsort(-people.areas, kind="stable"):  # smaller people written last, so they win
            if not people.valid[p]:
                continue
            disc = (xx - cells[p, 0]) ** 2 + (yy - cells[p, 1]) ** 2 <= self.offset_radius**2
            vis = people.visible[p]
            offsets[:, 0][:, disc] = (xx[disc][None, :] - kp_cells[p, :, 0:1])
            offsets[:, 1][:, disc] = (yy[disc][None, :] - kp_cells[p, :, 1:2])
            weight[:, disc] = (vis[:, None] / np.sqrt(max(area_cells[p], 1.0))).astype(np.float32)
        targets["offsets"] = offsets
        targets["offset_weight"] = weight * mask32[None]
        return targets

    def _maps(self, outputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hm = outputs["heatmap"].float()
        return hm[:, -1:], hm[:, :-1]

    def _refine_maps(self, outputs: Mapping[str, Any]) -> torch.Tensor:
        return outputs["heatmap"].float()[:, :-1]

    def _keypoint_scores(self, conf: torch.Tensor, heat: torch.Tensor | None, k: int) -> torch.Tensor:
        assert heat is not None
        return conf[:, None] * heat.clamp(0, 1)
