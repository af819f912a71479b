"""The training-step skeleton every model shares (manual optimisation).

One ``training_step`` runs the *phases* that :meth:`PhasedModule.phases` schedules for the batch. A phase
is a name (``"d"``, ``"g"``; Dist-GAN adds ``"r"``, MBRCE-AAE/ALAE have ``"e"``, ``"g"``, ``"ae"``) with

* a loss method ``<name>_loss(batch: PhaseBatch) -> dict`` holding ``"loss"`` (what the phase's optimizer
  minimises) and any other named tensors to log — pure loss code, the only thing a model writes;
* an optimizer, named in :attr:`PhasedModule.phase_optimizers`;
* an optional :meth:`PhasedModule.after_update` hook (weight clipping after D's step, EMA after G's).

:meth:`PhasedModule._update` is the one place that turns a loss into a parameter update. It alone owns
non-finite skipping, NudgedAdam's spectral nudge, gradient-accumulation counters, step counters and the skip
counters that logging reads at intervals. Non-finite skipping takes one of three paths (:func:`skip_path`):
fused optimizers take a found-inf flag on the device, as ``torch.amp.GradScaler`` does; other optimizers on
an accelerator step and are restored where the flag is set (no host sync either); on the CPU, where reading
a flag back costs nothing, the flag is read and a bad step simply gets no gradients. The layout follows the
phase loop of stylegan2-ada-pytorch (``training/training_loop.py``: phases with their own optimizer and interval) and
compare_gan's ModularGAN (losses and penalties as pluggable pieces around one step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gancollapse.data import images_of
from gancollapse.models.contract import ConfigUse, describe_optimizer
from gancollapse.optim.nudged_adam import NudgedAdam
from gancollapse.samplers.prior import PriorSampler


@dataclass
class PhaseBatch:
    """What the phases of one training step share: the real batch, D's z and anything a phase leaves for a
    later one (``extras``)."""

    real: Tensor
    z: Tensor
    extras: dict[str, Any] = field(default_factory=dict)


def _build(factory, arg):
    """Call a Hydra ``_partial_`` factory, or instantiate a config node with the positional arg."""
    if callable(factory):
        return factory(arg)
    node = OmegaConf.create(factory) if not isinstance(factory, DictConfig) else factory
    return instantiate(node, arg) if "_partial_" not in node else instantiate(node)(arg)


def _inner(opt: Any) -> torch.optim.Optimizer:
    """The torch optimizer behind Lightning's ``LightningOptimizer`` wrapper."""
    return getattr(opt, "optimizer", opt)


def _grads_by_device(params: list[Tensor]) -> dict[torch.device, list[Tensor]]:
    by_device: dict[torch.device, list[Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_device.setdefault(p.grad.device, []).append(p.grad)
    return by_device


def _grads_found_inf(grads: list[Tensor], device: torch.device) -> Tensor:
    """1 if any of ``grads`` (all on ``device``) holds a NaN/inf, else 0: ``torch.amp.GradScaler``'s fused
    check (``_amp_foreach_non_finite_check_and_unscale_``) with unit scale, so the gradients keep their values."""
    flag = torch.zeros((), device=device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, torch.ones((), device=device))
    return flag


def found_nonfinite(loss: Tensor, params: list[Tensor]) -> Tensor:
    """A 0-dim float tensor on the loss's device: 1 if the loss or any gradient is NaN/inf, else 0.

    Nothing is read back to the host (the device paths of :func:`skip_path`).
    """
    found = (~torch.isfinite(loss.detach())).float().reshape(())
    for device, grads in _grads_by_device(params).items():
        found = torch.maximum(found, _grads_found_inf(grads, device).to(found.device, non_blocking=True))
    return found


def nonfinite_on_host(loss: Tensor, params: list[Tensor]) -> bool:
    """True if the loss or any gradient is NaN/inf, read on the host (the ``host`` path of :func:`skip_path`;
    on the CPU this sync is free and saves the work :func:`masked_step` does to avoid it)."""
    loss = loss.detach()
    if not (math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss).all())):
        return True
    return any(bool(_grads_found_inf(grads, device)) for device, grads in _grads_by_device(params).items())


