"""Many seeds in one process (``ensemble=K``): K toy GANs trained side by side as one batched model.

Small 2D nets leave a CPU or GPU mostly idle between kernel launches; stacking the K runs of a seed sweep
along a leading member axis turns K small matmuls into one batched matmul per layer
(:class:`~gancollapse.nets.stacked.StackedMLP`), K optimizer steps into one
(:mod:`gancollapse.optim.stacked`) and K Lightning loops into one. Nothing is shared between members but the
schedule: member k is the run ``seed + k`` would be on its own, down to float round-off.

What keeps member k equal to that single run:

* its nets, regularizers and prior are built by :func:`gancollapse.build.build_module` after
  ``seed_everything(seed + k)``, as the single run builds them, then stacked;
* its data and batch order are its own (:mod:`gancollapse.data.ensemble`);
* its random draws during training (z, G's fresh z without ``g_reuse_z``, the gradient penalty's α) come from
  its own ``torch.Generator``, started from the global RNG state its single run trains with (the state right
  after building its module; on a GPU, ``seed + k`` on the device, which nothing draws from before training);
* the losses are the :mod:`gancollapse.losses` objectives, ``torch.vmap`` ped over members; the penalties are
  the regularizers' own functions with ``batch_dims=2`` (one value per member);
* the step schedule (n_critic, gradient accumulation, R1's lazy interval, top-k's epoch schedule) is the same
  counter for everyone, as in :class:`~gancollapse.models.gan.GANModule`, and so is the order of the updates:
  ``updates=simultaneous`` takes both phases' gradients at the step's starting parameters from the same fakes
  (one G forward: one BatchNorm statistics update, as the single run) and steps both afterwards;
* PacGAN's packing (``regularizer=pack``) packs each member's own samples (:class:`StackedMLP`), and a
  discriminator with BatchNorm sees real and fake batches apart, as the single run's D does;
* non-finite skipping is per member (a mask in the stacked optimizer), and a member whose steps keep
  failing stops alone with status ``diverged`` (:meth:`EnsembleGAN.member_divergence`) where its single run
  would have stopped; the others go on. A NaN in one member cannot reach another: no op mixes members.

Only what can be batched this way is accepted (:data:`SUPPORTED_REGULARIZERS`, MLP nets, Adam/RMSprop;
:func:`gancollapse.ensemble.check_config` refuses the rest in one line before anything is written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gancollapse.models.gan import GANModule
from gancollapse.models.phased import TrainClock, found_nonfinite
from gancollapse.nets.stacked import StackedMLP
from gancollapse.optim.stacked import StackedOptimizer, stacked_optimizer
from gancollapse.regularizers.gradient_penalty import GradientPenalty, gradient_penalty
from gancollapse.regularizers.pack import Pack
from gancollapse.regularizers.r1 import R1, r1_penalty
from gancollapse.regularizers.spectral_norm import SpectralNorm
from gancollapse.regularizers.topk import TopK, topk_count
from gancollapse.regularizers.weight_clipping import WeightClipping
from gancollapse.runio import divergence_message

#: regularizers that are pure functions of the step (or model surgery), so batching them is exact
SUPPORTED_REGULARIZERS = (GradientPenalty, R1, WeightClipping, SpectralNorm, TopK, Pack)
#: why a regularizer is not batched, where there is more to say than "not supported"
NOT_BATCHED = {
    "gancollapse.regularizers.unrolled.Unrolled": "Unrolled GAN's look-ahead replays k D updates functionally "
    "(torch.func.functional_call), and the ensemble has no per-member functional D replay",
    "gancollapse.regularizers.gdpp.GDPP": "GDPP needs each member's D features and its own B×B "
    "eigendecompositions with their custom backward, which the stacked nets do not provide",
}
BATCHED_NAMES = "gradient_penalty, r1, weight_clipping, spectral_norm, topk and pack"


def member_nonfinite(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """``(K,)`` float: 1 where member k's loss or any of its gradients is NaN/inf (the per-member
    :func:`gancollapse.models.phased.found_nonfinite`)."""
    found = (~torch.isfinite(loss.detach())).float()
    if loss.device.type == "cpu" and not found_nonfinite(loss.sum(), list(params)).item():
        return found  # all finite (the usual case): one fused pass, and reading the flag costs nothing on a CPU
    for p in params:
        if p.grad is not None:
            # x * 0 is 0 for finite x and NaN for NaN/inf: one product and one sum per member, no false alarm
            # from a large but finite gradient (which a plain sum could overflow)
            probe = (p.grad.flatten(1) * 0).sum(dim=1)
            found = torch.maximum(found, (~torch.isfinite(probe)).float())
    return found


def check_members(members: Sequence[GANModule]) -> None:
    """Refuse (ValueError, one line) member modules the ensemble cannot batch."""
    for m in members:
        if type(m) is not GANModule:
            raise ValueError(f"model.module={type(m).__name__}: ensemble>1 batches only the GAN module "
                             "(gancollapse.models.gan.GANModule); train it with ensemble=1")
        for name, reg in m.regularizers.items():
            if not isinstance(reg, SUPPORTED_REGULARIZERS):
                why = NOT_BATCHED.get(f"{type(reg).__module__}.{type(reg).__name__}")
                raise ValueError(f"regularizer.{name}={type(reg).__name__}: "
                                 f"{why or 'ensemble>1 batches only ' + BATCHED_NAMES}; train it with ensemble=1")
        if sum(isinstance(r, TopK) for r in m.regularizers.values()) > 1:
            raise ValueError("regularizer: ensemble>1 batches one topk regularizer; keep one")
        if any(getattr(net, "_compiled_call_impl", None) is not None for net in (m.generator, m.discriminator)):
            raise ValueError("compile=true: ensemble>1 runs its batched nets eagerly; set compile=false")


class EnsembleGAN(TrainClock, L.LightningModule):
    """K :class:`~gancollapse.models.gan.GANModule` s (built one per seed) trained as one batched model.

    Args:
        members: the member modules, built in member order (their nets are copied into the stacked nets;
            afterwards they hold a member's weights only when :meth:`sync_member` writes them, for evaluation
            and records).
        seeds: the members' seeds.
        rng_states: each member's global CPU RNG state right after its module was built (its training draws
            start from it).
    """

    log_phase = "d"
    optimizer_names = ("generator", "discriminator")
    phase_optimizers = {"d": "discriminator", "g": "generator"}

    def __init__(self, members: Sequence[GANModule], seeds: Sequence[int], rng_states: Sequence[Tensor]) -> None:
        super().__init__()
        check_members(members)
        if not len(members) == len(seeds) == len(rng_states):
            raise ValueError("one seed and one RNG state per member")
        self.automatic_optimization = False
        self.members = list(members)  # a plain list: their state lives in the stacked nets, not twice
        self.k, self.seeds = len(members), [int(s) for s in seeds]
        first = members[0]
        self.generator = StackedMLP([m.generator for m in members])
        self.discriminator = StackedMLP([m.discriminator for m in members])
        # a plain dict: member 0's regularizers give the hyperparameters; each member keeps its own state
        self.objective, self.regularizers = first.objective, dict(first.regularizers)
        self.z_dim, self.n_critic, self.g_reuse_z = first.z_dim, first.n_critic, first.g_reuse_z
        self.accumulate, self.skip_nonfinite = first.accumulate, first.skip_nonfinite
        #: updates=simultaneous (:attr:`gancollapse.models.phased.PhasedModule.simultaneous`)
        self.simultaneous = bool(first.simultaneous)
        #: G's phase backpropagates through the G(z) D's phase computed (:attr:`GANModule.share_fake`)
        self.share_fake = all(bool(getattr(m, "share_fake", False)) for m in members)
        #: one D forward on real and fake together (no BatchNorm in D: :attr:`GANModule.concat_d`)
        self.concat_d = not self.discriminator.batch_norm
        self.log_every_n_steps = first.log_every_n_steps
        # the optimizers the config builds for one member give the stacked ones their hyperparameters
        templates = first.configure_optimizers()
        if isinstance(templates, tuple):
            raise ValueError("optim.scheduler: ensemble>1 does not batch learning-rate schedulers; set "
                             "optim.scheduler=null or train with ensemble=1")
        self.stacked_optimizers: dict[str, StackedOptimizer] = {
            name: stacked_optimizer(t, list(getattr(self, name).parameters()), f"optim.{name}")
            for name, t in zip(self.optimizer_names, templates, strict=True)}
        # each member's record (summary.json "applied") names the optimizer it steps as: the config's torch
        # optimizer over the member's own parameters, whose hyperparameters the stacked one copied
        first.use_optimizers(list(templates))
        for m in members[1:]:
            m.use_optimizers(list(m.configure_optimizers()))
        self._rng_states = [s.clone() for s in rng_states]
        self._rng_device: str = "cpu"
        self._gens: list[torch.Generator] | None = None
        self.steps: dict[str, int] = {}
        self.micro: dict[str, int] = {}
        self._skips: dict[str, Tensor] = {}
        self._streak: dict[str, Tensor] = {}
        self._found: dict[str, Tensor] = {}
        self._pending: dict[str, Tensor] = {}
        #: members still training (a diverged one is frozen: masked updates, no logs, no evaluations)
        self.active = [True] * self.k
        #: member -> its final bookkeeping when it stopped early (status, reason, counters)
        self.stopped: dict[int, dict[str, Any]] = {}
        #: per-member run records (:class:`gancollapse.ensemble.MemberRecords`); None: no files
        self.records: Any = None

    # ------------------------------------------------------------------ counters (read by the callbacks)
    @property
    def d_steps(self) -> int:
        return self.steps.get("d", 0)

    @property
    def g_steps(self) -> int:
        return self.steps.get("g", 0)

    def member_skips(self, k: int) -> dict[str, int]:
        """Member k's skipped non-finite steps per phase (a host sync)."""
        return {p: int(t[k].item()) for p, t in self._skips.items()}

    @property
    def nonfinite_skips(self) -> dict[str, int]:
        """Skipped non-finite steps per phase, summed over members (a host sync)."""
        return {p: int(t.sum().item()) for p, t in self._skips.items()}

    def member_divergence(self, limit: int) -> str | None:
        """Stop every active member that has skipped ``limit`` or more steps in a row in some phase, as its
        single run's :class:`~gancollapse.callbacks.RunGuard` would at this check; returns the run's stop
        message once no member is left (the RunGuard stops the run then), else None."""
        streaks = {p: t.cpu().tolist() for p, t in self._streak.items()}
        message = None
        for k in range(self.k):
            if not self.active[k]:
                continue
            why = divergence_message({p: int(s[k]) for p, s in streaks.items()}, self.member_skips(k),
                                     self.g_steps, limit)
            if why is not None:
                self.stop_member(k, "diverged", why)
                message = why
        if any(self.active):
            return None
        return f"every member diverged (the last: {message or 'earlier'})"

    def stop_member(self, k: int, status: str, reason: str) -> None:
        """Freeze member k (no more updates, logs or evaluations) and write its record now."""
        self.active[k] = False
        self._accumulate_time()
        self.stopped[k] = {"status": status, "reason": reason, "saved": True, **self.member_counters(k)}
        if self.records is not None:
            self.records.finish(self, k)

    def member_counters(self, k: int) -> dict[str, Any]:
        """Member k's bookkeeping as its own module holds it (frozen at its stop, if it stopped)."""
        if k in self.stopped:
            return {key: v for key, v in self.stopped[k].items() if key not in ("status", "reason", "saved")}
        return {"steps": dict(self.steps), "micro": dict(self.micro), "skips": self.member_skips(k),
                "streaks": {p: int(t[k].item()) for p, t in self._streak.items()},
                "train_seconds": self.train_seconds,
                "epoch": self.current_epoch if self._trainer is not None else 0}

    @torch.no_grad()
    def sync_member(self, k: int) -> GANModule:
        """Member k's module holding its current weights and counters (for evaluation and its records)."""
        m = self.members[k]
        self.generator.write_member(k, m.generator)
        self.discriminator.write_member(k, m.discriminator)
        c = self.member_counters(k)
        m.steps, m.micro = dict(c["steps"]), dict(c["micro"])
        m._skips = {p: torch.tensor(float(v), device=self.device) for p, v in c["skips"].items()}
        m._streak = {p: torch.tensor(float(v), device=self.device) for p, v in c["streaks"].items()}
        m.train_seconds, m._t0 = float(c["train_seconds"]), None
        return m

    # ------------------------------------------------------------------ random streams
    def generators(self) -> list[torch.Generator]:
        """The members' generators on this module's device (created at the first draw, from the states
        saved at build time or restored from a checkpoint)."""
        if self._gens is None:
            device = self.device
            gens = [torch.Generator(device=device) for _ in range(self.k)]
            if self._rng_device == device.type:
                for g, s in zip(gens, self._rng_states, strict=True):
                    g.set_state(s)
            else:  # a GPU: the single run draws from the device's generator, seeded by seed_everything(seed)
                for g, s in zip(gens, self.seeds, strict=True):
                    g.manual_seed(s)
            self._gens, self._rng_device = gens, device.type
        return self._gens

    def prior(self, n: int) -> Tensor:
        """``(K, n, z_dim)``: each member's prior draw from its own generator."""
        return torch.stack([m.prior.prior(n, self.z_dim, self.device, g)
                            for m, g in zip(self.members, self.generators(), strict=True)])

    def uniform(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """``(K, *shape)``: each member's ``torch.rand(shape)`` (the gradient penalty's α)."""
        return torch.stack([torch.rand(shape, generator=g, device=like.device, dtype=like.dtype)
                            for g in self.generators()])

    # ------------------------------------------------------------------ the step
    def configure_optimizers(self) -> list[StackedOptimizer]:
        return [self.stacked_optimizers[name] for name in self.optimizer_names]

    def on_fit_start(self) -> None:
        for m in self.members:
            m.to(self.device)

    phases = GANModule.phases
    g_scores_d_fakes = GANModule.g_scores_d_fakes

    def training_step(self, batch: Tensor, batch_idx: int = 0) -> None:
        real = batch
        z = self.prior(real.shape[1])
        logged_before = self.steps.get(self.log_phase, 0)
        shared: dict[str, Tensor] = {}  # what D's phase leaves for G's (the simultaneous fakes)
        due: list[tuple[str, Tensor]] = []
        for phase in self.phases():
            out = self.d_loss(real, z, shared) if phase == "d" else self.g_loss(real, z, shared)
            loss = out.pop("loss")
            if not self.simultaneous:
                self._update(loss, phase)
            elif self._backward(loss, phase):  # every gradient at the step's starting parameters ...
                due.append((phase, loss))
            self._pending.update(out)
        for phase, loss in due:  # ... then every step (PhasedModule.training_step)
            self._step(loss, phase)
        done = self.steps.get(self.log_phase, 0)
        if done != logged_before and done % self.log_every_n_steps == 0:
            self.emit_logs()

    def d_loss(self, real: Tensor, z: Tensor, shared: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """:meth:`GANModule.d_loss` for all members: ``(K,)`` tensors."""
        if shared is not None and self.g_scores_d_fakes():
            shared["fake"] = self.generator(z)  # G's phase scores these very fakes
            fake = shared["fake"].detach().clone()
        else:
            with torch.no_grad():
                fake = self.generator(z)
        n = real.shape[1]
        if self.concat_d:
            out = self.discriminator(torch.cat([real, fake], dim=1))
            d_real, d_fake = out[:, :n], out[:, n:]
        else:
            d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        loss = torch.vmap(self.objective.d_loss)(d_real, d_fake)
        terms: dict[str, Tensor] = {}
        for reg in self.regularizers.values():
            if isinstance(reg, GradientPenalty):
                alpha = self.uniform((n, *([1] * (real.dim() - 2))), real)
                terms["gp"] = reg.weight * gradient_penalty(self.discriminator, real, fake, alpha, batch_dims=2)
            elif isinstance(reg, R1) and self.d_steps % reg.every == 0:
                terms["r1"] = 0.5 * reg.gamma * reg.every * r1_penalty(self.discriminator, real, batch_dims=2)
        total = loss + sum(terms.values()) if terms else loss
        return {"loss": total, "d_loss": loss, **terms, "d_total": total, "d_real": d_real.flatten(1).mean(1),
                "d_fake": d_fake.flatten(1).mean(1)}

    def g_loss(self, real: Tensor, z: Tensor, shared: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """:meth:`GANModule.g_loss` for all members (top-k keeps each member's own best k)."""
        n = real.shape[1]
        z = z if self.g_reuse_z else self.prior(n)
        self.discriminator.requires_grad_(False)  # as the single run: no D weight gradients in G's step
        try:
            fake = (shared or {}).pop("fake", None)
            d_fake = self.discriminator(self.generator(z) if fake is None else fake)
            for name, reg in self.regularizers.items():
                if isinstance(reg, TopK):
                    k = topk_count(n, self.current_epoch, reg.gamma, reg.nu, reg.start_epoch)
                    for m in self.members:
                        m.regularizers[name].last_k.fill_(k)
                    if k < n:
                        score = d_fake.detach().flatten(2).mean(dim=2)
                        idx = score.topk(k, dim=1).indices
                        d_fake = d_fake.gather(1, idx.reshape(*idx.shape, *([1] * (d_fake.dim() - 2)))
                                               .expand(-1, -1, *d_fake.shape[2:]))
            loss = torch.vmap(self.objective.g_loss)(d_fake)
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss": loss, "g_loss": loss, "g_total": loss}

    def _optimizer(self, phase: str) -> Any:
        opts = self.optimizers() if self._trainer is not None else self.configure_optimizers()
        return opts[self.optimizer_names.index(self.phase_optimizers[phase])]

    def _update(self, loss: Tensor, phase: str) -> None:
        """:meth:`PhasedModule._update` per member: backward the members' summed losses (each member's
        gradient is its own loss's), step where the member's loss and gradients are finite."""
        if self._backward(loss, phase):
            self._step(loss, phase)

    def _backward(self, loss: Tensor, phase: str) -> bool:
        """The gradient half of :meth:`_update` (:meth:`PhasedModule._backward`); True when the step is due."""
        opt = self._optimizer(phase)
        micro = self.micro.get(phase, 0)
        self.micro[phase] = micro + 1
        first, last = micro % self.accumulate == 0, (micro + 1) % self.accumulate == 0
        if first:
            opt.zero_grad(set_to_none=True)
            self._found[phase] = torch.zeros(self.k, device=loss.device)
        self._found[phase] = torch.maximum(self._found[phase], (~torch.isfinite(loss.detach())).float())
        total = (loss / self.accumulate if self.accumulate > 1 else loss).sum()
        self.manual_backward(total) if self._trainer is not None else total.backward()
        return last

    def _step(self, loss: Tensor, phase: str) -> None:
        """The parameter half of :meth:`_update`: each member's (masked) step, counters, weight clipping."""
        opt = self._optimizer(phase)
        params = self.stacked_optimizers[self.phase_optimizers[phase]].param_groups[0]["params"]
        active = torch.tensor(self.active, device=loss.device)
        if self.skip_nonfinite:
            found = torch.maximum(self._found[phase], member_nonfinite(loss, params)) * active
            opt.step(keep=(found == 0) & active)
            skips = self._skips.get(phase)
            self._skips[phase] = found if skips is None else skips + found
            streak = self._streak.get(phase)
            self._streak[phase] = found if streak is None else (streak + found) * found
        else:
            opt.step(keep=None if all(self.active) else active)
        self.steps[phase] = self.steps.get(phase, 0) + 1
        if phase == "d":
            for reg in self.regularizers.values():
                reg.after_d_step(self.discriminator)  # weight clipping: elementwise, members apart

    # ------------------------------------------------------------------ logging & bookkeeping
    def emit_logs(self) -> None:
        """Each active member's losses to its own loggers (one host sync per log interval)."""
        names = list(self._pending)
        rows = [self._pending[n].detach().float().reshape(self.k) for n in names]
        skips = torch.stack(list(self._skips.values())).sum(0) if self._skips else torch.zeros(self.k)
        values = torch.stack([*rows, skips.to(rows[0].device)]).cpu().tolist() if rows else [[0.0] * self.k]
        seconds = self.elapsed_train_seconds()
        for k in range(self.k):
            if not self.active[k] or self.records is None:
                continue
            metrics = {f"train/{n}": values[i][k] for i, n in enumerate(names)}
            metrics.update({"train/g_step": self.g_steps, "train/nonfinite_skips": int(values[-1][k]),
                            "train/seconds": seconds})
            self.records.log(k, metrics, self.steps.get(self.log_phase, 0))
        if self._trainer is not None:
            for key in ("d_loss", "g_loss"):
                if key in names:
                    live = [values[names.index(key)][k] for k in range(self.k) if self.active[k]]
                    if live:
                        self.trainer.progress_bar_metrics[key] = sum(live) / len(live)

    def on_train_epoch_end(self) -> None:
        for m in self.members:
            for reg in m.regularizers.values():
                reg.on_epoch_end(self.current_epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._accumulate_time()
        gens = self._gens
        checkpoint["gancollapse"] = {
            "steps": dict(self.steps), "micro": dict(self.micro), "d_steps": self.d_steps, "g_steps": self.g_steps,
            "nonfinite_skips": self.nonfinite_skips, "train_seconds": self.train_seconds,
            "ensemble": {
                "seeds": list(self.seeds),
                "skips": {p: t.cpu() for p, t in self._skips.items()},
                "streaks": {p: t.cpu() for p, t in self._streak.items()},
                "active": list(self.active),
                "stopped": {str(k): v for k, v in self.stopped.items()},
                "rng_device": self._rng_device if gens is not None else "cpu",
                "rng": [g.get_state() for g in gens] if gens is not None else list(self._rng_states),
            },
        }
        if self.records is not None:
            self.records.checkpoint(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gancollapse", {})
        ens = state.get("ensemble", {})
        if [int(s) for s in ens.get("seeds", [])] != self.seeds:
            raise ValueError(f"the checkpoint holds members with seeds {ens.get('seeds')}, this run {self.seeds}; "
                             "resume with the seed and ensemble it was trained with")
        self.steps = {k: int(v) for k, v in state.get("steps", {}).items()}
        self.micro = {k: int(v) for k, v in state.get("micro", {}).items()}
        self._skips = {p: t.to(self.device) for p, t in ens.get("skips", {}).items()}
        self._streak = {p: t.to(self.device) for p, t in ens.get("streaks", {}).items()}
        self.active = [bool(a) for a in ens.get("active", [True] * self.k)]
        self.stopped = {int(k): dict(v) for k, v in ens.get("stopped", {}).items()}
        self._rng_states = [s.cpu() for s in ens.get("rng", self._rng_states)]
        self._rng_device, self._gens = str(ens.get("rng_device", "cpu")), None
        self.train_seconds = float(state.get("train_seconds", 0.0))


# ---------------------------------------------------------------------------- what an ensemble can batch
#: ``_target_`` s an ensemble batches, per config key (anything else is refused by :func:`check_config`)
TARGETS = {
    "dataset": ("gancollapse.data.toy.ToyDataModule",),
    "model.generator": ("gancollapse.nets.mlp.MLP",),
    "model.discriminator": ("gancollapse.nets.mlp.MLP",),
    "model.module": ("gancollapse.models.gan.GANModule",),
    "regularizer": ("gancollapse.regularizers.gradient_penalty.GradientPenalty", "gancollapse.regularizers.r1.R1",
                    "gancollapse.regularizers.weight_clipping.WeightClipping",
                    "gancollapse.regularizers.spectral_norm.SpectralNorm", "gancollapse.regularizers.topk.TopK",
                    "gancollapse.regularizers.pack.Pack"),
    "optim": ("torch.optim.Adam", "torch.optim.RMSprop"),
    "evaluator": ("gancollapse.metrics.toy_callback.ToyEvaluator",),
    "callbacks": ("gancollapse.progress.RunProgress",),
    "logger": ("gancollapse.loggers.CSVLogger",),
}
ONE_RUN = "train it with ensemble=1 (one seed per run; a -m sweep over seed=... runs several)"


def ensemble_size(cfg: DictConfig) -> int:
    """``cfg.ensemble`` (absent or null: 1), checked."""
    value = cfg.get("ensemble", 1)
    value = 1 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ensemble={value}: must be an integer >= 1 (the number of seeds trained together, "
                         "seed, seed+1, ...); use ensemble=1 for a single run")
    return int(value)


def _target(node: Any) -> str:
    return str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""


def check_config(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a config ``ensemble > 1`` cannot batch (before anything is built)."""
    k = ensemble_size(cfg)
    if k == 1:
        return

    def refuse(key: str, value: Any, why: str) -> None:
        raise ValueError(f"{key}={value}: {why}; {ONE_RUN}")

    choices = cfg.get("choices") or {}
    if _target(cfg.dataset) not in TARGETS["dataset"]:
        refuse("dataset", choices.get("dataset") or cfg.dataset.get("name") or _target(cfg.dataset),
               "ensemble>1 batches only the toy datasets (ring, grid)")
    for key in ("model.generator", "model.discriminator", "model.module"):
        target = _target(OmegaConf.select(cfg, key)) or "gancollapse.models.gan.GANModule"
        if target not in TARGETS[key]:
            refuse(key, target, f"ensemble>1 batches only {' / '.join(TARGETS[key])}")
    extra = [n for n, v in cfg.model.items() if n not in ("generator", "discriminator", "module")
             and isinstance(v, DictConfig) and "_target_" in v]
    if extra:
        refuse(f"model.{extra[0]}", _target(cfg.model[extra[0]]), "ensemble>1 batches a generator and a discriminator only")
    for name, node in (cfg.get("regularizer") or {}).items():
        if node is not None and _target(node) not in TARGETS["regularizer"]:
            refuse(f"regularizer.{name}", _target(node),
                   NOT_BATCHED.get(_target(node)) or f"ensemble>1 batches only {BATCHED_NAMES}")
    for name in ("generator", "discriminator"):
        node = (cfg.get("optim") or {}).get(name)
        if node is not None and _target(node) not in TARGETS["optim"]:
            refuse(f"optim.{name}", _target(node), "ensemble>1 batches only torch.optim.Adam and torch.optim.RMSprop")
    if (cfg.get("optim") or {}).get("scheduler") is not None:
        refuse("optim.scheduler", _target(cfg.optim.scheduler), "ensemble>1 does not batch learning-rate schedulers")
    if cfg.get("compile"):
        refuse("compile", cfg.compile, "ensemble>1 runs its batched nets eagerly (set compile=false)")
    trainer = cfg.trainer
    for key, ok in (("devices", (1, "1")), ("num_nodes", (1, None)), ("strategy", ("auto", None)),
                    ("precision", ("32-true", "32", 32, None))):
        if trainer.get(key, None) not in ok:
            refuse(f"trainer.{key}", trainer.get(key), "ensemble>1 trains in one process on one device in fp32")
    evaluator = cfg.get("evaluator") or None
    if evaluator is not None and _target(evaluator) not in TARGETS["evaluator"]:
        refuse("evaluator", choices.get("evaluator") or _target(evaluator),
               "ensemble>1 evaluates members with the toy evaluator only (or evaluator=none)")
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if node is not None and _target(node) not in TARGETS[group]:
                refuse(f"{group}.{name}", _target(node), f"ensemble>1 supports only {' / '.join(TARGETS[group])} here")
