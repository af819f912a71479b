"""Adversarial objectives.

Each objective maps discriminator outputs to scalar losses. D may return a vector per sample (MaEM's
m-dimensional code); every loss is then applied element-wise and averaged over batch and code, which is
what the MaEM seed does for its WGAN-style "MaF" objective.

Notation: ``r`` = D(x) on real data, ``f`` = D(G(z)), ``sp`` = softplus, so that
``-log sigmoid(s) = sp(-s)`` and ``-log(1 - sigmoid(s)) = sp(s)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


class Objective:
    """Base class: a pair ``d_loss(real, fake)`` / ``g_loss(fake)`` of pure functions of D's outputs."""

    name: str = "objective"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """The objective as it runs, for the run's applied record: its name, with any non-default switch."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StandardLoss(Objective):
    """Goodfellow et al. (2014), Eq. 1, minimax form.

    D: sp(-r) + sp(f)  (binary cross-entropy);  G: minimises log(1 - D(G(z))) = -sp(f) (saturating).
    """

    name = "standard"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -F.softplus(fake).mean()


class NonSaturatingLoss(StandardLoss):
    """Goodfellow et al. (2014), Sec. 3: G maximises log D(G(z)) instead, i.e. minimises sp(-f)."""

    name = "non_saturating"

    def g_loss(self, fake: Tensor) -> Tensor:
        return F.softplus(-fake).mean()


class HingeLoss(Objective):
    """Lim & Ye (2017), Geometric GAN: D: relu(1 - r) + relu(1 + f); G: -f."""

    name = "hinge"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class WassersteinLoss(Objective):
    """Arjovsky et al. (2017), Eq. 3: critic minimises -E[r] + E[f]; G minimises -E[f].

    Needs a Lipschitz constraint to be meaningful (weight clipping, gradient penalty or spectral norm).
    """

    name = "wasserstein"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class LeastSquaresLoss(Objective):
    """Mao et al. (2017), Eq. 2 with a=0, b=1, c=1: D: ½(r-1)² + ½f²; G: ½(f-1)².

    ``seed_compat=True`` reproduces the Mode_Collapse seed's (buggy) form instead:
    D: ½[(r+1)² + f²] and G: -½(f-1)², an unbounded G objective whose real target is -1.
    """

    name = "least_squares"

    def __init__(self, seed_compat: bool = False) -> None:
        self.seed_compat = bool(seed_compat)

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        target = -1.0 if self.seed_compat else 1.0
        return 0.5 * (real - target).pow(2).mean() + 0.5 * fake.pow(2).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        sign = -1.0 if self.seed_compat else 1.0
        return sign * 0.5 * (fake - 1.0).pow(2).mean()

    def describe(self) -> str:
        return f"{self.name}[seed_compat]" if self.seed_compat else self.name

    def __repr__(self) -> str:
        return f"LeastSquaresLoss(seed_compat={self.seed_compat})"


def per_sample_score(d_out: Tensor) -> Tensor:
    """Reduce D's output to one realness score per sample (mean over a code vector)."""
    return d_out.reshape(d_out.shape[0], -1).mean(dim=1)
