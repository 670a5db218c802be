"""Validation without a network: the top-down system's crop predictions taken from the batch's own codec targets.

A run's whole validation path (the dataset's reader, the GT-box crops and their inverse warp to image pixels, the
dataset's evaluator) scored on the ground truth itself: exact predictions must give the evaluator's best values
(AP 1.0, PCKh 1.0, keypoint error 0), so a wrong crop mapping, keypoint order or evaluator shows as a number.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from sar.build import build_datamodule
from sar.stored_config import upgrade_config
from sar.systems.topdown import TopDownSystem


class OracleSystem(TopDownSystem):
    """``predict_crops`` returns the GT keypoints of each crop (``targets["keypoints_norm"]`` in input pixels, the
    target of the SAR / heatmap+offset / regression codecs) through :meth:`perturb`: as they are, with score 1 for
    a keypoint the codec weights (labelled, on the map) and 0 otherwise."""

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self._batch = batch
        return super().validation_step(batch, batch_idx, dataloader_idx)

    def perturb(
        self, index: int, keypoints: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keypoints (K,2) crop px and scores (K,) of the sample at dataset position ``index``."""
        return keypoints, (weights > 0).float()

    @torch.no_grad()
    def predict_crops(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = self._batch["targets"]
        size = torch.tensor([float(v) for v in self.codec.input_size])
        keypoints, scores = [], []
        for i, index in enumerate(self._batch["meta"]["index"].tolist()):
            kpts, score = self.perturb(int(index), targets["keypoints_norm"][i].float() * size,
                                       targets["keypoint_weights"][i].float())
            keypoints.append(kpts)
            scores.append(score)
        return torch.stack(keypoints), torch.stack(scores)


def oracle_metrics(config: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of :class:`OracleSystem` on the validation set of a run config (e.g. a run's config.yaml), on GT
    boxes (``val_bbox_file`` null), in this process on the CPU."""
    config = upgrade_config(copy.deepcopy(dict(config)))
    config["dataset"] = {**config["dataset"], "val_bbox_file": None, "num_workers": 0}
    system = OracleSystem(config)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(system, datamodule=build_datamodule(config, system), verbose=False)
    return system.last_metrics
