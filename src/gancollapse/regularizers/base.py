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
* :meth:`Regularizer.bind` — once, at the end of the module's construction: check what the regularizer needs
  from the module (its objective, D's optimizer, the other regularizers) and refuse at start-up.
* :meth:`Regularizer.g_discriminator` — replace the D that G's loss scores the fakes with (Unrolled GAN's D
  after k look-ahead steps). At most one regularizer of a run may override it.
* :attr:`Regularizer.uses_d_features` — ask the module for D's penultimate features of the real and fake
  batch (``Step.real_features`` / ``Step.fake_features``, GDPP), taken from the forward the loss already does.

A discriminator *has features* when its forward accepts ``return_features=True`` and then returns
``(output, features)`` with ``features`` of shape (B, …): the input of its last layer
(:func:`gancollapse.nets.returns_features`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from gancollapse.models.gan import GANModule


@dataclass
class Step:
    """Everything a regularizer may need about the current optimisation step.

    ``fake`` is detached in the D phase and carries G's graph in the G phase. ``d_real`` is ``None`` in
    the G phase unless the module computed it; ``d_fake`` is ``None`` only in the Step given to
    :meth:`Regularizer.g_discriminator` (nothing is scored yet). ``real_features`` / ``fake_features`` are D's penultimate
    features (B, …) when a regularizer of the run sets :attr:`Regularizer.uses_d_features`, else ``None``;
    in the G phase ``fake_features`` carries G's graph and ``real_features`` has none.
    """

    phase: Literal["d", "g"]
    real: Tensor
    fake: Tensor
    z: Tensor
    d_real: Tensor | None
    d_fake: Tensor | None
    generator: nn.Module
    discriminator: nn.Module
    global_step: int = 0
    epoch: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    real_features: Tensor | None = None
    fake_features: Tensor | None = None


class Regularizer(nn.Module):
    """Base class. Subclasses override :meth:`d_terms` and/or :meth:`g_terms` and the optional hooks."""

    #: the module fills ``Step.real_features`` / ``Step.fake_features`` (D must have features).
    uses_d_features: bool = False
    #: ``d_terms`` may be evaluated outside D's own step (Unrolled GAN replays it in its look-ahead); False for
    #: terms with side effects (a replay buffer that every call pushes to).
    replayable_d_terms: bool = True

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

    def applied(self) -> dict[str, Any]:
        """What this regularizer applied, for the run's record: its type and constructor arguments read back
        from the object (subclasses add what they decided at run time)."""
        return {"type": type(self).__name__, **constructor_params(self)}

    def bind(self, module: GANModule) -> None:
        """Called once at the end of ``module``'s construction (after :meth:`apply_to_nets` and compiling).

        Check here what the regularizer needs from the module and raise a one-line ValueError naming the key.
        Do not keep ``module`` as an attribute: an ``nn.Module`` attribute would become a submodule.
        """

    def g_discriminator(self, module: GANModule, step: Step) -> Callable[..., Tensor] | None:
        """The D that G's loss scores the fakes with, or None for the module's own discriminator.

        Called in G's step before anything is scored: ``step.d_fake`` is None, ``step.fake`` carries G's graph,
        ``step.real`` is the batch of D's step. The callable takes D's arguments (``x``, and
        ``return_features=True`` when D has features); the Step the regularizers then see holds its scores.
        """
        return None


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


# ---------------------------------------------------------------------------- what a regularizer applied
def plain(value: Any) -> Any:
    """A JSON-able copy of a hyperparameter value (tensors as numbers or lists, non-finite floats as text)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist() if value.numel() > 1 else value.item()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def constructor_params(obj: Any) -> dict[str, Any]:
    """``{arg: obj.<arg>}`` for the constructor arguments ``obj`` keeps under the same name: what the object
    was built with, read back from the object."""
    out: dict[str, Any] = {}
    for name in inspect.signature(type(obj).__init__).parameters:
        if name in ("self", "args", "kwargs") or not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if isinstance(value, (bool, int, float, str, tuple, list, type(None))) or (
                isinstance(value, torch.Tensor) and value.numel() <= 8):
            out[name] = plain(value)
    return out
