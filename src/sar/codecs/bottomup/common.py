"""Pieces shared by the bottom-up codecs (docs/bottomup.md): person padding, multi-person Gaussian targets,
flip-back of maps and offsets, local-max proposals, pose OKS-NMS and Hungarian tag grouping.

Conventions (as the top-down codecs, src/sar/codecs/heatmap.py): input pixels, ``(x, y)`` order; map cell
``j`` stands for input pixel ``j * stride`` (MSRA, no UDP); a keypoint's cell is ``floor(x / stride + 0.5)``.
Normalised coordinates are input pixels divided by the input size, the frame of the SAR grid
``p = (j / W, i / H)`` (:func:`sar.codecs.sar.sar_grid`).

Flip (our choice, the DEKR / HigherHRNet practice): maps of the mirrored pass are flipped back by reversing
their columns (``j -> W - 1 - j``, no sub-cell shift, so a map peak can sit up to ``1 - 1/stride`` cell off)
and their channels are permuted with ``flip_indices``. Offsets are flipped back *exactly*: a mirrored cell's
hypothesis ``x'`` is the point ``w - 1 - x'`` of the original image, which at the flipped-back cell ``j`` is
the offset ``o_x = -o'_x - (1 - 1/stride)`` cells (``-(1/W - 1/w)`` in normalised units). This map is an
involution, so an exactly mirrored copy of the outputs flips back to the outputs themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from sar.codecs.heatmap import gaussian_targets
from sar.evaluation.coco_ap import pairwise_oks

__all__ = [
    "COCO_JOINT_ORDER",
    "BottomUpCodec",
    "People",
    "default_sigmas",
    "flip_back_maps",
    "flip_back_offsets",
    "group_by_tags",
    "local_offset_targets",
    "local_peaks",
    "multi_person_heatmaps",
    "pose_nms",
    "prepare_people",
]

#: HigherHRNet's joint order for grouping on COCO (head, shoulders, hips, then limbs).
COCO_JOINT_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)

#: OKS sigma used when K != 17 and no sigmas are given (our choice: the COCO hip/knee/ankle scale).
DEFAULT_SIGMA: float = 0.089


def default_sigmas(num_keypoints: int, sigmas: Sequence[float] | None = None) -> np.ndarray:
    """OKS sigmas for pose NMS: ``sigmas`` when given, else COCO's for K = 17, else :data:`DEFAULT_SIGMA`."""
    if sigmas is not None:
        out = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if out.size != num_keypoints:
            raise ValueError(f"{out.size} sigmas for {num_keypoints} keypoints")
        return out
    if num_keypoints == 17:
        from sar.data.spec import load_spec

        return np.asarray(load_spec("coco").sigmas, dtype=np.float64)
    return np.full(num_keypoints, DEFAULT_SIGMA)


# ---------------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class People:
    """One image's people, padded to ``max_people`` (P).

    ``keypoints`` (P,K,2) input px (0 where not valid), ``visible`` (P,K) bool (labelled, finite and its cell
    inside the map), ``cells`` (P,K,2) int64 map cells, ``areas`` (P,) input px^2, ``valid`` (P,) bool (a
    person with at least one visible keypoint), ``dropped``: people beyond ``max_people`` (not encoded).
    """

    keypoints: np.ndarray
    visible: np.ndarray
    cells: np.ndarray
    areas: np.ndarray
    valid: np.ndarray
    dropped: int

    def common_targets(self, input_size: tuple[int, int], mask: np.ndarray) -> dict[str, np.ndarray]:
        """The targets every bottom-up codec writes: ``mask`` (H,W), ``person_valid`` (P,), ``keypoint_valid``
        (P,K), ``keypoints_norm`` (P,K,2) (input px / input size), ``areas`` (P,), ``people_dropped`` ()."""
        norm = self.keypoints / np.asarray(input_size, dtype=np.float64)
        return {
            "mask": mask,
            "person_valid": self.valid.astype(np.float32),
            "keypoint_valid": self.visible.astype(np.float32),
            "keypoints_norm": norm.astype(np.float32),
            "areas": self.areas.astype(np.float32),
            "people_dropped": np.asarray(self.dropped, dtype=np.int64),
        }


