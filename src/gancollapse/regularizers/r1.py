"""R1 penalty (Mescheder et al., 2018, Eq. 9): γ/2 · E_x[‖∇D(x)‖²] on real data."""

from __future__ import annotations

from torch import Tensor

from gancollapse.regularizers.base import Regularizer, Step, input_gradient


def r1_penalty(discriminator, real: Tensor, batch_dims: int = 1) -> Tensor:
    """E_x ‖∇_x D(x)‖² over real samples (without the γ/2 factor); ``batch_dims=2``: one per ensemble member."""
    _, grad = input_gradient(discriminator, real, batch_dims=batch_dims)
    return grad.reshape(*grad.shape[:batch_dims], -1).pow(2).sum(dim=-1).mean(dim=-1)


class R1(Regularizer):
    def __init__(self, gamma: float = 10.0, every: int = 1) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"regularizer.r1.gamma must be >= 0, got {gamma}")
        if every < 1:
            raise ValueError(f"regularizer.r1.every must be >= 1, got {every}")
        self.gamma = float(gamma)
        self.every = int(every)

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        if step.global_step % self.every:
            return {}
        # Lazy regularisation (StyleGAN2): scale by `every` so the expected gradient is unchanged.
        return {"r1": 0.5 * self.gamma * self.every * r1_penalty(step.discriminator, step.real)}
