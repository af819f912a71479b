"""WGAN-GP gradient penalty (Gulrajani et al., 2017, Eq. 3)."""

from __future__ import annotations

import torch
from torch import Tensor

from gancollapse.regularizers.base import Regularizer, Step, input_gradient


def gradient_penalty(discriminator: torch.nn.Module, real: Tensor, fake: Tensor, alpha: Tensor | None = None,
                     batch_dims: int = 1) -> Tensor:
    """E[(‖∇D(x̂)‖₂ − 1)²] with x̂ = αx + (1−α)x̃, α ~ U(0, 1) per sample (Eq. 3, without λ).

    ``batch_dims=2``: ``(members, batch, ...)`` inputs of a stacked ensemble, one penalty per member (then
    ``alpha`` must be given: each member draws its own)."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    _, grad = input_gradient(discriminator, mixed, batch_dims=batch_dims)
    norms = grad.reshape(*grad.shape[:batch_dims], -1).norm(2, dim=-1)
    return (norms - 1.0).pow(2).mean(dim=-1)


class GradientPenalty(Regularizer):
    """Adds λ·GP to the critic loss. λ defaults to 10 (the paper); the loss-zoo seed used 2."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"regularizer.gradient_penalty.weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        return {"gp": self.weight * gradient_penalty(step.discriminator, step.real, step.fake)}
