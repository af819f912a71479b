"""Top-k training of GANs (Sinha et al., NeurIPS 2020).

G's loss uses only the k fake samples D scores as most realistic. k starts at the batch size and decays
by γ each epoch down to a floor ν·B (Sec. 3, "k ← max(γk, ν)"); ``start_epoch`` delays the first
reduction. The Mode_Collapse seed's rule (fixed 50% from mid-training) is ``gamma=0, nu=0.5,
start_epoch=epochs/2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gancollapse.losses import per_sample_score
from gancollapse.regularizers.base import Regularizer, Step


def topk_count(batch_size: int, epoch: int, gamma: float = 0.99, nu: float = 0.5, start_epoch: int = 0) -> int:
    """k for ``epoch``: B before ``start_epoch``, then max(⌊γ^(e−start+1)·B⌋, ⌈ν·B⌉)."""
    if epoch < start_epoch:
        return batch_size
    decayed = math.floor(batch_size * gamma ** (epoch - start_epoch + 1) + 1e-9)
    floor = max(1, math.ceil(nu * batch_size - 1e-9))
    return int(min(batch_size, max(decayed, floor)))


class TopK(Regularizer):
    def __init__(self, gamma: float = 0.99, nu: float = 0.5, start_epoch: int = 0) -> None:
        super().__init__()
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"regularizer.topk.gamma must be in [0, 1], got {gamma}")
        if not 0.0 < nu <= 1.0:
            raise ValueError(f"regularizer.topk.nu must be in (0, 1], got {nu}")
        self.gamma, self.nu, self.start_epoch = float(gamma), float(nu), int(start_epoch)
        self.register_buffer("last_k", torch.zeros((), dtype=torch.long))

    def filter_fake(self, d_fake: Tensor, step: Step) -> Tensor | None:
        b = d_fake.shape[0]
        k = topk_count(b, step.epoch, self.gamma, self.nu, self.start_epoch)
        self.last_k.fill_(k)
        if k >= b:
            return None
        return per_sample_score(d_fake).detach().topk(k).indices
