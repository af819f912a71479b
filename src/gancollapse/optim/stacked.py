"""Adam and RMSprop on stacked parameters ``(K, ...)``: K independent optimizers in one set of tensor ops.

Both updates are elementwise, so PyTorch's formulas run on the stacked tensors are member k's optimizer on
slice k. Two things are per member rather than shared: a ``keep`` mask (``(K,)`` bool) that leaves a member's
parameters and state untouched — the per-member form of :func:`gancollapse.models.phased.masked_step`, which
skips a step whose loss or gradient is not finite — and Adam's step count, which a skipped step does not
advance (so bias correction stays that of the member's own run).

The formulas are PyTorch's single-tensor ones (``torch/optim/rmsprop.py``, ``torch/optim/adam.py``): RMSprop
(Hinton, Coursera lecture 6e; Graves 2013, Eq. 38-45 for ``centered``) with L2 ``weight_decay`` and
``momentum``; Adam (Kingma & Ba, ICLR 2015, Algorithm 1) with L2 ``weight_decay`` and ``amsgrad`` (Reddi et
al., ICLR 2018). :func:`stacked_optimizer` rebuilds one from an optimizer the config made for a single member,
so the ``optim.*`` partials give the hyperparameters. They are ``torch.optim.Optimizer`` s, so Lightning steps,
counts and checkpoints them like any other (``LightningOptimizer.step(keep=...)`` passes the mask through).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


def _member_view(x: Tensor, like: Tensor) -> Tensor:
    """``x`` (``(K,)``) shaped to broadcast against ``like`` (``(K, ...)``)."""
    return x.reshape(-1, *([1] * (like.dim() - 1)))


def _masked(keep: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for the members where ``keep``, ``old`` elsewhere."""
    return new if keep is None else torch.where(_member_view(keep, new), new, old)


class StackedOptimizer(torch.optim.Optimizer):
    """Base: one parameter group of stacked parameters; :meth:`update` is one parameter's step."""

    def __init__(self, params: Iterable[Tensor], **hyper: Any) -> None:
        super().__init__(params, hyper)

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """A parameter's state before its first step (zeros, as PyTorch's lazily created state)."""
        raise NotImplementedError

    def update(self, p: Tensor, state: dict[str, Tensor], group: dict[str, Any], keep: Tensor | None) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, keep: Tensor | None = None) -> Any:  # type: ignore[override]
        """Update every member, or only those where ``keep`` (``(K,)`` bool) is true."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if keep is not None and keep.device.type == "cpu" and bool(keep.all()):
            keep = None  # nobody skips: the in-place update (reading the mask costs nothing on a CPU)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(self.init_state(p, group))
            if keep is None and self.update_all(params, group):
                continue
            for p in params:
                self.update(p, self.state[p], group, keep)
        return loss

    def update_all(self, params: list[Tensor], group: dict[str, Any]) -> bool:
        """Step every member of ``params`` at once with ``torch._foreach_*`` ops, where the optimizer has such
        a path for ``group``'s options; False: it has none (:meth:`update` steps each parameter)."""
        return False


