"""Grouping bottom-up codecs: ``sar_ae`` (B1, keypoint-level SAR + associative embedding) and ``ae`` (the
HigherHRNet baseline). Keypoints of every type are detected first, then grouped into people by their tags
(Hungarian matching, :func:`sar.codecs.bottomup.common.group_by_tags`).

Shared targets (P = ``max_people``): ``mask`` (H,W), ``person_valid`` (P,), ``keypoint_valid`` (P,K),
``keypoints_norm`` (P,K,2) (input px / input size), ``areas`` (P,), ``people_dropped`` (),
``keypoint_cells`` (P,K) flat cell ``i * W + j`` of each keypoint (where the AE tags are read) and
``heatmap`` (K,H,W) (MSRA Gaussians of ``sigma`` at the keypoint cells, max over people).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sar.codecs.bottomup.common import (
    BottomUpCodec,
    People,
    finish_poses,
    flip_back_maps,
    flip_back_offsets,
    group_by_tags,
    local_peaks,
    multi_person_heatmaps,
    person_regions,
)
from sar.codecs.bottomup.oracle import oracle_ae, oracle_sar_ae
from sar.codecs.heatmap import refine_quarter
from sar.codecs.sar import sar_grid

__all__ = ["AECodec", "SARAECodec"]


class _GroupingCodec(BottomUpCodec):
    """Encode skeleton and the tag-grouping decode loop; subclasses give the candidate maps and coordinates."""

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float, nms_kernel: int,
                 tag_thr: float, use_detection_val: bool, nms_thr: float, max_people: int, max_proposals: int,
                 score_thr: float, sigmas: Sequence[float] | None) -> None:
        super().__init__(input_size, heatmap_size, sigma, nms_kernel, nms_thr, max_people, max_proposals,
                         score_thr, sigmas)
        self.tag_thr = float(tag_thr)
        self.use_detection_val = bool(use_detection_val)

    def _people(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
                mask: np.ndarray | None) -> tuple[People, dict[str, np.ndarray]]:
        people, targets = self.prepare(keypoints, visible, areas, mask)
        width = self.heatmap_size[0]
        targets["keypoint_cells"] = (people.cells[..., 1] * width + people.cells[..., 0]).astype(np.int64)
        targets["heatmap"] = multi_person_heatmaps(people.cells, people.visible, self.heatmap_size, self.sigma)
        return people, targets

    # -- decoding ----------------------------------------------------------------------------------------------
    def _merged(self, outputs: Mapping[str, torch.Tensor], flipped: Mapping[str, torch.Tensor] | None,
                flip_indices: Sequence[int] | torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Candidate confidence ``conf`` (B,K,H,W), ``tags`` (B,K,H,W) and, for SAR, ``offsets``; each averaged
        with the flipped-back mirrored pass when given."""
        maps = self._maps(outputs)
        if flipped is None:
            return maps
        if flip_indices is None:
            raise ValueError("flip_indices is needed to merge flipped outputs")
        f_maps = self._maps(flipped)
        merged = {}
        for key, value in maps.items():
            if key == "offsets":
                shift = 1.0 / self.heatmap_size[0] - 1.0 / self.input_size[0]
                back = flip_back_offsets(f_maps[key], flip_indices, shift)
            else:
                back = flip_back_maps(f_maps[key], flip_indices)
            merged[key] = 0.5 * (value + back)
        return merged

    def _maps(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _candidate_coords(self, maps: dict[str, torch.Tensor], b: int, idx: torch.Tensor) -> torch.Tensor:
        """Coordinates (K,M,2) of the candidates at flat cells ``idx`` (K,M): input px (SAR) or map cells (AE)."""
        raise NotImplementedError

    def _complete(self, maps: dict[str, torch.Tensor], b: int, poses: np.ndarray,
                  tags: np.ndarray) -> np.ndarray:
        """Fill / adjust the grouped poses (G,K,3) and return them in input px."""
        raise NotImplementedError

    @torch.no_grad()
    def decode(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped_outputs: Mapping[str, torch.Tensor] | None = None,
        flip_indices: Sequence[int] | torch.Tensor | None = None,
        sigmas: Sequence[float] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: ``(poses (M,K,3) float32 [x, y, score] input px, scores (M,) float32)``, sorted by score.

        Per keypoint type: max-pool NMS (``nms_kernel``), the top ``max_proposals`` candidates with confidence
        ``> score_thr``; tags read at the candidate cells; Hungarian grouping (HigherHRNet's ``match_by_tag``,
        tag threshold ``tag_thr``); pose score = mean of the K keypoint scores (0 for a missing joint); OKS-NMS
        (``nms_thr``); the best ``max_proposals``. Flip merge: the confidence maps, the tag maps (HigherHRNet
        concatenates the two passes' tags; we average them) and, for SAR, the offsets (exact flip-back, so the
        two passes' hypotheses) are averaged with the flipped-back mirrored pass (columns reversed, channels
        swapped with ``flip_indices``).
        """
        outputs, flipped_outputs = self._native(outputs), self._native(flipped_outputs)
        maps = self._merged(outputs, flipped_outputs, flip_indices)
        conf, tags = maps["conf"], maps["tags"]
        k = conf.shape[1]
        sig = self.nms_sigmas(k, sigmas)
        results = []
        for b in range(conf.shape[0]):
            vals, idx = local_peaks(conf[b], self.nms_kernel, self.max_proposals, self.score_thr)
            coords = self._candidate_coords(maps, b, idx)
            cand_tags = tags[b].flatten(1).gather(1, idx)[..., None]  # (K,M,1)
            poses, mean_tags = group_by_tags(coords.cpu().double().numpy(), vals.cpu().double().numpy(),
                                             cand_tags.cpu().double().numpy(), self.tag_thr,
                                             self.use_detection_val)
            if poses.shape[0] == 0:
                results.append(finish_poses(poses, np.zeros(0), sig, self.nms_thr, self.max_proposals))
                continue
            poses = self._complete(maps, b, poses, mean_tags)
            scores = poses[..., 2].mean(1)
            results.append(finish_poses(poses, scores, sig, self.nms_thr, self.max_proposals))
        return results


class SARAECodec(_GroupingCodec):
    """B1 ``sar_ae``: selector (K), offsets (2K, normalised units), tags (K), auxiliary heatmap (K).

    Encode: the shared targets (module docstring) + ``scale`` (P,) (person kernel scale
    ``sqrt(area / (w * h))``, as :class:`~sar.codecs.bottomup.center.SARCenterCodec`) and ``region`` (P,4)
    (the ``local`` Omega). Decode [I, docs/method.md "Multi-person" B1]: confidence = ``sigmoid(selector)`` (``score:
    selector``, default) or ``sigmoid(aux heatmap)`` (``heatmap``); candidates per type; coordinates = the
    regressed points ``p_t - o_t`` of the candidate cells; keypoint score = the confidence; tags at the same
    cells; grouping. A joint the person lacks gets score 0 and the mean position of its found joints (our
    choice: no refine step for B1).
    """

    _oracle = staticmethod(oracle_sar_ae)

    offset_unit = "norm"

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], score: str = "selector",
                 sigma: float = 2.0, region_margin: int = 1, nms_kernel: int = 5, tag_thr: float = 1.0,
                 use_detection_val: bool = True, nms_thr: float = 0.8, max_people: int = 30,
                 max_proposals: int = 30, score_thr: float = 0.01, sigmas: Sequence[float] | None = None) -> None:
        super().__init__(input_size, heatmap_size, sigma, nms_kernel, tag_thr, use_detection_val, nms_thr,
                         max_people, max_proposals, score_thr, sigmas)
        if score not in ("selector", "heatmap"):
            raise ValueError(f"score must be 'selector' or 'heatmap', got {score!r}")
        self.score = score
        self.region_margin = int(region_margin)

    def __repr__(self) -> str:
        return f"SARAECodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, score={self.score!r})"

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
               mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Targets of one image (module docstring + ``scale``, ``region``)."""
        people, targets = self._people(keypoints, visible, areas, mask)
        w, h = self.input_size
        targets["scale"] = np.where(people.valid, np.sqrt(people.areas / (w * h)), 1.0).astype(np.float32)
        targets["region"] = person_regions(people.cells, people.visible, self.heatmap_size, self.region_margin)
        return targets

    def _maps(self, outputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        key = "logits" if self.score == "selector" else "heatmap"
        return {"conf": torch.sigmoid(outputs[key].float()), "tags": outputs["tags"].float(),
                "offsets": outputs["offsets"].float()}

    def _candidate_coords(self, maps: dict[str, torch.Tensor], b: int, idx: torch.Tensor) -> torch.Tensor:
        width, height = self.heatmap_size
        off = maps["offsets"][b].flatten(2)  # (K,2,HW)
        k, m = idx.shape
        off_at = off.gather(2, idx[:, None, :].expand(k, 2, m)).permute(0, 2, 1)  # (K,M,2)
        grid = sar_grid(width, height, off.device, off.dtype).flatten(1)  # (2,HW)
        p = torch.stack([grid[0][idx], grid[1][idx]], -1)  # (K,M,2)
        return (p - off_at) * off.new_tensor(self.input_size)

    def _complete(self, maps: dict[str, torch.Tensor], b: int, poses: np.ndarray,
                  tags: np.ndarray) -> np.ndarray:
        found = poses[..., 2] > 0
        n = np.maximum(found.sum(1, keepdims=True), 1)
        mean_xy = (poses[..., :2] * found[..., None]).sum(1) / n
        poses[..., :2] = np.where(found[..., None], poses[..., :2], mean_xy[:, None, :])
        return poses


class AECodec(_GroupingCodec):
    """``ae`` baseline (HigherHRNet [C docs/method.md "Multi-person"], stride-4 branch only: the 1/2-resolution heatmaps of
    HigherHRNet are skipped): heatmaps (K, MSE) and tags (K).

    Decode: heatmaps (flip-averaged), NMS kernel 5, top 30 per joint with value ``> score_thr`` = 0.1 (the
    detection threshold), Hungarian grouping on the tags (threshold 1, cost with the detection value), then
    ``refine`` (HigherHRNet): a joint the person lacks is taken at the argmax of
    ``heatmap_k - round(|tag_k - person's mean tag|)`` when that heatmap value is > 0; every joint is then
    moved a quarter cell towards its larger heatmap neighbour (:func:`sar.codecs.heatmap.refine_quarter`).
    A joint still missing gets score 0 and the mean of the found joints' positions. Pose score = mean keypoint
    score (heatmap values).
    """

    _oracle = staticmethod(oracle_ae)

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 nms_kernel: int = 5, tag_thr: float = 1.0, use_detection_val: bool = True, refine: bool = True,
                 nms_thr: float = 0.8, max_people: int = 30, max_proposals: int = 30, score_thr: float = 0.1,
                 sigmas: Sequence[float] | None = None) -> None:
        super().__init__(input_size, heatmap_size, sigma, nms_kernel, tag_thr, use_detection_val, nms_thr,
                         max_people, max_proposals, score_thr, sigmas)
        self.refine = bool(refine)

    def __repr__(self) -> str:
        return f"AECodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, refine={self.refine})"

    def encode(self, keypoints: np.ndarray, visible: np.ndarray, areas: np.ndarray,
               mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Targets of one image (module docstring)."""
        return self._people(keypoints, visible, areas, mask)[1]

    def _maps(self, outputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"conf": outputs["heatmap"].float(), "tags": outputs["tags"].float()}

    def _candidate_coords(self, maps: dict[str, torch.Tensor], b: int, idx: torch.Tensor) -> torch.Tensor:
        width = self.heatmap_size[0]
        return torch.stack([idx % width, idx // width], -1).to(maps["conf"].dtype)

    def _complete(self, maps: dict[str, torch.Tensor], b: int, poses: np.ndarray,
                  tags: np.ndarray) -> np.ndarray:
        hm = maps["conf"][b]  # (K,H,W)
        k, h, w = hm.shape
        g = poses.shape[0]
        xy = torch.as_tensor(poses[..., :2], device=hm.device).round().long()  # (G,K,2) cells
        score = torch.as_tensor(poses[..., 2], device=hm.device, dtype=hm.dtype)
        if self.refine:
            mean_tag = torch.as_tensor(tags[:, 0], device=hm.device, dtype=hm.dtype)  # (G,)
            dist = (maps["tags"][b][None] - mean_tag[:, None, None, None]).abs()  # (G,K,H,W)
            best = (hm[None] - dist.round()).flatten(2).argmax(-1)  # (G,K)
            val = hm.flatten(1)[torch.arange(k, device=hm.device)[None, :].expand(g, k), best]
            fill = (score <= 0) & (val > 0)
            xy = torch.where(fill[..., None], torch.stack([best % w, best // w], -1), xy)
            score = torch.where(fill, val, score)
        found = score > 0
        cells = xy.to(hm.dtype) + refine_quarter(hm[None].expand(g, k, h, w), xy[..., 0], xy[..., 1])
        px = (cells * cells.new_tensor(self.stride)).cpu().double().numpy()
        found_np = found.cpu().numpy()
        n = np.maximum(found_np.sum(1, keepdims=True), 1)
        mean_xy = (px * found_np[..., None]).sum(1) / n
        px = np.where(found_np[..., None], px, mean_xy[:, None, :])
        return np.concatenate([px, np.where(found_np, score.cpu().double().numpy(), 0.0)[..., None]], -1)
