"""Weight clipping of the critic (Arjovsky et al., 2017, Algorithm 1, c = 0.01)."""

from __future__ import annotations

import torch
from torch import nn

from gancollapse.regularizers.base import Regularizer


class WeightClipping(Regularizer):
    def __init__(self, clip: float = 0.01) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"regularizer.weight_clipping.clip must be > 0, got {clip}")
        self.clip = float(clip)

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        params = [p for p in discriminator.parameters()]
        # One fused call rather than a Python loop of clamp_ launches.
        torch._foreach_clamp_min_(params, -self.clip)
        torch._foreach_clamp_max_(params, self.clip)
