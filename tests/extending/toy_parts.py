"""A toy head (module, codec, loss) and a toy task (LightningModule, DataModule) defined outside src/sar, plugged
in by YAML alone (tests/extending/conf on Hydra's search path; tests/test_extending.py, docs/extending.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sar.codecs.flip import CoordinateFlip
from sar.systems.base import PoseSystem


# -- a toy head for the top-down task ----------------------------------------------------------------------------
class ToyHead(nn.Module):
    """Global average pooling + one linear layer to K normalised (x, y): the smallest head there is."""

    def __init__(self, in_channels: int, num_keypoints: int, hidden: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.fc = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, num_keypoints * 2))

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = x[-1] if isinstance(x, (list, tuple)) else x
        return {"toy_coords": self.fc(x.mean(dim=(2, 3))).view(-1, self.num_keypoints, 2).sigmoid()}


class ToyCodec(CoordinateFlip):
    """Targets: keypoints / input size; decoding: back to pixels, score 1; flip test by sar.codecs.flip
    (``CoordinateFlip.decode_flip``: decode both passes, mirror, swap pairs, average)."""

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], margin: float) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.margin = float(margin)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        norm = np.nan_to_num(np.asarray(keypoints, np.float64)) / np.asarray(self.input_size, np.float64)
        weights = (np.asarray(visible) > 0) & (np.abs(norm - 0.5) <= 0.5 + self.margin).all(axis=1)
        return {"toy_target": norm.astype(np.float32), "toy_weights": weights.astype(np.float32)}

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        coords = outputs["toy_coords"].float() * outputs["toy_coords"].new_tensor(self.input_size)
        return coords, torch.ones(coords.shape[:2], device=coords.device)


class ToyLoss(nn.Module):
    """Weighted L1 between predicted and target normalised coordinates."""

    def __init__(self, loss_weight: float) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = targets["toy_weights"][..., None]
        l1 = ((outputs["toy_coords"] - targets["toy_target"]).abs() * w).sum() / w.sum().clamp(min=1.0)
        return {"total": self.loss_weight * l1, "loss_toy": l1}


# -- a toy task ---------------------------------------------------------------------------------------------------
class ToySystem(PoseSystem):
    """Regress the centre of a bright square in a random image; metric: mean error in pixels."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 2))
        self._errors: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        images, centres = batch
        outputs = {"centre": self.net(images)}
        loss = (outputs["centre"] - centres).abs().mean()
        self.log("train/total", loss)
        return {"loss": loss, "outputs": outputs}

    def validation_step(self, batch, batch_idx):
        images, centres = batch
        pred = self.net(images)
        self._errors.append((pred - centres).norm(dim=-1))
        return {"centre": pred}

    def on_validation_epoch_end(self) -> None:
        error = float(torch.cat(self._errors).mean()) * float(self.cfg["dataset"]["image_size"])
        self._errors = []
        self.last_metrics = {"centre_error_px": error}
        self.log("val/centre_error_px", error)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=float(self.cfg["optim"]["lr"]))


class ToyDataModule(pl.LightningDataModule):
    def __init__(self, config: dict[str, Any], system: ToySystem, num_train: int, num_val: int) -> None:
        super().__init__()
        self.size, self.batch_size = int(config["dataset"]["image_size"]), int(config["dataset"]["batch_size"])
        self.num_train, self.num_val = num_train, num_val

    def _data(self, n: int, seed: int) -> TensorDataset:
        gen = torch.Generator().manual_seed(seed)
        centres = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
        grid = torch.arange(self.size).float() / self.size
        inside = ((grid[None, None, :] - centres[:, 0, None, None]).abs() < 0.1) & (
            (grid[None, :, None] - centres[:, 1, None, None]).abs() < 0.1)
        return TensorDataset(inside.float()[:, None], centres)

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set = self._data(self.num_train, 0), self._data(self.num_val, 1)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)
