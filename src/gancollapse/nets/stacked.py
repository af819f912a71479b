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

The other :class:`~gancollapse.nets.mlp.MLP` options are batched as follows:

* hidden Linear layers without bias (``bias=false``, PacGAN's G): ``bmm`` instead of ``baddbmm``;
* BatchNorm (Ioffe & Szegedy, ICML 2015, Algorithm 1; PacGAN's G): the K members' H features are laid side by
  side as K·H channels of one ``F.batch_norm`` over the batch, so every member is normalised by its own batch
  statistics and keeps its own running mean and variance (moved by its own ``momentum``), as its
  ``BatchNorm1d`` does; the running statistics are ``(K, H)`` buffers, ``num_batches_tracked`` ``(K,)``;
* maxout (Goodfellow et al., ICML 2013, Eq. 1) and the activations act on the last dim only, so one module serves
  all members;
* PacGAN packing (Lin et al., NeurIPS 2018, §3; :mod:`gancollapse.regularizers.pack`, whose forward hooks the
  members carry): a member's ``(B, d)`` input becomes ``(B/m, m·d)`` — m consecutive samples of the *same*
  member side by side — and each pack's score is repeated m times, i.e. ``(K, B, d) → (K, B/m, m·d)``.

Initialisation is not redone here: the members are built by the single run's builder (``init``, ``init_std``,
``init_gain``, PacGAN's widened first layer) and their tensors copied, so member k starts from its single run's
weights exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gancollapse.nets.mlp import MLP, Maxout

#: layers acting on the last dim only (activations elementwise, maxout per group of features), so one module
#: serves all members at once
ELEMENTWISE = (nn.LeakyReLU, nn.Tanh, nn.ReLU, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU, nn.Identity, Maxout)


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


def member_batch_norm(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor, bias: Tensor,
                      training: bool, momentum: float, eps: float) -> Tensor:
    """BatchNorm of each member's ``(B, H)`` slice of ``x`` (``(K, B, H)``) with its own statistics: the K·H
    features are the channels of one ``F.batch_norm`` over the batch (Ioffe & Szegedy 2015, Algorithm 1), so the
    math per member is ``BatchNorm1d``'s. ``running_mean``/``running_var`` (``(K, H)``, contiguous) are updated
    in place in training mode; ``weight``/``bias`` are ``(K, H)``."""
    k, b, h = x.shape
    flat = x.transpose(0, 1).reshape(b, k * h)
    out = F.batch_norm(flat, running_mean.view(-1), running_var.view(-1), weight.reshape(-1), bias.reshape(-1),
                       training, momentum, eps)
    return out.reshape(b, k, h).transpose(0, 1)


def _pack_of(members: Sequence[nn.Module]) -> int:
    """m of the members' PacGAN packing (the attribute :class:`gancollapse.regularizers.pack.Pack` sets), 1 if
    none."""
    ms = {int(getattr(m, "_pacgan_m", None) or 1) for m in members}
    if len(ms) != 1:
        raise ValueError(f"members differ in regularizer.pack.m ({sorted(ms)})")
    return ms.pop()


def spectral_normalized(wt: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``wt[k] / σ_k`` with ``σ_k = u_kᵀ W_k v_k`` (Miyato et al. Eq. 13 with the current estimates)."""
    u, v = u.clone(), v.clone()  # later power iterations must not change what autograd saved
    sigma = (u * _times(wt, v)).sum(dim=1)
    return wt / sigma[:, None, None]


class StackedMLP(nn.Module):
    """K :class:`~gancollapse.nets.mlp.MLP` s as one module on ``(K, B, in)`` inputs (see the module docstring).

    Attributes ``weight_i`` (``(K, in, out)``: each member's weight transposed, so that ``x @ weight`` needs
    no copy of a transposed operand) and ``bias_i`` (``(K, 1, out)``; absent for a Linear without bias) are the
    i-th Linear's parameters; spectrally normalised layers keep the unnormalised weight there and their
    power-iteration vectors in the buffers ``u_i`` / ``v_i``. The j-th BatchNorm has parameters ``bn_weight_j``
    / ``bn_bias_j`` (``(K, H)``) and buffers ``running_mean_j`` / ``running_var_j`` (``(K, H)``) and
    ``num_batches_tracked_j`` (``(K,)``). :attr:`pack` is the members' PacGAN m (1: no packing).
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
        self.pack = _pack_of(members)
        # ("linear", i), ("bn", j) or ("act", module): the member Sequential's order
        self.plan: list[tuple[str, int | nn.Module]] = []
        self.spectral: dict[int, tuple[int, float]] = {}  # layer -> (power iterations, eps)
        self.biased: dict[int, bool] = {}  # layer -> has a bias
        self.bn: dict[int, tuple[float, float]] = {}  # BatchNorm -> (momentum, eps)
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
                if any((b is None) != (bias[0] is None) for b in bias):
                    raise ValueError("members differ in the biases of their Linear layers")
                self.biased[n_linear] = bias[0] is not None
                if bias[0] is not None:
                    setattr(self, f"bias_{n_linear}",
                            nn.Parameter(torch.stack([b.detach() for b in bias]).unsqueeze(1).clone()))
                self.plan.append(("linear", n_linear))
                n_linear += 1
            elif isinstance(mod, nn.BatchNorm1d):
                self._add_batch_norm(len(self.bn), [m.net[j] for m in members])
            elif isinstance(mod, ELEMENTWISE):
                self.plan.append(("act", mod))
            else:
                raise ValueError(f"MLP layer {type(mod).__name__} is not batched (linear, BatchNorm1d, maxout and "
                                 "elementwise activations only)")
        self.n_linear = n_linear

    def _add_batch_norm(self, j: int, layers: Sequence[nn.BatchNorm1d]) -> None:
        first = layers[0]
        if not (first.affine and first.track_running_stats) or first.momentum is None:
            raise ValueError("model MLP batch_norm: ensemble>1 batches BatchNorm1d with affine parameters, running "
                             "statistics and a numeric bn_momentum only")
        if any((bn.momentum, bn.eps) != (first.momentum, first.eps) for bn in layers):
            raise ValueError("members differ in BatchNorm momentum or eps")
        self.bn[j] = (float(first.momentum), float(first.eps))
        setattr(self, f"bn_weight_{j}", nn.Parameter(torch.stack([bn.weight.detach() for bn in layers]).clone()))
        setattr(self, f"bn_bias_{j}", nn.Parameter(torch.stack([bn.bias.detach() for bn in layers]).clone()))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(f"{name}_{j}", torch.stack([getattr(bn, name).detach() for bn in layers]).clone())
        self.plan.append(("bn", j))

    @property
    def batch_norm(self) -> bool:
        """Whether the net has BatchNorm (a batch-coupling layer: real and fake batches go through apart)."""
        return bool(self.bn)

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
        n, m = x.shape[1], self.pack
        if n % m:  # (the message of gancollapse.regularizers.pack.pack, per member)
            raise ValueError(f"PacGAN: D got a batch of {n} samples, not a multiple of regularizer.pack.m={m}; "
                             "set dataset.batch_size (and any sampler/evaluator batch that D scores) to a multiple "
                             "of m")
        # packs: m consecutive samples of one member side by side (row-major within the member's slice)
        x = x.reshape(self.k, n // m, -1)
        for kind, what in self.plan:
            if kind == "linear":
                w = self.layer_weight(what)  # type: ignore[arg-type]
                x = torch.baddbmm(getattr(self, f"bias_{what}"), x, w) if self.biased[what] else torch.bmm(x, w)
            elif kind == "bn":
                x = self._batch_norm(what, x)  # type: ignore[arg-type]
            else:
                x = what(x)  # type: ignore[operator]
        return x.repeat_interleave(m, dim=1) if m > 1 else x

    def _batch_norm(self, j: int, x: Tensor) -> Tensor:
        momentum, eps = self.bn[j]
        if self.training:
            getattr(self, f"num_batches_tracked_{j}").add_(1)
        return member_batch_norm(x, getattr(self, f"running_mean_{j}"), getattr(self, f"running_var_{j}"),
                                 getattr(self, f"bn_weight_{j}"), getattr(self, f"bn_bias_{j}"), self.training,
                                 momentum, eps)

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
            if self.biased[i]:
                layer.bias.copy_(getattr(self, f"bias_{i}")[k, 0])
        norms = [m for m in net.net if isinstance(m, nn.BatchNorm1d)]
        for j, bn in enumerate(norms):
            bn.weight.copy_(getattr(self, f"bn_weight_{j}")[k])
            bn.bias.copy_(getattr(self, f"bn_bias_{j}")[k])
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(bn, name).copy_(getattr(self, f"{name}_{j}")[k])