def skip_path(opt: Any, device: torch.device, sync_free: bool | None = None) -> str:
    """How :meth:`PhasedModule._update` skips a non-finite step of ``opt`` whose loss lives on ``device``.

    * ``fused``: the fused Adam/AdamW/SGD kernels take the found-inf flag themselves (no copy, no sync);
    * ``host``: the flag is read on the host and a bad step is taken without gradients — the default on the
      CPU, where a host sync costs nothing;
    * ``masked``: step, then restore parameters and state where the flag is set (:func:`masked_step`) — the
      default on an accelerator, where a host read would stall the launch queue every step.

    ``sync_free`` forces the choice between the last two (True: ``masked``, False: ``host``); None: by device.
    """
    inner = _inner(opt)
    if getattr(inner, "_step_supports_amp_scaling", False) and all(g.get("fused") for g in inner.param_groups):
        return "fused"
    if sync_free is None:
        sync_free = device.type != "cpu"
    return "masked" if sync_free else "host"


@torch.no_grad()
def masked_step(opt: Any, found_inf: Tensor, step: Callable[[], Any] | None = None) -> None:
    """``opt.step()`` (or ``step()``) that leaves parameters and optimizer state untouched where ``found_inf``
    is 1.

    Optimizers that accept a found-inf flag (the fused Adam/AdamW/SGD kernels) skip on the device. Any
    other optimizer steps, then its parameters and same-device state are restored with ``torch.where`` —
    also without a host sync; only state kept on another device (the CPU step counters of non-capturable
    optimizers on a GPU) costs a copy of the flag.
    """
    inner = _inner(opt)
    if skip_path(inner, found_inf.device) == "fused":
        inner.grad_scale, inner.found_inf = None, found_inf
        try:
            (step or opt.step)()
        finally:
            del inner.grad_scale, inner.found_inf
        return
    params = [p for g in inner.param_groups for p in g["params"] if p.grad is not None]
    saved = [(t, t.clone()) for p in params for t in (p, *(v for v in inner.state.get(p, {}).values()
                                                         if isinstance(v, Tensor)))]
    (step or opt.step)()
    # Tensors created by this first step (Adam's moments) had no previous value: zeros are Adam's start.
    fresh = [(t, torch.zeros_like(t)) for p in params for k, t in inner.state.get(p, {}).items()
             if isinstance(t, Tensor) and all(t is not s for s, _ in saved)]
    keep = found_inf.bool()
    for tensor, old in saved + fresh:
        flag = keep if keep.device == tensor.device else keep.to(tensor.device)
        tensor.copy_(torch.where(flag, old, tensor))


