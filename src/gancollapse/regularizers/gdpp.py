"""GDPP (Elfeki, Couprie, Rivière & Elhoseiny, "GDPP: Learning Diverse Generations Using Determinantal Point
Processes", ICML 2019): G matches the diversity of its batch to the real batch's, measured by a DPP kernel.

With φ(·) D's penultimate features of a batch, each row L2-normalised, the DPP kernel of a batch S is
L_S = φ(S)φ(S)ᵀ (B×B). With the eigenpairs (λ_i, v_i) of L_real and L_fake, both in ascending order and
matched by rank, the paper's loss is

    L_DPP = L_m + L_s,   L_m = Σ_i (λ_real,i − λ_fake,i)²,   L_s = −Σ_i λ̂_real,i · cos(v_real,i, v_fake,i)

with λ̂_real the real eigenvalues min-max normalised to [0, 1] (so the structure of the dominant real modes
counts most). G minimises its adversarial loss + ``weight`` · L_DPP; D is unchanged.

As the authors' code has it (github.com/M-Elfeki/GDPP, ``compute_diversity_loss`` in every experiment):

* features are the input of D's last linear layer, L2-normalised per sample before the kernel;
* L_m is the *mean* of the squared differences times 1e-4 (``magnitude_weight``; the paper's loss has a plain
  sum: ``magnitude_weight=<batch size>``);
* the cosine of two unit eigenvectors is their dot product.

Our choices, each with a switch:

* ``sign_invariant`` (default true): |cos|. An eigenvector is defined up to its sign, and which sign the
  eigensolver returns is an implementation detail (free to differ between backends and to flip between nearby
  matrices), so the paper's signed cosine can push v_fake away from the very direction it matches. ``false`` is the paper's
  and the code's signed form.
* L_s is offset by Σ_i λ̂_real,i, i.e. L_s = Σ_i λ̂_real,i (1 − cos_i): a constant of G's step (real features
  carry no gradient there), so gradients are the paper's, and L_DPP is ≥ 0 and 0 when the fake batch has the
  real batch's features.
* The eigenvector gradient of an eigendecomposition has 1/(λ_j − λ_i) terms, infinite for repeated eigenvalues
  — and a B×B kernel of d-dimensional features has B − d zero eigenvalues when B > d (the 2-D toys: a batch of
  500, 256 features). :func:`safe_eigh` replaces 1/Δ by the Lorentzian-broadened Δ/(Δ² + ε²), ε = ``eig_eps`` ·
  max|λ| (Liao, Liu, Wang & Xiang, "Differentiable Programming Tensor Networks", PRX 2019): exact for gaps ≫ ε,
  bounded by 1/(2ε) below. Inside a degenerate eigenspace the eigenvectors, hence L_s, are not defined; the
  broadened gradient ignores rotations within it.

Cost: two B×B eigendecompositions per G step (O(B³)); the features come from the forward of G's loss (fake)
and one no-grad D forward of the real batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gancollapse.nets import returns_features
from gancollapse.regularizers.base import Regularizer, Step

if TYPE_CHECKING:
    from gancollapse.models.gan import GANModule


class _SafeEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` whose backward broadens 1/(λ_j − λ_i) (see :func:`safe_eigh`)."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        lam, vec = torch.linalg.eigh(a)
        ctx.save_for_backward(lam, vec)
        ctx.eps = eps
        return lam, vec

    @staticmethod
    def backward(ctx: Any, g_lam: Tensor | None, g_vec: Tensor | None) -> tuple[Tensor, None]:
        lam, vec = ctx.saved_tensors
        # dλ_i = v_iᵀ dA v_i and dv_i = Σ_{j≠i} v_j (v_jᵀ dA v_i) / (λ_i − λ_j), so Ā = V M Vᵀ with
        # M_ii = ḡλ_i and M_ji = (Vᵀ ḡV)_ji / (λ_i − λ_j) (the formula of torch's own eigh backward).
        m = torch.zeros_like(vec)
        if g_vec is not None:
            gap = lam[None, :] - lam[:, None]  # gap[j, i] = λ_i − λ_j
            width = ctx.eps * lam.abs().max().clamp_min(torch.finfo(lam.dtype).tiny)
            m = (vec.mT @ g_vec) * (gap / (gap * gap + width * width))  # 0 on the diagonal
        if g_lam is not None:
            m = m + torch.diag_embed(g_lam)
        return vec @ m @ vec.mT, None


def safe_eigh(a: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and unit eigenvectors (columns) of the symmetric ``a``, with a finite gradient.

    The forward is ``torch.linalg.eigh``. The backward is its analytic gradient with each 1/(λ_j − λ_i)
    replaced by (λ_j − λ_i)/((λ_j − λ_i)² + ε²), ε = ``eps`` · max|λ| (Lorentzian broadening, Liao et al., PRX
    2019): the same to relative order (ε/Δ)² where eigenvalues are apart, finite where they repeat.
    """
    return _SafeEigh.apply(a, float(eps))