def prepare_people(
    keypoints: np.ndarray,
    visible: np.ndarray,
    areas: np.ndarray,
    stride: tuple[float, float],
    heatmap_size: tuple[int, int],
    max_people: int,
) -> People:
    """Pad / clip a PersonSet to ``max_people``; people with no visible keypoint inside the map are dropped
    first (they carry no target; the PersonSet's mask already ignores their region), then the people beyond
    ``max_people`` (in their given order), which are counted in ``dropped``."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (N, K, 2), got {kp.shape}")
    n, k = kp.shape[:2]
    vis = np.asarray(visible, dtype=np.float64).reshape(n, k) > 0
    ar = np.asarray(areas, dtype=np.float64).reshape(n)
    finite = np.isfinite(kp).all(-1)
    safe = np.where(finite[..., None], kp, 0.0)
    cells = np.floor(safe / np.asarray(stride) + 0.5).astype(np.int64)
    width, height = heatmap_size
    inside = (cells[..., 0] >= 0) & (cells[..., 0] < width) & (cells[..., 1] >= 0) & (cells[..., 1] < height)
    vis = vis & finite & inside
    keep = np.flatnonzero(vis.any(1))
    dropped = max(0, keep.size - max_people)
    keep = keep[:max_people]
    out = People(
        keypoints=np.zeros((max_people, k, 2)),
        visible=np.zeros((max_people, k), dtype=bool),
        cells=np.zeros((max_people, k, 2), dtype=np.int64),
        areas=np.zeros(max_people),
        valid=np.zeros(max_people, dtype=bool),
        dropped=int(dropped),
    )
    m = keep.size
    out.visible[:m] = vis[keep]
    out.keypoints[:m] = np.where(out.visible[:m, :, None], safe[keep], 0.0)
    out.cells[:m] = np.where(out.visible[:m, :, None], cells[keep], 0)
    out.areas[:m] = np.where(np.isfinite(ar[keep]), np.maximum(ar[keep], 1.0), 1.0)
    out.valid[:m] = True
    return out


def multi_person_heatmaps(
    cells: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int], sigma: float
) -> np.ndarray:
    """Per-channel maximum over people of MSRA Gaussians (peak 1, truncated at 3 sigma) at ``cells`` (P,C,2)
    with ``visible`` (P,C); returns (C,H,W) float32 (HigherHRNet / DEKR targets)."""
    c = visible.shape[1]
    width, height = heatmap_size
    rows = np.flatnonzero(visible.any(1))
    if rows.size == 0:
        return np.zeros((c, height, width), dtype=np.float32)
    maps = gaussian_targets(cells[rows].reshape(-1, 2).astype(np.float64),
                            visible[rows].reshape(-1).astype(np.float32), heatmap_size, sigma, truncate=True)
    return maps.reshape(rows.size, c, height, width).max(0)


def local_offset_targets(people: People, stride: tuple[float, float], heatmap_size: tuple[int, int],
                         radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Short-range offset targets (PersonLab's, docs/method.md "Multi-person", our addition): for keypoint type k,
    every map cell within ``radius`` cells (Euclidean, to the exact position ``x / stride``) of a visible keypoint
    k of some person points at it: ``(keypoint - cell) / radius`` (x, y), so the values lie in [-1, 1]; a cell in
    reach of several people's keypoints k points at the nearest one. Returns ``local_offsets`` (K,2,H,W) and
    ``local_weight`` (K,H,W) (1 in reach, else 0; the caller applies the loss mask), float32."""
    width, height = heatmap_size
    k = people.visible.shape[1]
    offsets = np.zeros((k, 2, height, width), dtype=np.float32)
    weight = np.zeros((k, height, width), dtype=np.float32)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    exact = people.keypoints / np.asarray(stride, dtype=np.float64)  # (P,K,2) map coordinates
    for j in range(k):
        rows = np.flatnonzero(people.visible[:, j])
        if rows.size == 0:
            continue
        dx = exact[rows, j, 0][:, None, None] - xs[None, None, :]  # (n,1,W)
        dy = exact[rows, j, 1][:, None, None] - ys[None, :, None]  # (n,H,1)
        disp = np.stack(np.broadcast_arrays(dx, dy))  # (2,n,H,W)
        near = (disp**2).sum(0).argmin(0)  # (H,W) index of the nearest person
        nearest = np.take_along_axis(disp, near[None, None], 1)[:, 0]  # (2,H,W)
        inside = (nearest**2).sum(0) <= radius**2
        offsets[j] = np.where(inside, nearest, 0.0) / radius
        weight[j] = inside
    return offsets, weight


