"""Dist-GAN's constraints (Tran, Bui & Cheung, ECCV 2018) as pure functions.

Follows the authors' reference code (tntrung/gan ``distgan_image/distgan.py``, "log" loss), the code the
published numbers came from; equation numbers are the paper's.

* Latent-distance constraint (Eq. 6–7, reference ``r_cost``): autoencoder loss in D's feature space plus
  λ_r·(md_x − md_z)², with md_x = mean(f(G(E(x))) − f(G(z))) and md_z = λ_w·mean(E(x) − z) — *signed*
  means over batch and dimensions, λ_w = sqrt(d_z / d_f).
* Discriminator-score constraint (Eq. 9–10, reference ``d_cost``): w_r·BCE(D(x),1) + w_rec·BCE(D(G(E(x))),1)
  + BCE(D(G(z)),0) + λ_p·GP, with the reference's schedule w_r = 0.95 + μ, w_rec = 0.05 − μ,
  μ = clip(0.2·t/N − 0.1, 0, 0.05) (the code's "slightly improved" variant of fixed 0.95/0.05).
* Gradient penalty in the reference's form: slope = sqrt(mean over input elements of (∂D/∂x̂)²) (a mean,
  not the sum of WGAN-GP's norm), GP = mean((slope − 1)²) on x̂ = εx + (1 − ε)G(z).
* Generator loss (reference ``g_cost``): |mean σ(D(x)) − mean σ(D(G(z)))|.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gancollapse.losses import Objective


def latent_distance_weight(z_dim: int, feature_dim: int) -> float:
    """λ_w = sqrt(d_z / d_f) (reference ``distgan_mnist.py``: sqrt(100/4096) = 0.15625)."""
    if z_dim < 1 or feature_dim < 1:
        raise ValueError(f"latent_distance_weight needs z_dim, feature_dim >= 1, got {z_dim}, {feature_dim}")
    return math.sqrt(z_dim / feature_dim)


def reconstruction_loss(f_real: Tensor, f_recon: Tensor, f_fake: Tensor, z_enc: Tensor, z: Tensor,
                        lambda_r: float = 1.0, lambda_w: float = 0.15625) -> dict[str, Tensor]:
    """Dist-GAN's R loss (paper Eq. 7; reference ``r_cost``).

    Returns ``r_loss`` = ``ae`` + λ_r·``latent_reg`` and its parts: ``ae`` = mean((f(x) − f(X_r))²),
    ``md_x`` = mean(f(X_r) − f(X_f)), ``md_z`` = λ_w·mean(E(x) − z), ``latent_reg`` = (md_x − md_z)².
    """
    ae = (f_real - f_recon).pow(2).mean()
    md_x = (f_recon - f_fake).mean()
    md_z = (z_enc - z).mean() * lambda_w
    reg = (md_x - md_z).pow(2)
    return {"r_loss": ae + lambda_r * reg, "ae": ae, "latent_reg": reg, "md_x": md_x, "md_z": md_z}


def score_weights(step: int, n_steps: int) -> tuple[float, float]:
    """(w_r, w_rec) at iteration ``step`` of ``n_steps``: μ = clip(0.2·step/N − 0.1, 0, 0.05).

    μ is 0 for the first half of training and reaches 0.05 at 3/4, moving the reconstruction weight onto
    the real term (reference: "lower weights for d_recon to achieve sharper generated images").
    """
    if n_steps < 1:
        raise ValueError(f"model.module.schedule_steps must be >= 1, got {n_steps}")
    mu = min(max(0.2 * step / n_steps - 0.1, 0.0), 0.05)
    return 0.95 + mu, 0.05 - mu


def discriminator_score_loss(logit_real: Tensor, logit_recon: Tensor, logit_fake: Tensor,
                             w_real: float = 0.95, w_recon: float = 0.05) -> dict[str, Tensor]:
    """w_r·BCE(D(x),1) + w_rec·BCE(D(X_r),1) + BCE(D(X_f),0) (paper Eq. 9, reference ``d_cost`` without GP).

    BCE with logits: BCE(s, 1) = softplus(−s), BCE(s, 0) = softplus(s); each averaged over the batch.
    """
    d_real = F.softplus(-logit_real).mean()
    d_recon = F.softplus(-logit_recon).mean()
    d_fake = F.softplus(logit_fake).mean()
    return {"d_loss": w_real * d_real + w_recon * d_recon + d_fake, "d_real_bce": d_real,
            "d_recon_bce": d_recon, "d_fake_bce": d_fake}


def interpolate(real: Tensor, fake: Tensor, eps: Tensor | None = None) -> Tensor:
    """x̂ = εx + (1 − ε)x̃ with ε ~ U(0,1) per sample (reference: ``epsilon * X + (1 - epsilon) * X_f``)."""
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    return eps * real.detach() + (1.0 - eps) * fake.detach()


def slope_penalty(grad: Tensor, reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """mean((slope − 1)²) with slope = sqrt(mean_i g_i²) (reference, ``reduction='mean'``) or the WGAN-GP
    norm sqrt(Σ_i g_i²) (``reduction='sum'``), per sample over all input elements.

    The reference's mean form asks for ‖∇D‖₂ ≈ sqrt(#elements) (28 on MNIST), a much looser constraint than
    WGAN-GP's; we keep it because it is what the published numbers were obtained with.
    """
    sq = grad.reshape(grad.shape[0], -1).pow(2)
    inner = sq.mean(dim=1) if reduction == "mean" else sq.sum(dim=1)
    # The tiny offset keeps the sqrt differentiable if a gradient is exactly zero (dead ReLU regions).
    slope = torch.sqrt(inner + 1e-12)
    return (slope - 1.0).pow(2).mean()


def generator_score_loss(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
    """|mean σ(D(x)) − mean σ(D(G(z)))| (reference ``g_cost``): G closes the gap between D's average
    scores of real and generated data instead of maximising the fake score."""
    return (torch.sigmoid(logit_real).mean() - torch.sigmoid(logit_fake).mean()).abs()


__all__ = ["latent_distance_weight", "reconstruction_loss", "score_weights", "discriminator_score_loss",
           "interpolate", "slope_penalty", "generator_score_loss"]


class DistGANObjective(Objective):
    """Dist-GAN's three losses as the run's objective (``loss=distgan``): the R, D and G steps of
    :class:`~gancollapse.models.distgan.DistGANModule` call them through this object, so the run's applied
    record names the loss its step really used. ``d_loss``/``g_loss`` of a plain GAN do not exist here."""

    name = "distgan"
    gan_objective = False  # not a d_loss/g_loss pair: only Dist-GAN's step can use it

    reconstruction_loss = staticmethod(reconstruction_loss)
    discriminator_score_loss = staticmethod(discriminator_score_loss)
    generator_score_loss = staticmethod(generator_score_loss)

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        raise TypeError("DistGANObjective is Dist-GAN's own loss (model=distgan_mnist); a plain GAN step cannot use it")

    g_loss = d_loss  # type: ignore[assignment]
