"""Top-k training of GANs (Sinha et al., "Top-k Training of GANs: Improving GAN Performance by Throwing Away
Bad Samples", NeurIPS 2020, Algorithm 1).

G's loss uses only the k fake samples D scores as most realistic. k starts at the batch size B and, at the
end of every epoch, decays as k ← max(γ·k, ν) with ν = ``nu``·B a minimum. So the first epoch of the
schedule trains G on the whole batch and the first reduction applies from the next epoch on: with B = 64,
γ = 0.99, ν = 0.5 the epochs 0, 1, 2, 3, 4 use k = 64, 63, 62, 62, 61, … down to 32.
``start_epoch`` delays the schedule: k = B up to and including ``start_epoch``.

k is kept real-valued and rounded down only when used (as in PyTorch-StudioGAN's ``adjust_k``, which
iterates ``max(k·γ, int(B·ν))`` once per epoch and selects ``int(k)`` samples), so it has the closed form
k_e = ⌊max(γ^(e − start)·B, ν·B)⌋. Rounding k itself every epoch would instead lose a whole sample each
epoch while k < 1/(1 − γ) (100 for γ = 0.99) and reach the floor twice as soon (B = 64: epoch 32, not 66).
Being a function of the epoch alone, k needs no state to resume.

The Mode_Collapse seed's rule (``topk(s_f, B // 2)`` from epoch ``epochs/2`` on, no decay) is
``gamma=0, nu=0.5, start_epoch=epochs/2 − 1`` (γ⁰ = 1 keeps k = B in ``start_epoch`` itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gancollapse.losses import per_sample_score
from gancollapse.regularizers.base import Regularizer, Step


def topk_count(batch_size: int, epoch: int, gamma: float = 0.99, nu: float = 0.5, start_epoch: int = 0) -> int:
    """k for 0-based ``epoch``: B up to ``start_epoch``, then ⌊max(γ^(epoch − start_epoch)·B, ν·B)⌋, at least 1.

    Sinha et al. Algorithm 1 (k ← max(γk, ν) at each epoch end, starting from k = B) in closed form, with k
    real-valued and rounded down when used. The 1e-9 guards exact products (γ = 0.5, B = 64) against
    round-off below an integer.
    """
    if epoch <= start_epoch:
        return int(batch_size)
    decayed = batch_size * gamma ** (epoch - start_epoch)
    k = math.floor(max(decayed, nu * batch_size) + 1e-9)
    return int(min(batch_size, max(1, k)))


class TopK(Regularizer):
    """G's loss on the top-k fakes by D's score (see the module docstring); ``last_k`` holds the k last used.

    Args:
        gamma: per-epoch decay γ of k, in [0, 1] (Sinha et al.: 0.99).
        nu: floor ν as a fraction of the batch, in (0, 1] (Sinha et al.: 0.5).
        start_epoch: last epoch trained on the full batch; the first decay applies after it.
    """

    def __init__(self, gamma: float = 0.99, nu: float = 0.5, start_epoch: int = 0) -> None:
        super().__init__()
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"regularizer.topk.gamma must be in [0, 1], got {gamma}")
        if not 0.0 < nu <= 1.0:
            raise ValueError(f"regularizer.topk.nu must be in (0, 1], got {nu}")
        if int(start_epoch) < 0:
            raise ValueError(f"regularizer.topk.start_epoch must be >= 0, got {start_epoch}")
        self.gamma, self.nu, self.start_epoch = float(gamma), float(nu), int(start_epoch)
        self.register_buffer("last_k", torch.zeros((), dtype=torch.long))

    def filter_fake(self, d_fake: Tensor, step: Step) -> Tensor | None:
        b = d_fake.shape[0]
        k = topk_count(b, step.epoch, self.gamma, self.nu, self.start_epoch)
        self.last_k.fill_(k)
        if k >= b:
            return None
        return per_sample_score(d_fake).detach().topk(k).indices
