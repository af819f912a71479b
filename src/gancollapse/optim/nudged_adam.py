"""Nudged-Adam, our reading of NuGAN (Durall et al., "Combating Mode Collapse in GAN training: An
Empirical Analysis using Hessian Eigenvalues", VISAPP 2021, arXiv 2012.09673).

The paper's abstract ties mode collapse to sharp minima (large top eigenvalues of the generator loss's
Hessian) and proposes an Adam variant steered by that spectrum. Its exact update rule, k, threshold and
iteration count are not in our notes (reference/seeds-gan-training.md §3.5), so REFERENCE.md fixes this
reading:

every ``every_n_steps`` optimizer steps, the top-k eigenpairs (λ_i, v_i) of the Hessian of the loss being
minimised are estimated by Lanczos on Hessian-vector products; for every λ_i > ``threshold`` the gradient's
component along v_i is removed, g ← g − Σ_i (g·v_i) v_i, before the usual Adam step. All eigenvalues are
reported every time, fired or not.

It is *not* the students' notebook rule (zero the whole tensor holding the eigenvector's arg-max, applied
before backward so it erased only stale gradients, D only): see docs/REPRODUCING.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gancollapse.optim.lanczos import Which, hessian_eigenpairs, unflatten


def project_out(grad: Tensor, vectors: Tensor) -> Tensor:
    """g − Vᵀ(V g): remove the components of the flat gradient along the orthonormal rows of V (n, P)."""
    if vectors.numel() == 0:
        return grad
    return grad - vectors.T @ (vectors @ grad)


@dataclass
class NudgeReport:
    """Outcome of one spectral check: all estimated eigenvalues, which ones fired, and the norm of the
    gradient removed by the projection."""

    eigenvalues: Tensor
    fired: Tensor
    removed_norm: float
    grad_norm: float

    def as_metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/eig{i}": float(v) for i, v in enumerate(self.eigenvalues.tolist())}
        out[f"{prefix}/fired"] = float(self.fired.sum())
        out[f"{prefix}/removed_norm"] = self.removed_norm
        out[f"{prefix}/grad_norm"] = self.grad_norm
        return out


class NudgedAdam(torch.optim.Adam):
    """Adam whose gradient is, every ``every_n_steps`` steps, projected off the Hessian eigenvectors whose
    eigenvalue exceeds ``threshold``.

    Use: when :meth:`due` is true, call :meth:`nudge(loss)` *instead of* ``loss.backward()`` — it computes the
    gradient with a graph, runs Lanczos, writes the projected gradient into ``.grad`` — then :meth:`step`.
    Otherwise it is plain Adam. The step counter is saved in the optimizer's state dict.

    Args (besides Adam's):
        k: eigenpairs estimated (5).
        iterations: Lanczos iterations / Krylov dimension (20).
        threshold: eigenvalue above which the direction is removed (500, the student notebooks' value).
        every_n_steps: spectral check interval in optimizer steps (50, the notebooks' value).
        which: ``LA`` (largest algebraic, the notebooks' intent) or ``LM``.
        seed: seed of Lanczos' start vector (deterministic checks).
    """

    def __init__(self, params, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, k: int = 5, iterations: int = 20, threshold: float = 500.0,
                 every_n_steps: int = 50, which: Which = "LA", seed: int = 0, **adam_kwargs: Any) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **adam_kwargs)
        if int(k) < 1:
            raise ValueError(f"optim.*.k (NudgedAdam eigenpairs) must be >= 1, got {k}")
        if int(iterations) < int(k):
            raise ValueError(f"optim.*.iterations (Lanczos) must be >= k={k}, got {iterations}")
        if int(every_n_steps) < 1:
            raise ValueError(f"optim.*.every_n_steps (NudgedAdam interval) must be >= 1, got {every_n_steps}")
        if which not in ("LA", "LM"):
            raise ValueError(f"optim.*.which must be 'LA' or 'LM', got {which!r}")
        self.k, self.iterations, self.threshold = int(k), int(iterations), float(threshold)
        self.every_n_steps, self.which, self.seed = int(every_n_steps), which, int(seed)
        self.steps_taken = 0
        self.checks = 0
        self.fired_total = 0

    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def due(self) -> bool:
        return self.steps_taken % self.every_n_steps == 0

    def nudge(self, loss: Tensor) -> NudgeReport:
        """Set ``.grad`` of the parameters to ∇L with the sharp directions projected out; report spectrum."""
        params = self._params()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs, flat = hessian_eigenpairs(loss, params, self.k, self.iterations, which=self.which,
                                         seed=self.seed + self.checks, grads=grads)
        del grads  # frees the double-backward graph before the Adam step
        fired = pairs.values > self.threshold
        new = project_out(flat, pairs.vectors[fired])
        for p, g in zip(params, unflatten(new, params), strict=True):
            p.grad = g.clone()
        self.checks += 1
        self.fired_total += int(fired.sum())
        return NudgeReport(pairs.values.detach().cpu(), fired.cpu(), float((flat - new).norm()), float(flat.norm()))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        out = super().step(closure)
        self.steps_taken += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["nudge"] = {"steps_taken": self.steps_taken, "checks": self.checks, "fired_total": self.fired_total}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        nudge = state_dict.pop("nudge", {})
        super().load_state_dict(state_dict)
        self.steps_taken = int(nudge.get("steps_taken", 0))
        self.checks = int(nudge.get("checks", 0))
        self.fired_total = int(nudge.get("fired_total", 0))


__all__ = ["NudgedAdam", "NudgeReport", "project_out"]
