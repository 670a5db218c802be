"""RealNVP density used by the RLE losses (Li et al., ICCV 2021; docs/heads.md): 2-D (top-down) and 3-D
(task=pose3d, RLE's ``regression_nf_3d``: masks ``[0, 0, 1]`` / ``[1, 1, 0]``, MLPs 3-64-64-3).

The flow models the density ``G_phi`` of the scaled residual ``eps = (mu_hat - mu) / sigma``. It is a stack
of affine coupling layers: layer ``i`` keeps the coordinate selected by its binary mask ``m_i`` and
transforms the other one with a scale net ``s_i`` (MLP 2-64-64-2, LeakyReLU, tanh output) and a translation
net ``t_i`` (same MLP without the tanh), both fed the masked input. The masks alternate ``[0, 1]`` and
``[1, 0]``; the default 3 pairs give 6 layers. The base (prior) density is the standard 2-D Gaussian.

Generative direction (``forward``, base ``z`` -> data ``x``), layers in order:
``x = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x))``.
Density direction (``inverse``, data -> base), layers in reverse order, with
``log G(x) = log N(z; 0, I) - sum_i sum((1 - m_i) * s_i)``.

Linear weights start at ``xavier_uniform(gain=0.01)`` (as in the official code), so a fresh flow is close to
the identity and ``G`` is close to the standard normal.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RealNVP"]

_LOG_2PI = math.log(2.0 * math.pi)
#: The coupling masks of one layer pair, per dimension.
_MASKS = {2: ((0.0, 1.0), (1.0, 0.0)), 3: ((0.0, 0.0, 1.0), (1.0, 1.0, 0.0))}


def _mlp(hidden: int, tanh: bool, dim: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(dim, hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, dim),
    ]
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(nn.Module):
    """RealNVP on 2-D (or 3-D) points.

    Args:
        num_pairs: number of coupling-layer pairs (masks ``[0, 1]`` then ``[1, 0]``; in 3-D ``[0, 0, 1]`` then
            ``[1, 1, 0]``); 3 in RLE.
        hidden: hidden width of the s and t MLPs; 64 in RLE.
        dim: 2 or 3.
    """

    def __init__(self, num_pairs: int = 3, hidden: int = 64, dim: int = 2) -> None:
        super().__init__()
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        if dim not in _MASKS:
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.dim = int(dim)
        masks = torch.tensor(_MASKS[dim]).repeat(num_pairs, 1)  # (2 * num_pairs, dim)
        self.register_buffer("masks", masks)
        self.s = nn.ModuleList([_mlp(hidden, tanh=True, dim=dim) for _ in range(len(masks))])
        self.t = nn.ModuleList([_mlp(hidden, tanh=False, dim=dim) for _ in range(len(masks))])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def _st(self, i: int, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = 1.0 - self.masks[i]
        return self.s[i](masked) * keep, self.t[i](masked) * keep

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generative map base ``z`` (N,2) -> data ``x`` (N,2)."""
        x = z
        for i in range(len(self.masks)):
            mask = self.masks[i]
            masked = mask * x
            s, t = self._st(i, masked)
            x = masked + (1.0 - mask) * (x * torch.exp(s) + t)
        return x

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data ``x`` (N,2) -> base ``z`` (N,2) and ``log |det dz/dx|`` (N,)."""
        z = x
        log_det = x.new_zeros(x.shape[0])
        for i in reversed(range(len(self.masks))):
            mask = self.masks[i]
            masked = mask * z
            s, t = self._st(i, masked)
            z = masked + (1.0 - mask) * (z - t) * torch.exp(-s)
            log_det = log_det - s.sum(dim=1)
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log G(x)`` (N,) for points ``x`` (N, dim)."""
        z, log_det = self.inverse(x)
        prior = -0.5 * (z * z).sum(dim=1) - 0.5 * self.dim * _LOG_2PI
        return prior + log_det
