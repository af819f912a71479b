"""The GAN LightningModule: D and G phases on the shared step skeleton (:mod:`gancollapse.models.phased`).

The schedule: one discriminator step per batch, and a generator step after every ``n_critic``-th one
(the MaEM seed's ``batch_idx % G_split_num == 0`` rule), G reusing D's z when ``g_reuse_z``. The math
lives in :mod:`gancollapse.losses` and :mod:`gancollapse.regularizers`; this class only wires it.

``updates``: ``alternating`` (default) steps D, then computes G's loss against the updated D;
``simultaneous`` takes both gradients at the step's starting parameters, on the same real batch and fakes,
then steps both — ALI's ``ali_algorithm`` (one theano update for D and G), which PacGAN trains with
(fjxmlzn/PacGAN ``synthetic_data_experiments/*/pacgan_task.py``), and the single ``sess.run([g_train_op,
d_train_op])`` of the Unrolled GAN notebook and GDPP's ``gdppgan_Synthetic.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils import parametrize

from gancollapse.losses import Objective
from gancollapse.models.contract import REGULARIZER_HOOKS, ConfigUse
from gancollapse.models.phased import PhaseBatch, PhasedModule
from gancollapse.regularizers.base import Regularizer, Step
from gancollapse.samplers.prior import PriorSampler

UPDATES = ("alternating", "simultaneous")


def _has_batch_coupling(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _forward_is_pure(net: nn.Module) -> bool:
    """Whether two training-mode forwards of ``net`` on one input give the same output and leave the same
    state: no normalisation running statistics to update twice, no dropout mask to draw twice, and no
    parametrization or pre-forward hook (spectral norm's power iteration updates ``u`` on every forward)."""
    return not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd))
                   or parametrize.is_parametrized(m) or m._forward_pre_hooks for m in net.modules())


def gan_phases(d_micro: int, n_critic: int, accumulate: int) -> list[str]:
    """The phases of a GAN's next batch, given D's micro-batches so far: D always; G on the last ``accumulate``
    micro-batches of every ``n_critic · accumulate`` (one G step per n_critic D steps)."""
    cycle = n_critic * accumulate
    return ["d", "g"] if d_micro % cycle >= (n_critic - 1) * accumulate else ["d"]