def person_regions(cells: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int],
                   margin: int = 1) -> np.ndarray:
    """(P,4) int64 ``[x0, y0, x1, y1]`` (inclusive map cells): the box of a person's visible keypoint cells
    grown by ``margin`` cells and clipped to the map; the ``local`` normalisation set Omega (our choice)."""
    width, height = heatmap_size
    big = np.iinfo(np.int64).max // 4
    xs = np.where(visible, cells[..., 0], big)
    ys = np.where(visible, cells[..., 1], big)
    x0 = xs.min(1) - margin
    y0 = ys.min(1) - margin
    x1 = np.where(visible, cells[..., 0], -big).max(1) + margin
    y1 = np.where(visible, cells[..., 1], -big).max(1) + margin
    box = np.stack([np.clip(x0, 0, width - 1), np.clip(y0, 0, height - 1),
                    np.clip(x1, 0, width - 1), np.clip(y1, 0, height - 1)], axis=1)
    return np.where(visible.any(1)[:, None], box, 0).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Flip
# ---------------------------------------------------------------------------------------------------------------
def _index(flip_indices: Sequence[int] | torch.Tensor | None, channels: int, device: torch.device) -> torch.Tensor:
    """Channel permutation for ``channels`` maps: ``flip_indices`` for the first K, identity for the rest (a
    centre channel appended after the K keypoints maps to itself)."""
    idx = list(range(channels)) if flip_indices is None else [int(i) for i in flip_indices]
    idx = idx + list(range(len(idx), channels))
    return torch.as_tensor(idx[:channels], dtype=torch.long, device=device)


