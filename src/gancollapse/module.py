"""The GAN LightningModule: orchestrates nets, objective, regularizers and sampler (manual optimisation).

One ``training_step`` is one discriminator step; every ``n_critic``-th step is followed by one generator
step (the MaEM seed's ``batch_idx % G_split_num == 0`` rule). The math lives in :mod:`gancollapse.losses`
and :mod:`gancollapse.regularizers`; this class only wires them together, counts steps and logs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gancollapse.losses import Objective
from gancollapse.regularizers.base import Regularizer, Step
from gancollapse.samplers.prior import PriorSampler


def _has_batch_coupling(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _as_batch(batch: Any) -> Tensor:
    """Datamodules yield a tensor or an (images, labels) pair; GANs only use the images."""
    if isinstance(batch, (list, tuple)):
        return batch[0]
    if isinstance(batch, Mapping):
        return batch["image"]
    return batch


class GANModule(L.LightningModule):
    """A GAN trained by alternating D and G steps.

    Args:
        generator / discriminator: the nets (already instantiated).
        objective: an :class:`~gancollapse.losses.Objective`.
        regularizers: named :class:`~gancollapse.regularizers.base.Regularizer` s, stacked.
        sampler: latent sampler; its ``prior`` draws z during training.
        optim: config with ``generator`` and ``discriminator`` partial optimizers and an optional
            ``scheduler`` partial (stepped once per epoch).
        z_dim: latent dimension.
        n_critic: D steps per G step (≥ 1).
        g_reuse_z: the G step reuses the z of the preceding D step (MaEM seed) instead of drawing anew.
        log_every_n_steps: how often (in D steps) losses are sent to the loggers.
        skip_nonfinite: skip (and count) an optimizer step whose loss is NaN/inf instead of applying it.
        compile: ``torch.compile`` both nets in place (``True`` or a mode such as ``"reduce-overhead"``,
            which uses CUDA graphs on GPU); state-dict keys are unchanged, so checkpoints stay loadable.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        objective: Objective,
        regularizers: Mapping[str, Regularizer] | None = None,
        sampler: PriorSampler | None = None,
        optim: DictConfig | Mapping | None = None,
        z_dim: int = 32,
        n_critic: int = 1,
        g_reuse_z: bool = True,
        log_every_n_steps: int = 50,
        skip_nonfinite: bool = True,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        if int(n_critic) < 1:
            raise ValueError(f"n_critic must be >= 1 (D steps per G step), got {n_critic}")
        if int(z_dim) < 1:
            raise ValueError(f"z_dim must be >= 1, got {z_dim}")
        if int(log_every_n_steps) < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}")
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.objective = objective
        self.regularizers = nn.ModuleDict(dict(regularizers or {}))
        for reg in self.regularizers.values():
            reg.apply_to_nets(self.generator, self.discriminator)
        self.sampler = sampler or PriorSampler()
        self.optim_cfg = optim
        self.z_dim, self.n_critic, self.g_reuse_z = int(z_dim), int(n_critic), bool(g_reuse_z)
        self.log_every_n_steps, self.skip_nonfinite = int(log_every_n_steps), bool(skip_nonfinite)
        if compile:
            mode = compile if isinstance(compile, str) else None
            self.generator.compile(mode=mode)
            self.discriminator.compile(mode=mode)
        # One D forward on cat(real, fake) halves kernel launches; only valid without batch-coupling layers.
        self.concat_d = not _has_batch_coupling(self.discriminator)
        self.d_steps = 0
        self.g_steps = 0
        self.nonfinite_skips = {"d": 0, "g": 0}
        self.train_seconds = 0.0
        self._t0: float | None = None
        self.latest_eval: dict[str, float] = {}
        self._pending_logs: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ sampling
    def sample_z(self, n: int) -> Tensor:
        return self.sampler.prior(n, self.z_dim, self.device)

    @torch.no_grad()
    def generate(self, n: int, z: Tensor | None = None, batch_size: int = 10_000) -> Tensor:
        """G(z) for n prior samples (or the given z), in eval mode, in chunks."""
        was_training = self.generator.training
        self.generator.eval()
        z = self.sample_z(n) if z is None else z.to(self.device)
        out = torch.cat([self.generator(chunk) for chunk in z.split(batch_size)])
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        cfg = self.optim_cfg or {}
        make_g = cfg.get("generator") if cfg else None
        make_d = cfg.get("discriminator") if cfg else None
        opt_g = _build(make_g, self.generator.parameters()) if make_g is not None else torch.optim.Adam(self.generator.parameters(), 2e-4, betas=(0.5, 0.999))
        opt_d = _build(make_d, self.discriminator.parameters()) if make_d is not None else torch.optim.Adam(self.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
        sched = cfg.get("scheduler") if cfg else None
        if sched is None:
            return [opt_g, opt_d]
        return [opt_g, opt_d], [_build(sched, opt_g), _build(sched, opt_d)]

    def _step(self, opt, loss: Tensor, phase: str) -> bool:
        """Backward + step, unless the loss is not finite (then count the skip and leave the weights)."""
        if self.skip_nonfinite and not torch.isfinite(loss).item():
            self.nonfinite_skips[phase] += 1
            opt.zero_grad(set_to_none=True)
            return False
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        return True

    def _d_forward(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        if self.concat_d:
            out = self.discriminator(torch.cat([real, fake]))
            return out[: real.shape[0]], out[real.shape[0] :]
        return self.discriminator(real), self.discriminator(fake)

    def discriminator_step(self, real: Tensor, z: Tensor, opt) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.generator(z)
        d_real, d_fake = self._d_forward(real, fake)
        loss = self.objective.d_loss(d_real, d_fake)
        step = Step("d", real, fake, z, d_real, d_fake, self.generator, self.discriminator, self.d_steps, self.current_epoch)
        terms = self._regularize(step)
        total = loss + sum(terms.values()) if terms else loss
        if self._step(opt, total, "d"):
            for reg in self.regularizers.values():
                reg.after_d_step(self.discriminator)
        return {"d_loss": loss, **terms, "d_total": total, "d_real": d_real.mean(), "d_fake": d_fake.mean()}

    def generator_step(self, real: Tensor, z: Tensor, opt) -> dict[str, Tensor]:
        # D's weight gradients are never used in G's step: freezing D skips computing them (~1/6 of the FLOPs).
        self.discriminator.requires_grad_(False)
        try:
            return self._generator_step(real, z, opt)
        finally:
            self.discriminator.requires_grad_(True)

    def _generator_step(self, real: Tensor, z: Tensor, opt) -> dict[str, Tensor]:
        fake = self.generator(z)
        d_fake = self.discriminator(fake)
        step = Step("g", real, fake, z, None, d_fake, self.generator, self.discriminator, self.g_steps, self.current_epoch)
        idx = None
        for reg in self.regularizers.values():
            sel = reg.filter_fake(d_fake, step)
            if sel is not None:
                idx = sel if idx is None else idx[torch.isin(idx, sel)]
        loss = self.objective.g_loss(d_fake if idx is None else d_fake[idx])
        terms = self._regularize(step)
        total = loss + sum(terms.values()) if terms else loss
        self._step(opt, total, "g")
        return {"g_loss": loss, **terms, "g_total": total}

    def _regularize(self, step: Step) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for reg in self.regularizers.values():
            terms.update(reg(step))
        return terms

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = _as_batch(batch)
        opt_g, opt_d = self.optimizers()
        z = self.sample_z(real.shape[0])
        logs = self.discriminator_step(real, z, opt_d)
        self.d_steps += 1
        if self.d_steps % self.n_critic == 0:
            z_g = z if self.g_reuse_z else self.sample_z(real.shape[0])
            logs.update(self.generator_step(real, z_g, opt_g))
            self.g_steps += 1
        self._pending_logs = logs
        if self.d_steps % self.log_every_n_steps == 0:
            self.emit_logs(logs)

    # ------------------------------------------------------------------ logging & bookkeeping
    def emit_logs(self, logs: Mapping[str, Tensor]) -> None:
        """Send scalars to every logger directly (one host sync per log interval, none per step)."""
        values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).cpu().tolist()
        metrics = {f"train/{k}": v for k, v in zip(logs.keys(), values, strict=True)}
        metrics["train/g_step"] = self.g_steps
        metrics["train/nonfinite_skips"] = sum(self.nonfinite_skips.values())
        if self._t0 is not None:
            metrics["train/seconds"] = self.train_seconds + (time.perf_counter() - self._t0)
        self.log_metrics(metrics)
        bar = {k.split("/", 1)[1]: v for k, v in metrics.items() if k in ("train/d_loss", "train/g_loss")}
        if self._trainer is not None:
            self.trainer.progress_bar_metrics.update(bar)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        if self._trainer is None:
            return
        for logger in self.trainer.loggers:
            logger.log_metrics(dict(metrics), step=self.d_steps)

    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self._accumulate_time()

    def _accumulate_time(self) -> None:
        if self._t0 is not None:
            now = time.perf_counter()
            self.train_seconds += now - self._t0
            self._t0 = now

    def on_train_epoch_end(self) -> None:
        for reg in self.regularizers.values():
            reg.on_epoch_end(self.current_epoch)
        scheds = self.lr_schedulers()
        if scheds is not None:
            for s in scheds if isinstance(scheds, list) else [scheds]:
                s.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._accumulate_time()
        checkpoint["gancollapse"] = {
            "d_steps": self.d_steps,
            "g_steps": self.g_steps,
            "nonfinite_skips": dict(self.nonfinite_skips),
            "train_seconds": self.train_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gancollapse", {})
        self.d_steps = int(state.get("d_steps", 0))
        self.g_steps = int(state.get("g_steps", 0))
        self.nonfinite_skips = dict(state.get("nonfinite_skips", {"d": 0, "g": 0}))
        self.train_seconds = float(state.get("train_seconds", 0.0))


def _build(factory, arg):
    """Call a Hydra ``_partial_`` factory, or instantiate a config node with the positional arg."""
    if callable(factory):
        return factory(arg)
    from hydra.utils import instantiate

    node = OmegaConf.create(factory) if not isinstance(factory, DictConfig) else factory
    return instantiate(node, arg) if "_partial_" not in node else instantiate(node)(arg)