class GANModule(PhasedModule):
    """A GAN trained by alternating (or simultaneous) D and G steps.

    Args:
        generator / discriminator: the nets (already instantiated).
        objective: an :class:`~gancollapse.losses.Objective`.
        regularizers: named :class:`~gancollapse.regularizers.base.Regularizer` s, stacked.
        prior: the latent prior p0(z) of training and evaluation (``prior`` config group).
        optim: config with one partial optimizer per entry of :attr:`optimizer_names` (``generator``,
            ``discriminator``) and an optional ``scheduler`` partial (stepped once per epoch).
        z_dim: latent dimension.
        n_critic: D steps per G step (≥ 1).
        g_reuse_z: the G step reuses the z of the preceding D step (MaEM seed) instead of drawing anew.
        log_every_n_steps: how often (in steps of :attr:`log_phase`) losses are sent to the loggers.
        skip_nonfinite: skip (and count) an optimizer step whose loss or gradient is NaN/inf.
        accumulate_grad_batches: each optimizer steps once per this many of its phase's micro-batches, on
            the mean of their gradients. With n_critic = c, a G step follows every c·A batches and
            accumulates over the last A of them.
        compile: ``torch.compile`` both nets in place (``True`` or a mode such as ``"reduce-overhead"``,
            which uses CUDA graphs on GPU); state-dict keys are unchanged, so checkpoints stay loadable.
        channels_last: NHWC layout for both nets and the real batch (faster convs on tensor-core GPUs; the
            losses are unchanged up to float round-off).
        updates: ``alternating`` or ``simultaneous`` (module docstring; needs n_critic = 1 and g_reuse_z).
    """

    optimizer_names = ("generator", "discriminator")
    phase_optimizers = {"d": "discriminator", "g": "generator"}
    log_phase = "d"
    config_use = ConfigUse("GAN", hooks=frozenset(REGULARIZER_HOOKS),
                           keys=frozenset({"n_critic", "g_reuse_z", "accumulate_grad_batches", "compile", "channels_last",
                                           "ensemble", "updates"}))

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        objective: Objective,
        regularizers: Mapping[str, Regularizer] | None = None,
        prior: PriorSampler | None = None,
        optim: DictConfig | Mapping | None = None,
        z_dim: int = 32,
        n_critic: int = 1,
        g_reuse_z: bool = True,
        log_every_n_steps: int = 50,
        skip_nonfinite: bool = True,
        accumulate_grad_batches: int = 1,
        compile: bool | str = False,
        channels_last: bool = False,
        updates: str = "alternating",
    ) -> None:
        super().__init__()
        for key, val in (("n_critic", n_critic), ("z_dim", z_dim)):
            if int(val) < 1:
                raise ValueError(f"{key} must be >= 1, got {val}")
        if updates not in UPDATES:
            raise ValueError(f"updates={updates!r}: unknown; use alternating or simultaneous")
        if updates == "simultaneous" and (int(n_critic) != 1 or not g_reuse_z):
            raise ValueError(f"updates=simultaneous needs n_critic=1 and g_reuse_z=true (D and G step together on the "
                             f"same fakes), got n_critic={n_critic}, g_reuse_z={g_reuse_z}; set them, or "
                             "updates=alternating")
        self.init_skeleton(optim, log_every_n_steps, skip_nonfinite, accumulate_grad_batches)
        self.generator = generator
        self.discriminator = discriminator
        self.objective = objective
        self.regularizers = nn.ModuleDict(dict(regularizers or {}))
        for reg in self.regularizers.values():
            reg.apply_to_nets(self.generator, self.discriminator)
        self.prior = prior or PriorSampler()
        self.z_dim, self.n_critic, self.g_reuse_z = int(z_dim), int(n_critic), bool(g_reuse_z)
        self.updates = updates
        self.simultaneous = updates == "simultaneous"
        if channels_last:
            self.use_channels_last(self.generator, self.discriminator)
        if compile:
            mode = compile if isinstance(compile, str) else None
            self.generator.compile(mode=mode)
            self.discriminator.compile(mode=mode)
            self.cudagraph_steps = mode in ("reduce-overhead", "max-autotune")
            if self.cudagraph_steps and self.simultaneous:
                # G's phase reads the fakes of D's phase, which a new CUDA-graph generation would overwrite
                raise ValueError(f"updates=simultaneous with compile={compile}: CUDA graphs would overwrite the fakes "
                                 "G's phase shares with D's; use compile=true (no CUDA graphs) or updates=alternating")
        # One D forward on cat(real, fake) halves kernel launches; only valid without batch-coupling layers.
        self.concat_d = not _has_batch_coupling(self.discriminator)
        # With alternating updates and G reusing D's z, G's phase would recompute the very G(z) that D's phase
        # computed under no_grad (G's weights do not change in between): D's phase records it with grad once
        # and G's phase backpropagates through it, one G forward per step fewer with bitwise the same values.
        # Off where a second forward is not a pure repeat (running statistics, dropout, spectral norm's power
        # iteration: _forward_is_pure) or CUDA graphs would overwrite the shared fakes.
        self.share_fake = (not self.simultaneous and self.g_reuse_z and not self.cudagraph_steps
                           and _forward_is_pure(self.generator))
        # D's features ride along with the forward each phase already does (GDPP).
        self.d_features = any(reg.uses_d_features for reg in self.regularizers.values())
        rescoring = [n for n, r in self.regularizers.items() if type(r).g_discriminator is not Regularizer.g_discriminator]
        if len(rescoring) > 1:
            raise ValueError(f"regularizer=[{','.join(rescoring)}]: each replaces the discriminator that G's loss "
                             "scores with (g_discriminator); keep one of them")
        for reg in self.regularizers.values():
            reg.bind(self)

    # ------------------------------------------------------------------ the applied record
    def applied_regularizers(self) -> dict[str, dict[str, Any]]:
        return {name: reg.applied() for name, reg in self.regularizers.items()}

    def applied(self) -> dict[str, Any]:
        return {"model": self.config_use.name, "loss": self.objective.describe(),
                "regularizers": self.applied_regularizers(), "prior": self.prior.describe(),
                "optimizers": self.applied_optimizers(), "n_critic": self.n_critic, "g_reuse_z": self.g_reuse_z,
                "updates": "simultaneous" if self.simultaneous else "alternating"}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, n: int, z: Tensor | None = None, batch_size: int = 10_000) -> Tensor:
        """G(z) for n prior samples (or the given z), in eval mode, in chunks."""
        was_training = self.generator.training
        self.generator.eval()
        z = self.sample_z(n) if z is None else z.to(self.device)
        out = torch.cat([self.generator(chunk) for chunk in z.split(batch_size)])
        self.generator.train(was_training)
        return out

    # ------------------------------------------------------------------ the GAN's phases
    def optimizer_params(self, name: str) -> list[Tensor]:
        nets = {"generator": self.generator, "discriminator": self.discriminator}
        if name not in nets:
            raise ValueError(f"{type(self).__name__} has no parameters for optimizer {name!r}")
        return list(nets[name].parameters())

    def phases(self) -> list[str]:
        """Phases to run on the next batch (:func:`gan_phases`)."""
        return gan_phases(self.micro.get("d", 0), self.n_critic, self.accumulate)

    def g_scores_d_fakes(self) -> bool:
        """Whether this batch's G phase backpropagates through the G(z) its D phase computes: simultaneous
        updates, or :attr:`share_fake` on a batch that has a G phase."""
        return self.simultaneous or (self.share_fake and "g" in self.phases())

    def after_update(self, phase: str) -> None:
        """Hooks after a phase's optimizer step: regularizers' ``after_d_step`` (weight clipping)."""
        if phase == "d":
            for reg in self.regularizers.values():
                reg.after_d_step(self.discriminator)



    def _d_forward(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(D(real), D(fake), real features, fake features); the features only when :attr:`d_features`."""
        kw = {"return_features": True} if self.d_features else {}
        if self.concat_d:
            out = self.discriminator(torch.cat([real, fake]), **kw)
            out, feats = out if self.d_features else (out, None)
            n = real.shape[0]
            f_real, f_fake = (feats[:n], feats[n:]) if feats is not None else (None, None)
            return out[:n], out[n:], f_real, f_fake
        if not self.d_features:
            return self.discriminator(real), self.discriminator(fake), None, None
        (d_real, f_real), (d_fake, f_fake) = self.discriminator(real, **kw), self.discriminator(fake, **kw)
        return d_real, d_fake, f_real, f_fake

    def d_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        real, z = pb.real, pb.z
        if self.g_scores_d_fakes():
            # G's phase scores these very fakes (one G forward per step, one BatchNorm statistics update)
            pb.extras["fake"] = self.generator(z)
            fake = pb.extras["fake"].detach().clone()  # its own storage: D-side edits cannot reach G's graph
        else:
            with torch.no_grad():
                fake = self.generator(z)
        d_real, d_fake, f_real, f_fake = self._d_forward(real, fake)
        loss = self.objective.d_loss(d_real, d_fake)
        step = Step("d", real, fake, z, d_real, d_fake, self.generator, self.discriminator, self.d_steps,
                    self.current_epoch, real_features=f_real, fake_features=f_fake)
        terms = self._regularize(step)
        total = loss + sum(terms.values()) if terms else loss
        return {"loss": total, "d_loss": loss, **terms, "d_total": total, "d_real": d_real.mean(),
                "d_fake": d_fake.mean()}

    def g_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        z = pb.z if self.g_reuse_z else self.sample_z(pb.real.shape[0])
        # D's weight gradients are never used in G's step: freezing D while the graph is recorded skips
        # computing them (~1/6 of the FLOPs); the graph keeps no reference to the flag afterwards.
        self.discriminator.requires_grad_(False)
        try:
            fake = pb.extras.pop("fake", None)
            fake = self.generator(z) if fake is None else fake
            step = Step("g", pb.real, fake, z, None, None, self.generator, self.discriminator, self.g_steps,
                        self.current_epoch)
            d_net = self.g_discriminator(step)
            if self.d_features:
                d_fake, f_fake = d_net(fake, return_features=True)
                with torch.no_grad():  # the real side is a constant of G's step
                    f_real = d_net(pb.real, return_features=True)[1]
                step = replace(step, d_fake=d_fake, real_features=f_real, fake_features=f_fake)
            else:
                step = replace(step, d_fake=d_net(fake))
            d_fake = step.d_fake
            idx = self.select_fake(d_fake, step)
            loss = self.objective.g_loss(d_fake if idx is None else d_fake[idx])
            terms = self._regularize(step)
        finally:
            self.discriminator.requires_grad_(True)
        total = loss + sum(terms.values()) if terms else loss
        return {"loss": total, "g_loss": loss, **terms, "g_total": total}

    def select_fake(self, d_fake: Tensor, step: Step) -> Tensor | None:
        """Indices of the fakes G's loss uses: the intersection of every regularizer's ``filter_fake`` (top-k);
        None: all of them."""
        idx = None
        for reg in self.regularizers.values():
            sel = reg.filter_fake(d_fake, step)
            if sel is not None:
                idx = sel if idx is None else idx[torch.isin(idx, sel)]
        return idx

    def g_discriminator(self, step: Step) -> Callable[..., Tensor]:
        """The D that G's loss scores with: a regularizer's replacement (Unrolled GAN), else D itself."""
        for reg in self.regularizers.values():
            d_net = reg.g_discriminator(self, step)
            if d_net is not None:
                return d_net
        return self.discriminator

    def _regularize(self, step: Step) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for reg in self.regularizers.values():
            terms.update(reg(step))
        return terms

    def on_train_epoch_end(self) -> None:
        for reg in self.regularizers.values():
            reg.on_epoch_end(self.current_epoch)
        super().on_train_epoch_end()