def flip_back_maps(maps: torch.Tensor, flip_indices: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """(B,C,H,W) maps of the mirrored input in the original frame: columns reversed, channels permuted
    (channels beyond ``len(flip_indices)`` keep their place)."""
    return maps.flip(-1).index_select(1, _index(flip_indices, maps.shape[1], maps.device))


def flip_back_offsets(offsets: torch.Tensor, flip_indices: Sequence[int] | torch.Tensor | None,
                      shift: float) -> torch.Tensor:
    """(B,K,2,H,W) offsets of the mirrored input in the original frame: columns reversed, keypoints permuted,
    ``o_x -> -o_x - shift`` (``shift = 1 - 1/stride`` cells, or ``1/W - 1/w`` normalised; module docstring)."""
    off = offsets.flip(-1).index_select(1, _index(flip_indices, offsets.shape[1], offsets.device))
    return torch.stack([-off[:, :, 0] - shift, off[:, :, 1]], dim=2)


# ---------------------------------------------------------------------------------------------------------------
# Proposals, pose NMS, grouping
# ---------------------------------------------------------------------------------------------------------------
def local_peaks(conf: torch.Tensor, kernel: int, top: int, thr: float,
                values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of (C,H,W) maps ``conf`` (max-pool NMS with an odd ``kernel``), ranked by ``values`` (C,H,W)
    (default ``conf``; e.g. the raw confidence when ``conf`` is a smoothed copy): the ``top`` best per channel,
    values (C,top) and flat cell indices (C,top); values ``<= thr`` (or not at a local maximum) are -inf."""
    h, w = conf.shape[-2:]
    values = conf if values is None else values
    pooled = F.max_pool2d(conf[None], kernel, stride=1, padding=kernel // 2)[0]
    peaks = torch.where(pooled == conf, values, torch.full_like(values, -float("inf")))
    vals, idx = peaks.flatten(1).topk(min(top, h * w), dim=1)
    vals = torch.where(vals > thr, vals, torch.full_like(vals, -float("inf")))
    return vals, idx


def pose_nms(poses: np.ndarray, scores: np.ndarray, sigmas: np.ndarray, thr: float) -> np.ndarray:
    """Greedy OKS-NMS over one image's poses (M,K,3) (highest score kept; a pose is dropped when its OKS with a
    kept one exceeds ``thr``). A pose's area is its keypoint box ``w * h`` (floored at 1 px^2), the OKS that
    of :func:`sar.evaluation.coco_ap.pairwise_oks`. Returns the kept indices by decreasing score."""
    order = np.argsort(-scores, kind="stable")
    if poses.shape[0] <= 1 or thr >= 1.0:
        return order
    span = poses[..., :2].max(1) - poses[..., :2].min(1)
    areas = np.maximum(span[:, 0] * span[:, 1], 1.0)
    oks = pairwise_oks(poses, areas, sigmas)
    suppressed = np.zeros(poses.shape[0], dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= oks[i] > thr
    return np.asarray(keep, dtype=np.int64)


def group_by_tags(
    coords: np.ndarray,
    scores: np.ndarray,
    tags: np.ndarray,
    tag_thr: float = 1.0,
    use_detection_val: bool = True,
    joint_order: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """HigherHRNet's ``match_by_tag``: candidates (K,M) with ``coords`` (K,M,2), ``scores`` (K,M) (-inf = no
    candidate) and ``tags`` (K,M,D) grouped into people joint type by joint type (``joint_order``, default
    :data:`COCO_JOINT_ORDER` for K = 17 else 0..K-1). A joint joins the person whose mean tag is nearest by
    the Hungarian assignment (:func:`scipy.optimize.linear_sum_assignment`) on the cost
    ``round(||t - mean tag||) * 100 - score`` (``use_detection_val``; else the distance), when the distance is
    ``< tag_thr``; otherwise it starts a new person.

    Returns ``poses`` (G,K,3) [x, y, score] (score 0 and x, y 0 for a joint the person lacks) and the people's
    mean tags (G,D).
    """
    k = scores.shape[0]
    order = list(joint_order) if joint_order is not None else (
        list(COCO_JOINT_ORDER) if k == 17 else list(range(k)))
    people: list[np.ndarray] = []  # (K,3) each
    person_tags: list[list[np.ndarray]] = []
    for j in order:
        ok = np.isfinite(scores[j]) & (scores[j] > -np.inf)
        if not ok.any():
            continue
        cand_xy, cand_s, cand_t = coords[j][ok], scores[j][ok], tags[j][ok]
        if not people:
            for c in range(cand_s.size):
                pose = np.zeros((k, 3))
                pose[j] = (*cand_xy[c], cand_s[c])
                people.append(pose)
                person_tags.append([cand_t[c]])
            continue
        means = np.stack([np.mean(t, axis=0) for t in person_tags])  # (G,D)
        dist = np.linalg.norm(cand_t[:, None, :] - means[None], axis=-1)  # (n, G)
        cost = np.round(dist) * 100.0 - cand_s[:, None] if use_detection_val else dist.copy()
        n, g = cost.shape
        if n > g:  # more candidates than people: pad with unreachable people
            cost = np.concatenate([cost, np.full((n, n - g), 1e10)], axis=1)
        rows, cols = linear_sum_assignment(cost)
        assigned = set()
        for r, c in zip(rows, cols, strict=True):
            if c < g and dist[r, c] < tag_thr:
                people[c][j] = (*cand_xy[r], cand_s[r])
                person_tags[c].append(cand_t[r])
                assigned.add(r)
        for r in range(n):
            if r not in assigned:
                pose = np.zeros((k, 3))
                pose[j] = (*cand_xy[r], cand_s[r])
                people.append(pose)
                person_tags.append([cand_t[r]])
    if not people:
        return np.zeros((0, k, 3)), np.zeros((0, tags.shape[-1]))
    return np.stack(people), np.stack([np.mean(t, axis=0) for t in person_tags])


def finish_poses(
    poses: np.ndarray, scores: np.ndarray, sigmas: np.ndarray, nms_thr: float, max_proposals: int
) -> tuple[np.ndarray, np.ndarray]:
    """OKS-NMS (:func:`pose_nms`), then the ``max_proposals`` best, sorted by score, as float32."""
    keep = pose_nms(poses, scores, sigmas, nms_thr)[:max_proposals] if poses.shape[0] else np.zeros(0, int)
    k = poses.shape[1] if poses.ndim == 3 else sigmas.size
    if keep.size == 0:
        return np.zeros((0, k, 3), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return poses[keep].astype(np.float32), scores[keep].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Codec base
# ---------------------------------------------------------------------------------------------------------------
class BottomUpCodec:
    """Keys and checks every bottom-up codec shares (docs/bottomup.md): sizes, the Gaussian ``sigma`` (map
    cells), the max-pool NMS kernel, the pose OKS-NMS threshold, ``max_people`` (encoded people),
    ``max_proposals`` (m = 30) and ``score_thr`` (gamma = 0.01) [C docs/method.md "Multi-person"], and OKS ``sigmas``."""

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float, nms_kernel: int,
                 nms_thr: float, max_people: int, max_proposals: int, score_thr: float,
                 sigmas: Sequence[float] | None) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        if min(self.input_size) <= 0 or min(self.heatmap_size) <= 0:
            raise ValueError(f"sizes must be positive: input {self.input_size}, heatmap {self.heatmap_size}")
        self.stride = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        check_odd("nms_kernel", nms_kernel)
        if max_people < 1 or max_proposals < 1:
            raise ValueError("max_people and max_proposals must be >= 1")
        self.sigma = float(sigma)
        self.nms_kernel = int(nms_kernel)
        self.nms_thr = float(nms_thr)
        self.max_people, self.max_proposals = int(max_people), int(max_proposals)
        self.score_thr = float(score_thr)
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]

    #: the :mod:`sar.codecs.bottomup.oracle` function of the head (set by each codec class)
    _oracle: Any = None

    def oracle_outputs(self, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The outputs a perfect head would give for batched ``targets`` of this codec (decoding them gives the
        ground truth back; :mod:`sar.codecs.bottomup.oracle`)."""
        return type(self)._oracle(dict(targets), self.heatmap_size)

    #: unit of an ``offsets`` output: ``cell`` (map cells, the same at any input size) or ``norm`` (the SAR
    #: heads': fractions of the input size the network was trained at)
    offset_unit = "cell"
    #: training input size / this codec's input size (w, h), set by :meth:`at_size`
    _offset_factor: tuple[float, float] = (1.0, 1.0)

    def at_size(self, input_size: Sequence[int], heatmap_size: Sequence[int]) -> BottomUpCodec:
        """This codec (a shallow copy) decoding ``input_size`` (w, h) inputs with ``heatmap_size`` maps (the
        multi-scale test, ``task.test_scales``); ``norm`` offsets are rescaled from the training input's units
        to this size's (:meth:`_native`)."""
        out = copy.copy(self)
        out._offset_factor = (self._offset_factor[0] * self.input_size[0] / int(input_size[0]),
                              self._offset_factor[1] * self.input_size[1] / int(input_size[1]))
        out.input_size = (int(input_size[0]), int(input_size[1]))
        out.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        out.stride = (out.input_size[0] / out.heatmap_size[0], out.input_size[1] / out.heatmap_size[1])
        return out

    def _native(self, outputs: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor] | None:
        """``outputs`` with ``norm`` offsets in this codec's input units (a network's offsets are in the units of
        the input it was trained at: a person twice as large in pixels regresses the same fractions of it)."""
        if outputs is None or self.offset_unit != "norm" or self._offset_factor == (1.0, 1.0):
            return outputs
        offsets = outputs["offsets"]
        return {**outputs, "offsets": offsets * offsets.new_tensor(self._offset_factor)[:, None, None]}

    def nms_sigmas(self, num_keypoints: int, sigmas: Sequence[float] | None = None) -> np.ndarray:
        """OKS sigmas of the pose NMS: those of the ``decode`` call, else the codec's, else :func:`default_sigmas`."""
        return default_sigmas(num_keypoints, sigmas if sigmas is not None else self.sigmas)

    def prepare(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
                mask: np.ndarray | None) -> tuple[People, dict[str, np.ndarray]]:
        """The padded people and their common targets (:meth:`People.common_targets`); ``mask`` None = all 1."""
        width, height = self.heatmap_size
        if mask is None:
            mask32 = np.ones((height, width), dtype=np.float32)
        else:
            mask32 = np.asarray(mask, dtype=np.float32)
            if mask32.shape != (height, width):
                raise ValueError(f"mask must have the map's shape {(height, width)}, got {mask32.shape}")
        people = prepare_people(keypoints, visible, areas, self.stride, self.heatmap_size, self.max_people)
        return people, people.common_targets(self.input_size, mask32)


def check_odd(name: str, value: int) -> None:
    """ValueError unless ``value`` is a positive odd integer (a pooling kernel)."""
    if int(value) < 1 or int(value) % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer, got {value}")