class StackedRMSprop(StackedOptimizer):
    """``torch.optim.RMSprop`` per member (``maximize`` and complex parameters are not supported)."""

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"square_avg": torch.zeros_like(p)}
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state

    def update_all(self, params: list[Tensor], group: dict[str, Any]) -> bool:
        if group["centered"] or group["momentum"] > 0 or group["weight_decay"] != 0 or not params:
            return False
        # the common case: PyTorch's ops, in place, one call per op for all parameters
        alpha, grads = group["alpha"], [p.grad for p in params]
        squares = [self.state[p]["square_avg"] for p in params]
        torch._foreach_mul_(squares, alpha)
        torch._foreach_addcmul_(squares, grads, grads, value=1 - alpha)
        avg = torch._foreach_sqrt(squares)
        torch._foreach_add_(avg, group["eps"])
        torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])
        return True

    def update(self, p: Tensor, state: dict[str, Tensor], group: dict[str, Any], keep: Tensor | None) -> None:
        lr, alpha, eps, wd, momentum = (group[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum"))
        grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
        sq = state["square_avg"]
        new_sq = sq.mul(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            ga = state["grad_avg"]
            new_ga = ga.lerp(grad, 1 - alpha)
            avg = new_sq.addcmul(new_ga, new_ga, value=-1).sqrt_().add_(eps)
            ga.copy_(_masked(keep, new_ga, ga))
        else:
            avg = new_sq.sqrt().add_(eps)
        sq.copy_(_masked(keep, new_sq, sq))
        if momentum > 0:
            buf = state["momentum_buffer"]
            new_buf = buf.mul(momentum).addcdiv_(grad, avg)
            buf.copy_(_masked(keep, new_buf, buf))
            p.copy_(_masked(keep, p.add(new_buf, alpha=-lr), p))
        else:
            p.copy_(_masked(keep, p.addcdiv(grad, avg, value=-lr), p))


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` per member, each with its own step count (``maximize``, decoupled weight decay and
    complex parameters are not supported)."""

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"step": torch.zeros(p.shape[0], dtype=torch.float32, device=p.device),
                 "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p)
        return state

    def update(self, p: Tensor, state: dict[str, Tensor], group: dict[str, Any], keep: Tensor | None) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        steps = state["step"]
        steps.add_(1 if keep is None else keep.to(steps.dtype))
        # in float64 as PyTorch's Python-float bias corrections; a member that never stepped divides by 1
        t = steps.double().clamp(min=1)
        step_size = (lr / (1 - torch.pow(beta1, t))).to(p.dtype)
        bias2_sqrt = (1 - torch.pow(beta2, t)).sqrt().to(p.dtype)
        grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        new_m = m.lerp(grad, 1 - beta1)
        new_v = v.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
        second = new_v
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            second = torch.maximum(vmax, new_v)
            vmax.copy_(_masked(keep, second, vmax))
        denom = (second.sqrt() / _member_view(bias2_sqrt, p)).add_(eps)
        m.copy_(_masked(keep, new_m, m))
        v.copy_(_masked(keep, new_v, v))
        p.copy_(_masked(keep, p.addcdiv(new_m * _member_view(step_size, p), denom, value=-1), p))


def stacked_optimizer(template: torch.optim.Optimizer, params: list[Tensor], key: str) -> StackedOptimizer:
    """The stacked counterpart of ``template`` (an optimizer the config built for one member) over ``params``;
    a one-line ValueError naming ``key`` for an optimizer or option it does not batch."""
    if len(template.param_groups) != 1:
        raise ValueError(f"{key}: one parameter group per optimizer is batched, got {len(template.param_groups)}")
    hyper = {k: v for k, v in template.param_groups[0].items() if k != "params"}
    name = type(template).__name__
    if type(template) is torch.optim.RMSprop:
        cls: type[StackedOptimizer] = StackedRMSprop
        keys, flags = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"), ("maximize",)
    elif type(template) is torch.optim.Adam:
        cls = StackedAdam
        keys, flags = ("lr", "betas", "eps", "weight_decay", "amsgrad"), ("maximize", "decoupled_weight_decay")
    else:
        raise ValueError(f"{key}={name}: ensemble>1 batches only torch.optim.Adam and "
                         "torch.optim.RMSprop; choose optim=adam or optim=rmsprop, or train with ensemble=1")
    bad = next((f for f in flags if hyper.get(f)), None)
    if bad is not None:
        raise ValueError(f"{key}.{bad}={hyper[bad]}: ensemble>1 does not batch this {name} option; drop it or "
                         "train with ensemble=1")
    kept = {k: float(hyper[k]) if isinstance(hyper[k], Tensor) else hyper[k] for k in keys}
    if "betas" in kept:
        kept["betas"] = tuple(float(b) for b in kept["betas"])
    return cls(params, **kept)