def dpp_kernel(features: Tensor, normalize: bool = True) -> Tensor:
    """L = φφᵀ (B×B) of the flattened features, rows L2-normalised first when ``normalize`` (GDPP's DPP kernel,
    normalised as in the authors' code). Float32 or wider, outside autocast: eigendecompositions need it."""
    phi = features.flatten(1)
    if phi.dtype in (torch.float16, torch.bfloat16):
        phi = phi.float()
    with torch.autocast(phi.device.type, enabled=False):
        if normalize:
            phi = F.normalize(phi, dim=1)
        return phi @ phi.mT


def gdpp_from_eig(lam_real: Tensor, vec_real: Tensor, lam_fake: Tensor, vec_fake: Tensor,
                  magnitude_weight: float = 1e-4, sign_invariant: bool = True) -> Tensor:
    """GDPP's L_m + L_s from the two kernels' ascending eigenvalues and eigenvector columns.

    L_m = ``magnitude_weight`` · mean_i (λ_real,i − λ_fake,i)²;  L_s = Σ_i λ̂_real,i (1 − c_i) with λ̂ the
    min-max normalised real eigenvalues and c_i = v_real,iᵀ v_fake,i (|·| when ``sign_invariant``).
    """
    magnitude = (lam_real - lam_fake).pow(2).mean()
    low = lam_real.min()
    span = (lam_real.max() - low).clamp_min(torch.finfo(lam_real.dtype).tiny)
    weights = (lam_real - low) / span
    cos = (vec_real * vec_fake).sum(dim=0)
    if sign_invariant:
        cos = cos.abs()
    return magnitude_weight * magnitude + (weights * (1.0 - cos)).sum()


def gdpp_loss(real_features: Tensor, fake_features: Tensor, magnitude_weight: float = 1e-4,
              sign_invariant: bool = True, normalize: bool = True, eig_eps: float = 1e-6) -> Tensor:
    """GDPP's diversity loss of a fake batch against a real batch of the same size, from D's features."""
    lam_r, vec_r = safe_eigh(dpp_kernel(real_features, normalize), eig_eps)
    lam_f, vec_f = safe_eigh(dpp_kernel(fake_features, normalize), eig_eps)
    return gdpp_from_eig(lam_r, vec_r.to(vec_f.dtype), lam_f, vec_f, magnitude_weight, sign_invariant)


class GDPP(Regularizer):
    """Adds ``weight`` · L_DPP (see the module docstring) to G's loss; needs a D with features.

    Args:
        weight: multiplier of L_DPP in G's loss. The authors' G loss is ½(adversarial + L_DPP); the ½ on both
            terms does not change Adam's (or RMSprop's) steps, so 1 is their setting.
        magnitude_weight: factor of the mean squared eigenvalue difference (authors' code: 1e-4).
        normalize: L2-normalise each sample's features before the kernel (authors' code).
        sign_invariant: |cos| between matched eigenvectors (ours); false: the signed cosine of paper and code.
        eig_eps: relative Lorentzian width of the eigenvector gradient (:func:`safe_eigh`).

    Exposed for the run's record: ``weight``, ``magnitude_weight``, ``normalize``, ``sign_invariant``, ``eig_eps``.
    """

    uses_d_features = True

    def __init__(self, weight: float = 1.0, magnitude_weight: float = 1e-4, normalize: bool = True,
                 sign_invariant: bool = True, eig_eps: float = 1e-6) -> None:
        super().__init__()
        for key, val in (("weight", weight), ("magnitude_weight", magnitude_weight)):
            if not float(val) >= 0:
                raise ValueError(f"regularizer.gdpp.{key}={val}: must be >= 0")
        if not float(eig_eps) > 0:
            raise ValueError(f"regularizer.gdpp.eig_eps={eig_eps}: must be > 0 (relative width of the eigenvector "
                             "gradient's broadening, e.g. 1e-6)")
        self.weight, self.magnitude_weight = float(weight), float(magnitude_weight)
        self.normalize, self.sign_invariant, self.eig_eps = bool(normalize), bool(sign_invariant), float(eig_eps)

    def apply_to_nets(self, generator: nn.Module, discriminator: nn.Module) -> None:
        if not returns_features(discriminator):
            raise ValueError(f"regularizer=gdpp: the discriminator {type(discriminator).__name__} has no features "
                             "(forward(x, return_features=True) -> (output, features)); use a platform D "
                             "(model=mlp, dcgan32, dcgan64, gan_mnist) or add return_features to its forward")

    def bind(self, module: GANModule) -> None:
        if not module.config_use.d_features:  # the module's contract: its steps hand D's features to regularizers
            raise ValueError(f"regularizer=gdpp: {type(module).__name__} computes its own G loss without D's "
                             "features; use model.module._target_=gancollapse.models.gan.GANModule")

    def g_terms(self, step: Step) -> dict[str, Tensor]:
        if step.fake_features is None or step.real_features is None:
            raise RuntimeError("regularizer=gdpp: the module gave no D features in G's step")
        n = min(step.real_features.shape[0], step.fake_features.shape[0])  # eigenpairs are matched by rank
        loss = gdpp_loss(step.real_features[:n], step.fake_features[:n], self.magnitude_weight,
                         self.sign_invariant, self.normalize, self.eig_eps)
        return {"gdpp": self.weight * loss}

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, magnitude_weight={self.magnitude_weight}, normalize={self.normalize}, "
                f"sign_invariant={self.sign_invariant}, eig_eps={self.eig_eps}")
