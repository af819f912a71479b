"""K copies of one MLP as grouped layers: every Linear becomes one batched matmul over a leading member axis.

``StackedMLP(members)`` takes K :class:`~gancollapse.nets.mlp.MLP` s of the same shape and maps an input of
shape ``(K, B, in)`` to ``(K, B, out)``, member k computing exactly what ``members[k]`` computes on ``x[k]``
(up to float round-off: ``baddbmm`` instead of ``addmm``). Parameters are ``(K, ...)`` tensors, so one
backward gives every member its own gradient and an elementwise optimizer updates all of them at once.

``torch.func.stack_module_state`` + ``vmap(functional_call)`` would do the same for any net, but it cannot run
the in-place power iteration of ``torch.nn.utils.parametrizations.spectral_norm`` (``out=`` has no batching
rule) nor ``torch.autograd.grad`` inside ``vmap`` (the gradient penalty and R1); the grouped layers below
implement spectral normalisation themselves and leave autograd outside, where both work.

Spectral normalisation (Miyato et al., ICLR 2018, Algorithm 1) follows PyTorch's parametrization step for
step, one member per slice: in training mode every forward runs ``n_power_iterations`` of
``u = normalize(W v)``, ``v = normalize(Wᵀ u)`` without gradient, then ``W / σ`` with ``σ = uᵀ W v``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gancollapse.nets.mlp import MLP

#: activations applied elementwise, so one module serves all members at once
ELEMENTWISE = (nn.LeakyReLU, nn.Tanh, nn.ReLU, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU, nn.Identity)


def _spectral(layer: nn.Linear) -> nn.Module | None:
    """The layer's spectral-norm parametrization (torch's ``_SpectralNorm``), or None."""
    params = getattr(layer, "parametrizations", None)
    if params is None or "weight" not in params:
        return None
    chain = params["weight"]
    if len(chain) != 1 or not hasattr(chain[0], "_u"):
        raise ValueError(f"{type(layer).__name__}.weight has parametrizations other than spectral_norm; "
                         "ensemble>1 batches only spectral_norm")
    return chain[0]


def _times(wt: Tensor, v: Tensor) -> Tensor:
    """``W v`` per member for ``wt = Wᵀ`` (``(K, in, out)``) and ``v`` (``(K, in)``): ``(vᵀ Wᵀ)ᵀ``."""
    return torch.bmm(v.unsqueeze(1), wt).squeeze(1)


def power_iteration(wt: Tensor, u: Tensor, v: Tensor, n: int, eps: float) -> None:
    """``n`` power-iteration steps on each member's ``W = wt[k]ᵀ``, updating ``u`` (``(K, out)``) and ``v``
    (``(K, in)``) in place, without gradient (PyTorch's ``_SpectralNorm._power_method``)."""
    with torch.no_grad():
        for _ in range(n):
            u.copy_(F.normalize(_times(wt, v), dim=1, eps=eps))
            v.copy_(F.normalize(torch.bmm(wt, u.unsqueeze(-1)).squeeze(-1), dim=1, eps=eps))


def spectral_normalized(wt: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``wt[k] / σ_k`` with ``σ_k = u_kᵀ W_k v_k`` (Miyato et al. Eq. 13 with the current estimates)."""
    u, v = u.clone(), v.clone()  # later power iterations must not change what autograd saved
    sigma = (u * _times(wt, v)).sum(dim=1)
    return wt / sigma[:, None, None]


class StackedMLP(nn.Module):
    """K :class:`~gancollapse.nets.mlp.MLP` s as one module on ``(K, B, in)`` inputs (see the module docstring).

    Attributes ``weight_i`` (``(K, in, out)``: each member's weight transposed, so that ``x @ weight`` needs
    no copy of a transposed operand) and ``bias_i`` (``(K, 1, out)``) are the i-th Linear's parameters;
    spectrally normalised layers keep the unnormalised weight there and their power-iteration vectors in the
    buffers ``u_i`` / ``v_i``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("StackedMLP needs at least one member")
        for m in members:
            if type(m) is not MLP:
                raise ValueError(f"a {type(m).__name__} net: ensemble>1 batches only gancollapse.nets.mlp.MLP nets")
        self.k = len(members)
        self.in_dim, self.out_dim = members[0].in_dim, members[0].out_dim
        # ("linear", i) or ("act", module): the member Sequential's order
        self.plan: list[tuple[str, int | nn.Module]] = []
        self.spectral: dict[int, tuple[int, float]] = {}  # layer -> (power iterations, eps)
        n_linear = 0
        for j, mod in enumerate(members[0].net):
            if isinstance(mod, nn.Linear):
                layers = [m.net[j] for m in members]
                sn = [_spectral(layer) for layer in layers]
                if any((s is None) != (sn[0] is None) for s in sn):
                    raise ValueError("members differ in spectral normalisation")
                if sn[0] is None:
                    weight = [layer.weight for layer in layers]
                else:  # (reading .weight would run a power-iteration step on the member)
                    weight = [layer.parametrizations.weight.original for layer in layers]
                    self.register_buffer(f"u_{n_linear}", torch.stack([s._u.detach() for s in sn]).clone())
                    self.register_buffer(f"v_{n_linear}", torch.stack([s._v.detach() for s in sn]).clone())
                    self.spectral[n_linear] = (int(sn[0].n_power_iterations), float(sn[0].eps))
                setattr(self, f"weight_{n_linear}",
                        nn.Parameter(torch.stack([w.detach().t() for w in weight]).contiguous()))
                bias = [layer.bias for layer in layers]
                if any(b is None for b in bias):
                    raise ValueError("MLP layers without bias are not batched")
                setattr(self, f"bias_{n_linear}",
                        nn.Parameter(torch.stack([b.detach() for b in bias]).unsqueeze(1).clone()))
                self.plan.append(("linear", n_linear))
                n_linear += 1
            elif isinstance(mod, ELEMENTWISE):
                self.plan.append(("act", mod))
            else:
                raise ValueError(f"MLP layer {type(mod).__name__} is not batched (elementwise activations only)")
        self.n_linear = n_linear

    def layer_weight(self, i: int) -> Tensor:
        """The (transposed) weight the i-th Linear multiplies by: spectrally normalised (after a
        power-iteration step in training mode) where the members were."""
        w = getattr(self, f"weight_{i}")
        if i not in self.spectral:
            return w
        n, eps = self.spectral[i]
        u, v = getattr(self, f"u_{i}"), getattr(self, f"v_{i}")
        if self.training:
            power_iteration(w.detach(), u, v, n, eps)
        return spectral_normalized(w, u, v)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(self.k, x.shape[1], -1)
        for kind, what in self.plan:
            if kind == "linear":
                x = torch.baddbmm(getattr(self, f"bias_{what}"), x, self.layer_weight(what))
            else:
                x = what(x)  # type: ignore[operator]
        return x

    # ------------------------------------------------------------------ members
    @torch.no_grad()
    def write_member(self, k: int, net: nn.Module) -> None:
        """Copy member ``k``'s current parameters (and spectral-norm vectors) into ``net``, a member MLP."""
        linears = [m for m in net.net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            w = getattr(self, f"weight_{i}")[k].t()
            if i in self.spectral:
                sn = layer.parametrizations.weight
                sn.original.copy_(w)
                sn[0]._u.copy_(getattr(self, f"u_{i}")[k])
                sn[0]._v.copy_(getattr(self, f"v_{i}")[k])
            else:
                layer.weight.copy_(w)
            layer.bias.copy_(getattr(self, f"bias_{i}")[k, 0])
