"""Nudged-Adam, our reading of NuGAN (Durall, Chatzimichailidis, Labus & Keuper, "Combating Mode Collapse in
GAN training: An Empirical Analysis using Hessian Eigenvalues", VISAPP 2021, arXiv 2012.09673).

The paper ties mode collapse to convergence towards sharp minima (large top eigenvalues of the generator
loss's Hessian) and proposes an Adam variant steered by that spectrum; it gives no exact update rule, k,
threshold or iteration count, so this module fixes a reading (docs/REPRODUCING.md, "NuGAN: our reading"):

every ``every_n_steps`` optimizer steps, the top-k eigenpairs (λ_i, v_i) of the Hessian of the loss being
minimised are estimated by Lanczos on Hessian-vector products; the directions with λ_i > ``threshold``
are removed from what Adam applies. All eigenvalues are reported every time, fired or not.

Where the projection acts (``project``):

* ``update`` (default): Adam's step Δθ is projected, Δθ ← Δθ − Σ_i (Δθ·v_i) v_i, and so is its first moment
  m. The step taken then has no component along a sharp direction, and momentum built on earlier steps
  cannot carry one in later: the point of the method is not to *move* into the sharp minimum.
* ``gradient``: the gradient is projected before an ordinary Adam step (this platform's first reading).
  Adam's moments still hold the removed directions from earlier steps, so the applied step keeps moving
  along them; kept as a switch to reproduce earlier runs.

It is *not* the students' notebook rule (zero the whole tensor holding the eigenvector's arg-max, applied
before backward so it erased only stale gradients, D only): see docs/REPRODUCING.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from gancollapse.optim.lanczos import Which, flatten, hessian_eigenpairs, unflatten

Projection = Literal["update", "gradient"]


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
        project: ``update`` (project Adam's step and first moment) or ``gradient`` (project the gradient
            before Adam); see the module docstring.
    """

    def __init__(self, params, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, k: int = 5, iterations: int = 20, threshold: float = 500.0,
                 every_n_steps: int = 50, which: Which = "LA", seed: int = 0, project: Projection = "update",
                 **adam_kwargs: Any) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **adam_kwargs)
        if int(k) < 1:
            raise ValueError(f"optim.*.k (NudgedAdam eigenpairs) must be >= 1, got {k}")
        if int(iterations) < int(k):
            raise ValueError(f"optim.*.iterations (Lanczos) must be >= k={k}, got {iterations}")
        if int(every_n_steps) < 1:
            raise ValueError(f"optim.*.every_n_steps (NudgedAdam interval) must be >= 1, got {every_n_steps}")
        if which not in ("LA", "LM"):
            raise ValueError(f"optim.*.which must be 'LA' or 'LM', got {which!r}")
        if project not in ("update", "gradient"):
            raise ValueError(f"optim.*.project must be 'update' or 'gradient', got {project!r}")
        self.project = project
        self._pending: Tensor | None = None
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
        """Set ``.grad`` of the parameters to ∇L and arm the projection of the next :meth:`step` (``update``),
        or write ∇L with the sharp directions projected out (``gradient``); report the spectrum."""
        params = self._params()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs, flat = hessian_eigenpairs(loss, params, self.k, self.iterations, which=self.which,
                                         seed=self.seed + self.checks, grads=grads)
        del grads  # frees the double-backward graph before the Adam step
        fired = pairs.values > self.threshold
        sharp = pairs.vectors[fired].detach()
        new = project_out(flat, sharp)
        if self.project == "update":
            self._pending = sharp if sharp.numel() else None
        for p, g in zip(params, unflatten(new if self.project == "gradient" else flat, params), strict=True):
            p.grad = g.detach().clone()
        self.checks += 1
        self.fired_total += int(fired.sum())
        return NudgeReport(pairs.values.detach().cpu(), fired.cpu(), float((flat - new).norm()), float(flat.norm()))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        sharp, self._pending = self._pending, None
        params = self._params()
        # A step without gradients (a skipped non-finite step) leaves everything alone, the projection too.
        if sharp is None or all(p.grad is None for p in params):
            out = super().step(closure)
        else:
            before = flatten([p.detach() for p in params], params)
            out = super().step(closure)
            delta = flatten([p.detach() for p in params], params) - before
            for p, new in zip(params, unflatten(before + project_out(delta, sharp), params), strict=True):
                p.copy_(new)
            moments = [self.state[p]["exp_avg"] for p in params]
            for m, new in zip(moments, unflatten(project_out(flatten(moments, params), sharp), params), strict=True):
                m.copy_(new)
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
