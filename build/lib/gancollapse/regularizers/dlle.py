"""MaEM-GAN's DLLE term: D's code should not move under a small, label-preserving transformation
(Liu et al., AAAI'23, Sec. "Deep Local Linear Embedding").

As coded by the seed (``train.py``), with A a random flip along H or W plus 0.001·N(0, 1) noise:

    L_DLLE = MSE(D(x), sg D(A x)) + MSE(D(x_f), sg D(A x_f))

on the real batch x and the (detached) fake batch x_f of the D step; sg = stop-gradient, so only the
un-augmented branch is pulled towards the augmented one. The paper writes a rotation + Gaussian noise
with an L2 norm (docs/REPRODUCING.md); the flip keeps the images on the data manifold for CIFAR/CelebA.

Inputs that are not images (2D toy points, shape (B, d)) have no axis to flip: only the noise is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gancollapse.regularizers.base import Regularizer, Step


def augment(x: Tensor, noise_std: float = 1e-3, flip: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """A x: flip the whole batch along H or W (one axis chosen at random, as the seed does) and add noise.

    Only inputs with at least 4 dims (B, C, H, W) are flipped; lower-rank inputs only get the noise. The axis
    is drawn on x's device and picked by ``torch.where`` (both flips are computed: two memory-bound copies),
    so the training step reads nothing back to the host; ``generator`` must live on x's device.
    """
    out = x
    if flip and x.dim() >= 4:
        along_w = torch.randint(2, (), device=x.device, generator=generator).bool()
        out = torch.where(along_w, x.flip(-1), x.flip(-2))
    if noise_std > 0:
        out = out + noise_std * torch.randn_like(out)
    return out


def consistency(codes: Tensor, augmented_codes: Tensor) -> Tensor:
    """MSE(D(x), sg D(Ax)), averaged over batch and code dims (one summand of the seed's L_DLLE)."""
    return F.mse_loss(codes, augmented_codes.detach())


def _batch_coupled(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class DLLE(Regularizer):
    """Consistency of D's code under ``augment``, on real and fake samples of the D step.

    Args:
        weight: multiplier of the term (seed: 1).
        noise_std: std of the additive Gaussian noise (seed: 0.001).
        flip: flip images along H or W (seed: true); ignored for non-image inputs.
        real / fake: which summands to include.
    """

    def __init__(self, weight: float = 1.0, noise_std: float = 1e-3, flip: bool = True, real: bool = True, fake: bool = True) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"regularizer.dlle.weight must be >= 0, got {weight}")
        if noise_std < 0:
            raise ValueError(f"regularizer.dlle.noise_std must be >= 0, got {noise_std}")
        if not (real or fake):
            raise ValueError("regularizer.dlle: at least one of real / fake must be true")
        self.weight, self.noise_std, self.flip = float(weight), float(noise_std), bool(flip)
        self.real, self.fake = bool(real), bool(fake)
        self._coupled: dict[int, bool] = {}  # per D (by id): scanning its modules every step costs ~µs each

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        if step.d_real is None or self.weight == 0:
            return {}
        pairs = [(x, c) for use, x, c in ((self.real, step.real, step.d_real), (self.fake, step.fake, step.d_fake)) if use]
        augmented = [augment(x.detach(), self.noise_std, self.flip) for x, _ in pairs]
        # The target branch is stop-gradient: no graph needed, and one D call for both halves when D has
        # no batch-coupling layer (the codes are then identical to two separate calls).
        with torch.no_grad():
            disc = step.discriminator
            coupled = self._coupled.get(id(disc))
            if coupled is None:
                coupled = self._coupled[id(disc)] = _batch_coupled(disc)
            if len(augmented) == 2 and not coupled:
                targets = disc(torch.cat(augmented)).split([a.shape[0] for a in augmented])
            else:
                targets = [disc(a) for a in augmented]
        loss = sum(consistency(c, t) for (_, c), t in zip(pairs, targets, strict=True))
        return {"dlle": self.weight * loss}
