"""The regularizer interface.

A regularizer sees one :class:`Step` of training and returns a dict of *named* loss terms that the GAN
module adds to the phase's loss and logs (``{"gp": t}``). Regularizers are ``nn.Module`` so any state
(a replay buffer, a step counter) is a registered buffer: it lands in checkpoints and follows ``.to()``.

Besides loss terms a regularizer may hook into the loop:

* :meth:`Regularizer.apply_to_nets` — model surgery applied once, before optimizers are built
  (spectral norm).
* :meth:`Regularizer.after_d_step` — after each discriminator optimizer step (weight clipping).
* :meth:`Regularizer.filter_fake` — select which fake samples feed the generator loss (top-k).
* :meth:`Regularizer.on_epoch_end` — schedules that advance per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn


@dataclass
class Step:
    """Everything a regularizer may need about the current optimisation step.

    ``fake`` is detached in the D phase and carries G's graph in the G phase. ``d_real`` is ``None`` in
    the G phase unless the module computed it.
    """

    phase: Literal["d", "g"]
    real: Tensor
    fake: Tensor
    z: Tensor
    d_real: Tensor | None
    d_fake: Tensor
    generator: nn.Module
    discriminator: nn.Module
    global_step: int = 0
    epoch: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


class Regularizer(nn.Module):
    """Base class. Subclasses override :meth:`d_terms` and/or :meth:`g_terms` and the optional hooks."""

    def forward(self, step: Step) -> dict[str, Tensor]:
        return self.d_terms(step) if step.phase == "d" else self.g_terms(step)

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        return {}

    def g_terms(self, step: Step) -> dict[str, Tensor]:
        return {}

    def apply_to_nets(self, generator: nn.Module, discriminator: nn.Module) -> None:
        """Modify the nets once at construction (before optimizers exist)."""

    @torch.no_grad()
    def after_d_step(self, discriminator: nn.Module) -> None:
        """Called after every discriminator optimizer step."""

    def filter_fake(self, d_fake: Tensor, step: Step) -> Tensor | None:
        """Return indices of the fake samples that G's loss should use, or None for all."""
        return None

    def on_epoch_end(self, epoch: int) -> None:
        """Advance per-epoch schedules."""


def input_gradient(discriminator: nn.Module, x: Tensor, create_graph: bool = True,
                   batch_dims: int = 1) -> tuple[Tensor, Tensor]:
    """Return ``(D(x), dD/dx)`` where vector outputs are summed per sample before differentiation.

    Summing gives each sample's gradient of its own (mean-reduced) score because samples are independent
    (no batch-coupling layers are allowed in D when this is used: BatchNorm would mix samples). The first
    ``batch_dims`` dims index samples (2: a stacked ensemble's ``(members, batch)``, each member its own D).
    """
    x = x.detach().requires_grad_(True)
    out = discriminator(x)
    score = out.reshape(*out.shape[:batch_dims], -1).mean(dim=-1)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=create_graph)
    return out, grad
