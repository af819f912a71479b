"""Unrolled GAN (Metz, Poole, Pfau & Sohl-Dickstein, "Unrolled Generative Adversarial Networks", ICLR 2017).

G's loss scores the fakes with the discriminator it *would* face after k more D updates, and G differentiates
through those updates (the surrogate objective of the paper's Sec. 2.2, Eq. 4–8). With θ_D⁰ = θ_D and D's
update rule U,

    θ_D^{i+1} = U(θ_D^i, ∇_θD L_D(θ_G, θ_D^i)),   i = 0 … k − 1
    f_k(θ_G, θ_D) = f(θ_G, θ_D^k(θ_G, θ_D))
    θ_G ← θ_G − η · d f_k / d θ_G              (D's own update is unchanged: θ_D follows ∇L_D, not f_k)

so G's gradient includes how D's response θ_D^k moves with θ_G (d f_k/dθ_G = ∂f/∂θ_G + ∂f/∂θ_D^k · dθ_D^k/dθ_G),
the term that lets G anticipate D. k = 0 is the plain GAN: no replacement D, no extra term.

On this platform L_D is the run's objective ``d_loss`` (plus, with ``d_regularizers``, D's regularizer terms),
so the look-ahead works with any loss, and G minimises the objective's ``g_loss`` of the fakes scored by
D at θ_D^k (``g_objective=g_loss``). For the zero-sum objectives (``standard``, ``wasserstein``) the paper's
f_k itself is ``g_objective=value``: G minimises −L_D(θ_G, θ_D^k), i.e. also the real-data term, whose
θ_G-dependence runs through θ_D^k (the authors' notebook, github.com/poolio/unrolled_gan, minimises
−``unrolled_loss`` of the standard GAN).

The update rule U. ``update=optimizer`` (the authors' code) replays D's own optimizer: the notebook
builds its look-ahead from Keras Adam's update ops, moments and step count included, so the look-ahead
continues from D's current optimizer state. Here that is Adam/AdamW, RMSprop or SGD with their param groups'
hyperparameters, continuing from their state (read, never written); other optimizers and options the rules lack
(Adam's amsgrad, ``maximize``) are refused at start-up. ``update=sgd``
is plain gradient descent θ ← θ − lr·∇ (many re-implementations). ``lr`` overrides the rule's learning rate.

Each look-ahead step reuses the G step's real batch and fakes (the notebook samples one batch per training
iteration and unrolls on it). D's buffers (BatchNorm statistics, spectral-norm power-iteration vectors) are
cloned once per G step, so the look-ahead changes neither D nor its optimizer.

Implementation: D is evaluated at the look-ahead's parameters with :func:`torch.func.functional_call`
(spectral-norm parametrisations apply to the ``…parametrizations.weight.original`` tensors passed), and each
step's gradient comes from :func:`torch.autograd.grad` with ``create_graph=True``. ``torch.func.grad`` computes
the same gradient, but refuses the ``requires_grad_``/``autograd.grad`` calls of input-gradient penalties
(WGAN-GP, R1) that ``d_regularizers`` replays, so one path serves every D loss. G's backward then
differentiates through the k steps (second derivatives of D; third with an input-gradient penalty).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gancollapse.regularizers.base import Regularizer, Step

if TYPE_CHECKING:
    from gancollapse.models.gan import GANModule

Update = Literal["optimizer", "sgd"]
GObjective = Literal["g_loss", "value"]
#: objectives whose G loss is −(D's loss) up to terms constant in θ_G: f_k = −L_D(θ_G, θ_D^k) is their value.
ZERO_SUM = ("standard", "wasserstein")
State = dict[str, Any]


def safe_sqrt(x: Tensor) -> Tensor:
    """√x with derivative 0 (not ∞) at x = 0.

    Adam's and RMSprop's √v has an infinite derivative where a parameter's gradient and moment are exactly 0
    (a dead unit); differentiating the look-ahead would then give 0·∞ = NaN. There the update itself is
    discontinuous in the gradient, so any finite choice is as good; 0 keeps such parameters out of G's gradient.
    """
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def sgd_step(p: Tensor, g: Tensor, state: State, lr: float, momentum: float = 0.0, dampening: float = 0.0,
             weight_decay: float = 0.0, nesterov: bool = False) -> tuple[Tensor, State]:
    """``torch.optim.SGD``'s update (its documented algorithm), differentiable in ``p`` and ``g``."""
    if weight_decay:
        g = g + weight_decay * p
    new: State = {}
    if momentum:
        buf = state.get("momentum_buffer")
        buf = g if buf is None else momentum * buf + (1.0 - dampening) * g
        new["momentum_buffer"] = buf
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, new