def direct_path(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether Lightning's ``manual_backward`` and ``LightningOptimizer.step`` would add nothing to
    ``loss.backward()`` and ``optimizer.step()`` but hook dispatch (the phases then call those directly).

    True on one device with plain or bf16-mixed precision (no loss scaler), no profiler, and no callback or
    module hook on the backward pass or before the optimizer step (``on_before_backward``,
    ``on_after_backward``, ``on_before_optimizer_step``, ``backward``). Elsewhere (DDP's gradient reducer, loss
    scalers, DeepSpeed, a profiler, a listening callback) Lightning's path stays. Either way each optimizer
    step is counted in ``trainer.global_step``.
    """
    precision = trainer.precision_plugin
    plain = type(precision) is Precision or (type(precision) is MixedPrecision and precision.scaler is None)
    if type(trainer.strategy) is not SingleDeviceStrategy or not plain:
        return False
    if not isinstance(trainer.profiler, PassThroughProfiler):
        return False
    if not all(hasattr(o, "_on_before_step") and hasattr(o, "_on_after_step") for o in trainer.strategy._lightning_optimizers):
        return False  # a Lightning without the step-counting callables: keep its own step
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    if any(is_overridden(h, cb, L.Callback) for cb in trainer.callbacks for h in hooks):
        return False
    return not any(is_overridden(h, module, L.LightningModule) for h in (*hooks, "backward"))


def _counter_values(counters: Mapping[str, Tensor | int]) -> dict[str, int]:
    """Host values of counters kept as device tensors or ints, with one sync for all the tensors."""
    tensors = {n: v for n, v in counters.items() if isinstance(v, Tensor)}
    read = torch.stack([v.detach().float().cpu() for v in tensors.values()]).tolist() if tensors else []
    values = dict(zip(tensors, read, strict=True))
    return {n: int(values.get(n, v)) for n, v in counters.items()}


class TrainClock:
    """Training wall time that survives checkpoints: ``train_seconds`` accumulated up to the last
    :meth:`_accumulate_time` (called at saves, stops and the end of training) plus the open interval since."""

    train_seconds: float = 0.0
    _t0: float | None = None  # start of the open interval; None outside training

    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self._accumulate_time()

    def _accumulate_time(self) -> None:
        if self._t0 is not None:
            now = time.perf_counter()
            self.train_seconds += now - self._t0
            self._t0 = now

    def elapsed_train_seconds(self) -> float:
        """Seconds trained so far, the open interval included (nothing is accumulated)."""
        return self.train_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)


class PhasedModule(TrainClock, L.LightningModule):
    """Base of every trainable model: phases, their optimizers, the one update, counters and logging.

    Subclasses set :attr:`optimizer_names`, :attr:`phase_optimizers` and :attr:`log_phase`, implement
    :meth:`phases`, one ``<phase>_loss`` per phase and :meth:`optimizer_params`, and call
    :meth:`init_skeleton` from ``__init__``.
    """

    #: optimizers in the order ``configure_optimizers`` returns them; each is a key of ``optim``.
    optimizer_names: tuple[str, ...] = ()
    #: which optimizer each phase steps.
    phase_optimizers: Mapping[str, str] = {}
    #: the phase whose step count drives logging intervals.
    log_phase: str = "g"
    #: real 4-D batches are made channels_last in :meth:`phase_batch` (set by :meth:`use_channels_last`).
    channels_last: bool = False
    #: start a new CUDA-graph generation before each phase (nets compiled with ``mode="reduce-overhead"``).
    cudagraph_steps: bool = False
    #: what the step reads from the run config (:func:`gancollapse.models.contract.check_config` refuses the rest)
    config_use: ClassVar[ConfigUse]
    #: ``optim.<name>.<arg>`` keys the model sets itself, with why (refused at start-up)
    optim_keys_refused: ClassVar[Mapping[str, str]] = {}
    #: the latent prior p0(z) of training and evaluation (``prior`` config group)
    prior: PriorSampler
    #: the run's length in G steps (``max_g_steps``; set by :func:`gancollapse.build.build_module`), None when
    #: epochs decide it: schedules tied to the run's length read it
    max_g_steps: int | None = None
    #: simultaneous updates: every phase of a step takes its gradient before any phase steps (ALI/PacGAN's
    #: one theano update, the Unrolled GAN notebook's one ``sess.run``); False: each phase steps in turn.
    simultaneous: bool = False
    #: non-finite skipping without host syncs (True), with a host check (False) or by device (None: host
    #: check on the CPU); see :func:`skip_path`. Fused optimizers skip on the device either way.
    sync_free_skip: bool | None = None
    #: how the phases back-propagate and step under a Trainer: ``lightning`` (``manual_backward`` and
    #: ``LightningOptimizer.step``, with their hooks) or ``direct`` (``loss.backward()`` and the optimizer's own
    #: ``step``, where :func:`direct_path` finds nothing they would skip); set at each ``on_train_start``.
    hook_path: str = "lightning"

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets this string before and after every hook it calls, ~40 times a batch; nn.Module's
        # __setattr__ would check it against the parameters, buffers and submodules each time.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def init_skeleton(self, optim: DictConfig | Mapping | None, log_every_n_steps: int, skip_nonfinite: bool,
                      accumulate_grad_batches: int) -> None:
        for key, val in (("log_every_n_steps", log_every_n_steps),
                         ("accumulate_grad_batches", accumulate_grad_batches)):
            if int(val) < 1:
                raise ValueError(f"{key} must be >= 1, got {val}")
        self.automatic_optimization = False
        self.optim_cfg = optim
        self.log_every_n_steps, self.skip_nonfinite = int(log_every_n_steps), bool(skip_nonfinite)
        self.accumulate = int(accumulate_grad_batches)
        self.steps: dict[str, int] = {}
        self.micro: dict[str, int] = {}
        # Skipped steps and the current run of them per phase: device tensors on the sync-free paths, ints
        # on the host path (read them through nonfinite_skips / consecutive_skips).
        self._skips: dict[str, Tensor | int] = {}
        self._streak: dict[str, Tensor | int] = {}
        self._found: dict[str, Tensor] = {}  # non-finite flag of the micro-batches accumulated so far
        #: the :func:`skip_path` each phase's last step took (``fused``, ``masked`` or ``host``).
        self.skip_paths: dict[str, str] = {}
        self.latest_eval: dict[str, float] = {}
        self._pending_logs: dict[str, Tensor] = {}
        self.nudge_metrics: dict[str, float] = {}

    @classmethod
    def check_config_extra(cls, cfg: DictConfig) -> None:
        """Model-specific refusals beyond :attr:`config_use` (raise RunError naming the key); here: NudgedAdam
        with gradient accumulation (its spectral check needs the whole gradient of one loss)."""
        from gancollapse.runio import RunError

        if int(cfg.get("accumulate_grad_batches", 1) or 1) > 1:
            nudged = [k for k, v in (cfg.get("optim") or {}).items() if v is not None and "NudgedAdam" in str(v.get("_target_", ""))]
            if nudged or OmegaConf.select(cfg, "model.module.nudge"):
                raise RunError(f"accumulate_grad_batches={cfg.accumulate_grad_batches}: NudgedAdam's spectral check "
                               "needs the whole gradient of one loss", "use accumulate_grad_batches=1 with the nudge")

    def sample_z(self, n: int, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """n draws of the training prior (on ``device``, default the module's; from ``generator`` if given)."""
        return self.prior.prior(n, self.z_dim, self.device if device is None else device, generator)

    # ------------------------------------------------------------------ the applied record
    def applied_optimizers(self) -> dict[str, Any]:
        """Each optimizer as it steps: type and hyperparameters read from the optimizer objects."""
        if self._trainer is not None and self.trainer.optimizers:
            opts = list(self.trainer.optimizers)
        else:
            opts = list(getattr(self, "_standalone_opts", None) or [])
        return {name: describe_optimizer(opt) for name, opt in zip(self.optimizer_names, opts, strict=False)}

    def applied(self) -> dict[str, Any]:
        """What the step used, read from the objects it called (``summary.json["applied"]``)."""
        raise NotImplementedError

    def use_channels_last(self, *nets: torch.nn.Module) -> None:
        """NHWC memory layout for the conv nets' weights and, from now on, for the real batch.

        Values are unchanged; on a GPU cuDNN's tensor-core convolutions take NHWC natively, so the
        NCHW↔NHWC transposes around every conv disappear (PyTorch's channels_last tutorial).
        """
        self.channels_last = True
        for net in nets:
            net.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ counters
    @property
    def d_steps(self) -> int:
        return self.steps.get("d", 0)

    @d_steps.setter
    def d_steps(self, value: int) -> None:
        self.steps["d"] = int(value)

    @property
    def g_steps(self) -> int:
        return self.steps.get("g", 0)

    @g_steps.setter
    def g_steps(self, value: int) -> None:
        self.steps["g"] = int(value)

    @property
    def nonfinite_skips(self) -> dict[str, int]:
        """Skipped optimizer steps per phase (a host sync on the device paths: read at intervals)."""
        return _counter_values(self._skips)

    @property
    def consecutive_skips(self) -> dict[str, int]:
        """Optimizer steps skipped in a row, up to the latest, per phase (a host sync: read at intervals)."""
        return _counter_values(self._streak)

    # ------------------------------------------------------------------ optimisers
    def default_optimizer(self, name: str, params: list[Tensor]) -> torch.optim.Optimizer:
        """Optimizer for ``name`` when ``optim`` has no entry for it (DCGAN's Adam)."""
        return torch.optim.Adam(params, 2e-4, betas=(0.5, 0.999))

    def optimizer_params(self, name: str) -> list[Tensor]:
        """Parameters the optimizer ``name`` updates."""
        raise NotImplementedError

    def configure_optimizers(self):
        cfg = self.optim_cfg or {}
        opts = []
        for name in self.optimizer_names:
            params = self.optimizer_params(name)
            factory = cfg.get(name) if cfg else None
            opts.append(_build(factory, params) if factory is not None else self.default_optimizer(name, params))
        if self.accumulate > 1 and any(isinstance(o, NudgedAdam) for o in opts):
            raise ValueError("NudgedAdam's spectral check needs the whole gradient of one loss: use "
                             "accumulate_grad_batches=1 with optim=nudged_adam")
        sched = cfg.get("scheduler") if cfg else None
        if sched is None:
            return opts
        return opts, [_build(sched, o) for o in opts]

    def use_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Run phases without a Trainer (benchmarks, unit tests): ``_update`` steps these optimizers, in the
        order of :attr:`optimizer_names`, and back-propagates with plain ``loss.backward()``."""
        self._standalone_opts = list(optimizers)

    def _optimizer(self, phase: str) -> Any:
        if self._trainer is None:
            if not getattr(self, "_standalone_opts", None):
                raise RuntimeError("no optimizers: train through a Trainer, or call use_optimizers("
                                   "module.configure_optimizers()) first")
            opts = self._standalone_opts
        else:
            opts = self.optimizers()
            opts = opts if isinstance(opts, list) else [opts]
        return opts[self.optimizer_names.index(self.phase_optimizers[phase])]

    # ------------------------------------------------------------------ the step skeleton
    def phases(self) -> list[str]:
        """Names of the phases to run on the next batch, in order (each has a ``<name>_loss`` method)."""
        raise NotImplementedError

    def phase_batch(self, batch: Any) -> PhaseBatch:
        """What the phases of one step share; GAN-like models draw D's z here."""
        real = images_of(batch)
        if self.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        return PhaseBatch(real, self.sample_z(real.shape[0]))

    def training_step(self, batch: Any, batch_idx: int = 0) -> None:
        pb = self.phase_batch(batch)
        logged_before = self.steps.get(self.log_phase, 0)
        due: list[tuple[str, Tensor]] = []
        for phase in self.phases():
            if self.cudagraph_steps:
                # The previous phase's graph outputs are dead (its backward and step are done): say so, or
                # CUDA-graph trees keep them alive and refuse to replay a graph that would overwrite them.
                torch.compiler.cudagraph_mark_step_begin()
            out = getattr(self, f"{phase}_loss")(pb)
            if self.simultaneous:
                # every phase's gradient at the parameters the step started from; all steps afterwards
                if self._backward(out["loss"], phase):
                    due.append((phase, out["loss"]))
            else:
                self._update(out["loss"], phase)
            self._pending_logs.update({k: v for k, v in out.items() if k != "loss"})
        for phase, loss in due:
            self._step(loss, phase)
        done = self.steps.get(self.log_phase, 0)
        if done != logged_before and done % self.log_every_n_steps == 0:
            self.emit_logs(self._pending_logs)

    def _update(self, loss: Tensor, phase: str) -> None:
        """Backward ``loss`` and step the phase's optimizer: the only place parameters change.

        Owns: gradient accumulation (the optimizer steps on the A-th micro-batch), NudgedAdam's spectral
        check when it is due, non-finite skipping on the device, the per-phase step and skip counters, and
        :meth:`after_update`. Its two halves, :meth:`_backward` and :meth:`_step`, are called apart for
        :attr:`simultaneous` updates.
        """
        if self._backward(loss, phase):
            self._step(loss, phase)

    def _backward(self, loss: Tensor, phase: str) -> bool:
        """The gradient half of :meth:`_update`; True when this micro-batch completes the optimizer's
        accumulation, i.e. :meth:`_step` is due."""
        opt = self._optimizer(phase)
        inner = _inner(opt)
        micro = self.micro.get(phase, 0)
        self.micro[phase] = micro + 1
        first, last = micro % self.accumulate == 0, (micro + 1) % self.accumulate == 0
        if first:
            opt.zero_grad(set_to_none=True)
        if self.skip_nonfinite and self.accumulate > 1:  # the last micro-batch's loss is checked at the step
            bad = (~torch.isfinite(loss.detach())).float()
            self._found[phase] = bad if first else torch.maximum(self._found[phase], bad)
        if isinstance(inner, NudgedAdam) and inner.due():
            self._nudge(inner, loss, phase)
        else:
            scaled = loss / self.accumulate if self.accumulate > 1 else loss
            if self._trainer is None or self.hook_path == "direct":
                scaled.backward()
            else:
                self.manual_backward(scaled)
        return last

    def _step(self, loss: Tensor, phase: str) -> None:
        """The parameter half of :meth:`_update`: the (guarded) optimizer step, counters, :meth:`after_update`."""
        opt = self._optimizer(phase)
        if self.skip_nonfinite:
            self._guarded_step(opt, loss, phase)
        else:
            self._opt_step(opt)
        self.steps[phase] = self.steps.get(phase, 0) + 1
        self.after_update(phase)

    def _guarded_step(self, opt: Any, loss: Tensor, phase: str) -> None:
        """``opt.step()``, skipped (parameters and optimizer state untouched) when the loss or a gradient is
        NaN/inf, counting skips and the current run of them, on the :func:`skip_path` for this optimizer."""
        inner = _inner(opt)
        params = [p for g in inner.param_groups for p in g["params"]]
        earlier = self._found.get(phase) if self.accumulate > 1 else None
        path = self.skip_paths[phase] = skip_path(inner, loss.device, self.sync_free_skip)
        skips, streak = self._skips.get(phase, 0), self._streak.get(phase, 0)
        if path == "host":
            bad = nonfinite_on_host(loss, params) or (earlier is not None and bool(earlier))
            if bad:
                # Torch optimizers pass over parameters without .grad: this step changes neither weights nor
                # state, yet it is still a step to Lightning (global_step, checkpoint cadence) as on a device.
                opt.zero_grad(set_to_none=True)
            self._opt_step(opt)
            self._skips[phase] = skips + int(bad)
            self._streak[phase] = streak + 1 if bad else 0
            return
        found = found_nonfinite(loss, params)
        if earlier is not None:
            found = torch.maximum(earlier, found)
        masked_step(opt, found, lambda: self._opt_step(opt))
        self._skips[phase] = skips + found
        self._streak[phase] = (streak + found) * found  # +1 on a skipped step, back to 0 on a taken one

    def _opt_step(self, opt: Any) -> None:
        """``opt.step()``; on the ``direct`` path the wrapped optimizer's own, counted as Lightning counts it."""
        inner = _inner(opt)
        if self.hook_path != "direct" or inner is opt or self._trainer is None:
            opt.step()
            return
        opt._on_before_step()  # Lightning's step counter (trainer.global_step), as LightningOptimizer.step does
        inner.step()
        opt._on_after_step()

    def _nudge(self, opt: NudgedAdam, loss: Tensor, phase: str) -> None:
        """NuGAN's check: gradients with a graph, Lanczos, projection; logs the spectrum (host sync, but only
        every ``every_n_steps`` steps)."""
        report = opt.nudge(loss)
        metrics = report.as_metrics(f"nugan/{phase}")
        metrics[f"nugan/{phase}_fired_total"] = float(opt.fired_total)
        self.nudge_metrics.update(metrics)
        self.log_metrics(metrics)

    def after_update(self, phase: str) -> None:
        """Hook after a phase's optimizer step (weight clipping, EMA)."""
    # ------------------------------------------------------------------ logging & bookkeeping
    def emit_logs(self, logs: Mapping[str, Tensor]) -> None:
        """Send scalars to every logger directly (one host sync per log interval, none per step)."""
        names = list(logs.keys())
        skips = [v for v in self._skips.values() if isinstance(v, Tensor)]
        flat = [v.detach().float().reshape(()).to(self.device) for v in [*logs.values(), *skips]]
        values = torch.stack(flat).cpu().tolist() if flat else []
        metrics = {f"train/{k}": v for k, v in zip(names, values[: len(names)], strict=True)}
        metrics["train/g_step"] = self.g_steps
        host_skips = sum(v for v in self._skips.values() if not isinstance(v, Tensor))
        metrics["train/nonfinite_skips"] = int(sum(values[len(names):]) + host_skips)
        if self._t0 is not None:
            metrics["train/seconds"] = self.elapsed_train_seconds()
        self.log_metrics(metrics)
        bar = {k.split("/", 1)[1]: v for k, v in metrics.items() if k in ("train/d_loss", "train/g_loss")}
        if self._trainer is not None:
            self.trainer.progress_bar_metrics.update(bar)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        if self._trainer is None:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(dict(metrics), step=self.steps.get(self.log_phase, 0))

    def on_train_start(self) -> None:
        super().on_train_start()
        self.hook_path = "direct" if direct_path(self.trainer, self) else "lightning"

    def on_train_epoch_end(self) -> None:
        scheds = self.lr_schedulers()
        if scheds is not None:
            for s in scheds if isinstance(scheds, list) else [scheds]:
                s.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._accumulate_time()
        checkpoint["gancollapse"] = {
            "steps": dict(self.steps),
            "micro": dict(self.micro),
            "d_steps": self.d_steps,
            "g_steps": self.g_steps,
            "nonfinite_skips": self.nonfinite_skips,
            "consecutive_skips": self.consecutive_skips,
            "train_seconds": self.train_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gancollapse", {})
        self.steps = {k: int(v) for k, v in state.get("steps", {}).items()}
        self.steps.setdefault("d", int(state.get("d_steps", 0)))
        self.steps.setdefault("g", int(state.get("g_steps", 0)))
        # Checkpoints from before gradient accumulation: one micro-batch per step.
        self.micro = {k: int(v) for k, v in state.get("micro", {}).items()} or dict(self.steps)
        # ints: the host path counts on with them, a device path turns them into tensors at its first step
        self._skips = {k: int(v) for k, v in state.get("nonfinite_skips", {}).items()}
        self._streak = {k: int(v) for k, v in state.get("consecutive_skips", {}).items()}
        self.train_seconds = float(state.get("train_seconds", 0.0))