def adam_step(p: Tensor, g: Tensor, state: State, lr: float, betas: tuple[float, float], eps: float,
              weight_decay: float = 0.0, decoupled: bool = False) -> tuple[Tensor, State]:
    """``torch.optim.Adam`` (``decoupled``: ``AdamW``) update without amsgrad, differentiable in ``p`` and ``g``.

    m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,  p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε) (Kingma & Ba, Alg. 1,
    in PyTorch's form), continuing from ``state`` (``step``, ``exp_avg``, ``exp_avg_sq``; zeros when empty).
    """
    beta1, beta2 = betas
    t = float(state.get("step", 0.0)) + 1.0
    if weight_decay:
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = state.get("exp_avg")
    v = state.get("exp_avg_sq")
    m = (1.0 - beta1) * g if m is None else beta1 * m + (1.0 - beta1) * g
    v = (1.0 - beta2) * g * g if v is None else beta2 * v + (1.0 - beta2) * g * g
    denom = safe_sqrt(v) / math.sqrt(1.0 - beta2**t) + eps
    return p - (lr / (1.0 - beta1**t)) * m / denom, {"step": t, "exp_avg": m, "exp_avg_sq": v}


def rmsprop_step(p: Tensor, g: Tensor, state: State, lr: float, alpha: float, eps: float,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False) -> tuple[Tensor, State]:
    """``torch.optim.RMSprop``'s update (its documented algorithm), differentiable in ``p`` and ``g``."""
    if weight_decay:
        g = g + weight_decay * p
    sq = state.get("square_avg")
    sq = (1.0 - alpha) * g * g if sq is None else alpha * sq + (1.0 - alpha) * g * g
    new: State = {"step": float(state.get("step", 0.0)) + 1.0, "square_avg": sq}
    if centered:
        ga = state.get("grad_avg")
        ga = (1.0 - alpha) * g if ga is None else alpha * ga + (1.0 - alpha) * g
        new["grad_avg"] = ga
        avg = safe_sqrt(sq - ga * ga) + eps
    else:
        avg = safe_sqrt(sq) + eps
    if momentum > 0:
        buf = state.get("momentum_buffer")
        buf = g / avg if buf is None else momentum * buf + g / avg
        new["momentum_buffer"] = buf
        return p - lr * buf, new
    return p - lr * g / avg, new


def optimizer_rule(optimizer: torch.optim.Optimizer) -> str:
    """Which of the replayable rules ``optimizer`` follows (``adam``, ``adamw``, ``rmsprop``, ``sgd``).

    Raises ValueError for any other optimizer or option the functional rules do not implement.
    """
    fix = "set regularizer.unrolled.update=sgd, or use optim=adam|rmsprop"
    groups = optimizer.param_groups
    if any(g.get("maximize") for g in groups):
        raise ValueError(f"regularizer.unrolled.update=optimizer: D's optimizer maximizes, which the look-ahead does "
                         f"not replay; {fix}")
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        if any(g.get("amsgrad") for g in groups):
            raise ValueError(f"regularizer.unrolled.update=optimizer: D's Adam has amsgrad=true, which the look-ahead "
                             f"does not replay; {fix}")
        decoupled = isinstance(optimizer, torch.optim.AdamW) or any(g.get("decoupled_weight_decay") for g in groups)
        return "adamw" if decoupled else "adam"
    if isinstance(optimizer, torch.optim.RMSprop):
        return "rmsprop"
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    raise ValueError(f"regularizer.unrolled.update=optimizer: D's optimizer {type(optimizer).__name__} has no "
                     f"replayable update (Adam, AdamW, RMSprop, SGD); {fix}")


def rule_step(rule: str, group: dict[str, Any], lr: float) -> Callable[[Tensor, Tensor, State], tuple[Tensor, State]]:
    """The update of one parameter of ``group`` under ``rule`` at learning rate ``lr``."""
    wd = float(group.get("weight_decay", 0.0) or 0.0)
    if rule in ("adam", "adamw"):
        b1, b2 = (float(b) for b in group["betas"])
        return lambda p, g, s: adam_step(p, g, s, lr, (b1, b2), float(group["eps"]), wd, rule == "adamw")
    if rule == "rmsprop":
        return lambda p, g, s: rmsprop_step(p, g, s, lr, float(group["alpha"]), float(group["eps"]), wd,
                                            float(group.get("momentum", 0.0)), bool(group.get("centered")))
    if rule == "sgd":
        return lambda p, g, s: sgd_step(p, g, s, lr, float(group.get("momentum", 0.0)),
                                        float(group.get("dampening", 0.0)), wd, bool(group.get("nesterov")))
    raise ValueError(f"unknown update rule {rule!r}")


class FunctionalD:
    """D evaluated at given parameters and buffers (:func:`torch.func.functional_call`).

    Callable like D (``x``, ``return_features=``); ``modules()`` is D's, so regularizers that inspect D's layers
    (BatchNorm checks) see the real net. Not an ``nn.Module``: holding it never registers D a second time.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}

    def __call__(self, x: Tensor, **kwargs: Any) -> Any:
        return functional_call(self.net, (self.params, self.buffers), (x,), kwargs)

    def modules(self) -> Iterator[nn.Module]:
        return self.net.modules()


def unroll(loss_fn: Callable[[dict[str, Tensor], int], Tensor], params: dict[str, Tensor],
           steps: dict[str, Callable[[Tensor, Tensor, State], tuple[Tensor, State]]], state: dict[str, State],
           k: int) -> dict[str, Tensor]:
    """θ^k from θ⁰ = ``params`` by k updates θ^{i+1} = U(θ^i, ∇L(θ^i)) (Metz et al., Sec. 2.2), keeping the graph.

    ``loss_fn(θ, i)`` is D's loss at step i; ``steps[name]`` the update of parameter ``name`` (parameters
    without one stay fixed), ``state[name]`` its optimizer state. The returned tensors depend differentiably
    on whatever ``loss_fn`` depends on besides θ (G's parameters, through the fakes).
    """
    theta = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    state = dict(state)
    names = [n for n in theta if n in steps]
    for i in range(k):
        loss = loss_fn(theta, i)
        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=True, allow_unused=True)
        theta = dict(theta)
        for n, g in zip(names, grads, strict=True):
            if g is not None:  # like torch.optim: a parameter without gradient is not stepped
                theta[n], state[n] = steps[n](theta[n], g, state.get(n, {}))
    return theta


class Unrolled(Regularizer):
    """G's loss against D after k look-ahead D updates that G differentiates through (see the module docstring).

    Args:
        k: look-ahead steps (paper: 5 and 10 on the 2-D mixtures; 0 = the plain GAN).
        update: ``optimizer`` (the authors' code: D's optimizer's own update from its current state) or
            ``sgd`` (θ ← θ − lr·∇).
        lr: learning rate of the look-ahead; null: that of D's optimizer (its first param group).
        d_regularizers: the look-ahead's D loss includes the D terms of the run's other regularizers (as D's
            real step does); false: the objective's ``d_loss`` alone (the paper's setting).
        g_objective: ``g_loss`` (the objective's G loss of the fakes scored at θ_D^k, any objective) or
            ``value`` (the paper's f_k = −L_D at θ_D^k, for the zero-sum objectives standard and wasserstein).

    What the run did is readable afterwards: ``k``, ``update``, ``rule`` (the update replayed: adam, adamw,
    rmsprop, sgd), ``lr_used`` (the learning rate of the last look-ahead), ``replayed`` (names of the
    regularizers whose D terms the look-ahead included), ``g_objective``.
    """

    def __init__(self, k: int = 5, update: Update = "optimizer", lr: float | None = None,
                 d_regularizers: bool = True, g_objective: GObjective = "g_loss") -> None:
        super().__init__()
        if int(k) < 0:
            raise ValueError(f"regularizer.unrolled.k={k}: the number of look-ahead steps must be >= 0; 0 is the plain GAN")
        if update not in ("optimizer", "sgd"):
            raise ValueError(f"regularizer.unrolled.update={update!r}: must be optimizer (D's own update rule, the "
                             "authors' code) or sgd")
        if lr is not None and not float(lr) > 0:
            raise ValueError(f"regularizer.unrolled.lr={lr}: must be > 0, or null for D's optimizer's lr")
        if g_objective not in ("g_loss", "value"):
            raise ValueError(f"regularizer.unrolled.g_objective={g_objective!r}: must be g_loss or value")
        self.k, self.update, self.lr = int(k), update, None if lr is None else float(lr)
        self.d_regularizers, self.g_objective = bool(d_regularizers), g_objective
        self.rule: str | None = "sgd" if update == "sgd" else None
        self.lr_used: float | None = None
        self.replayed: list[str] = []
        self._view: FunctionalD | None = None
        self._final: FunctionalD | None = None
        self._objective: Any = None

    def applied(self) -> dict[str, Any]:
        """Besides the settings: the update rule and lr the unroll really used and the D terms it replayed."""
        return {**super().applied(), "rule": self.rule, "lr_used": self.lr_used, "replayed": list(self.replayed)}

    def bind(self, module: GANModule) -> None:
        if "g_discriminator" not in module.config_use.hooks:  # the module's contract: its G step asks for the D
            raise ValueError(f"regularizer=unrolled: {type(module).__name__} computes its own G loss and would not "
                             "score it with the unrolled D; use model.module._target_=gancollapse.models.gan.GANModule")
        if self.k == 0:
            return
        self._objective = module.objective
        if getattr(module.discriminator, "_compiled_call_impl", None) is not None:
            raise ValueError("regularizer.unrolled.k>0 with compile=true: G's gradient through the look-ahead needs "
                             "double backward, which torch.compile does not support; set compile=false")
        name = getattr(module.objective, "name", type(module.objective).__name__)
        if self.g_objective == "value" and name not in ZERO_SUM:
            raise ValueError(f"regularizer.unrolled.g_objective=value: loss={name} is not zero-sum (its G loss is not "
                             "−D's loss), so the paper's value f_k is undefined; use g_objective=g_loss or "
                             "loss=standard|wasserstein")
        self.replayed = []
        if self.d_regularizers:
            for other_name, other in module.regularizers.items():
                if other is self or type(other).d_terms is Regularizer.d_terms:
                    continue
                if not other.replayable_d_terms:
                    raise ValueError(f"regularizer.unrolled.d_regularizers=true: regularizer {other_name}'s D term "
                                     "has side effects and cannot be replayed in the look-ahead; set "
                                     "regularizer.unrolled.d_regularizers=false or drop one of them")
                self.replayed.append(other_name)
            for other_name, other in module.regularizers.items():
                if type(other).after_d_step is not Regularizer.after_d_step:
                    raise ValueError(f"regularizer.unrolled.d_regularizers=true: regularizer {other_name} changes D "
                                     "in place after each step, which the look-ahead cannot replay; set "
                                     "regularizer.unrolled.d_regularizers=false or drop one of them")
        if self.update == "optimizer":
            factory = (module.optim_cfg or {}).get("discriminator")
            cls = getattr(factory, "func", None) if factory is not None else torch.optim.Adam
            if isinstance(cls, type) and not issubclass(cls, torch.optim.Adam | torch.optim.AdamW | torch.optim.RMSprop
                                                        | torch.optim.SGD):
                raise ValueError(f"regularizer.unrolled.update=optimizer: D's optimizer {cls.__name__} has no "
                                 "replayable update (Adam, AdamW, RMSprop, SGD); set regularizer.unrolled.update=sgd, "
                                 "or use optim=adam|rmsprop")
            for option in ("amsgrad", "maximize"):
                if (getattr(factory, "keywords", None) or {}).get(option):
                    raise ValueError(f"regularizer.unrolled.update=optimizer: optim.discriminator.{option}=true is not "
                                     "replayed by the look-ahead; set regularizer.unrolled.update=sgd or "
                                     f"optim.discriminator.{option}=false")

    # ------------------------------------------------------------------ G's step
    def g_discriminator(self, module: GANModule, step: Step) -> FunctionalD | None:
        if self.k == 0:
            return None
        net = step.discriminator
        if self._view is None or self._view.net is not net:
            self._view, self._final = FunctionalD(net), FunctionalD(net)
        named = dict(net.named_parameters())
        steps, state = self._rules(module, named)
        buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
        view = self._view
        view.buffers = buffers
        replay = [module.regularizers[n] for n in self.replayed]
        real, fake = step.real, step.fake

        def d_loss(theta: dict[str, Tensor], i: int) -> Tensor:
            view.params = theta
            if module.concat_d:
                out = view(torch.cat([real, fake]))
                d_real, d_fake = out[: real.shape[0]], out[real.shape[0] :]
            else:
                d_real, d_fake = view(real), view(fake)
            loss = module.objective.d_loss(d_real, d_fake)
            if replay:
                d_step = Step("d", real, fake, step.z, d_real, d_fake, step.generator, view,  # type: ignore[arg-type]
                              module.d_steps + i, step.epoch)
                for reg in replay:
                    terms = reg.d_terms(d_step)
                    if terms:
                        loss = loss + sum(terms.values())
            return loss

        theta = unroll(d_loss, named, steps, state, self.k)
        final = self._final
        final.params, final.buffers = theta, buffers
        return final

    def g_terms(self, step: Step) -> dict[str, Tensor]:
        final = self._final
        if final is None or not final.params:
            return {}
        terms: dict[str, Tensor] = {}
        if self.g_objective == "value":
            # f_k = −L_D(θ_G, θ^k); the module already adds g_loss(D_k(fake)), so add the rest: for a zero-sum
            # objective the real-data term (−E softplus(−D_k(x)) for the standard GAN), whose θ_G-dependence
            # runs through θ^k.
            objective, d_fake = self._objective, step.d_fake
            terms["unrolled_real"] = -objective.d_loss(final(step.real), d_fake) - objective.g_loss(d_fake)
        # G's step is scored: drop the look-ahead's tensors (and the graph behind them) until the next one.
        final.params, final.buffers = {}, {}
        if self._view is not None:
            self._view.params, self._view.buffers = {}, {}
        return terms

    def _rules(self, module: GANModule, named: dict[str, Tensor]) -> tuple[dict[str, Callable], dict[str, State]]:
        """Per-parameter update functions and their optimizer state (read, never written: the rules are pure)."""
        opt = module._optimizer("d")
        opt = getattr(opt, "optimizer", opt)  # Lightning's wrapper
        if self.update == "optimizer":
            self.rule = optimizer_rule(opt)
        by_id = {id(p): n for n, p in named.items()}
        steps: dict[str, Callable] = {}
        state: dict[str, State] = {}
        for group in opt.param_groups:
            lr = self.lr if self.lr is not None else float(group["lr"])
            self.lr_used = lr
            # update=sgd: torch's SGD rule without momentum or weight decay, i.e. θ − lr·∇
            rule = rule_step(self.rule, group if self.update == "optimizer" else {}, lr)
            for p in group["params"]:
                name = by_id.get(id(p))
                if name is not None:
                    steps[name] = rule
                    state[name] = dict(opt.state.get(p, {})) if self.update == "optimizer" else {}
                    if "step" in state[name]:  # read once here, not in each of the k steps
                        state[name]["step"] = float(state[name]["step"])
        return steps, state

    def extra_repr(self) -> str:
        return (f"k={self.k}, update={self.update}, lr={self.lr}, d_regularizers={self.d_regularizers}, "
                f"g_objective={self.g_objective}")
