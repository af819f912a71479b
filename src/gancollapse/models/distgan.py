"""Dist-GAN (Tran, Bui & Cheung, ECCV 2018) as a :class:`~gancollapse.models.gan.GANModule` subclass.

One Dist-GAN iteration is three optimizer steps in the reference order (tntrung/gan ``distgan.py``), each
on a *fresh* batch — here each on its own ``training_step``, so the dataloader supplies the fresh batches:

1. **R:** encoder E (and, on MNIST, G) minimise the latent-distance constraint
   (:func:`~gancollapse.models.distgan_losses.reconstruction_loss`);
2. **D:** the discriminator-score constraint + λ_p·GP (reference slope form);
3. **G:** |mean σ(D(x)) − mean σ(D(G(z)))|.

Each phase has its own Adam (as the reference's three ``AdamOptimizer`` s, so R and G keep separate moment
estimates for G's weights). ``d_steps``/``g_steps`` count D and G steps as in the base module (one of each
per iteration), ``r_steps`` the R steps; the μ schedule runs on the iteration count = ``d_steps``.

The class only declares its phases (``r_loss``, ``d_loss``, ``g_loss``), their optimizers and their
schedule; every update goes through the shared :meth:`GANModule._update`, so non-finite skipping and
NuGAN's nudge (a :class:`~gancollapse.optim.nudged_adam.NudgedAdam` on G or D, eigenvalues logged as
``nugan/g/eig*``) behave exactly as in the plain GAN. The math lives in
:mod:`gancollapse.models.distgan_losses`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from gancollapse.models.contract import REGULARIZER_HOOKS, ConfigUse
from gancollapse.models.distgan_losses import (
    DistGANObjective,
    interpolate,
    latent_distance_weight,
    score_weights,
    slope_penalty,
)
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import PhaseBatch, _build
from gancollapse.optim.nudged_adam import NudgedAdam
from gancollapse.regularizers.base import Regularizer, Step
from gancollapse.samplers.prior import PriorSampler


@contextlib.contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """Stop parameter gradients of ``nets`` inside the block (their inputs still get gradients)."""
    saved = [(p, p.requires_grad) for net in nets for p in net.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def features(discriminator: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """(logit, feature) from a D that supports ``return_features=True`` (nets.mnist.MnistDiscriminator)."""
    out = discriminator(x, return_features=True)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("Dist-GAN needs a discriminator whose forward(x, return_features=True) returns "
                         "(logit, features); use model=distgan_mnist (gancollapse.nets.mnist.MnistDiscriminator)")
    return out


class DistGANModule(GANModule):
    """Dist-GAN with encoder ``encoder``.

    Args (besides :class:`GANModule`'s):
        encoder: E: x → z.
        lambda_p: GP weight (1).
        lambda_r: weight of the latent-distance regulariser (1).
        lambda_w: md_z scale; None computes sqrt(z_dim / feature_dim) from D's ``feature_dim``.
        schedule_steps: N of the μ schedule (the reference ties it to its 100k training iterations); None
            takes the run's length :attr:`max_g_steps` at the start of training.
        r_updates_generator: R also updates G (reference: MNIST only; CIFAR/CelebA update E alone).
        gp_reduction: ``mean`` (reference slope) or ``sum`` (WGAN-GP norm).
        nudge: NuGAN+Dist-GAN — NudgedAdam options (k, iterations, threshold, every_n_steps, which, seed);
            G's optimizer becomes a NudgedAdam with the lr/betas/eps of ``optim.generator``. None: plain
            Dist-GAN (a NudgedAdam given directly in ``optim`` also works).
        nudge_discriminator: apply the same nudge to D's optimizer too (the notebooks nudged D only).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, encoder: nn.Module,
                 objective: DistGANObjective | None = None, regularizers: Mapping[str, Regularizer] | None = None,
                 prior: PriorSampler | None = None, optim: DictConfig | Mapping | None = None, z_dim: int = 100,
                 n_critic: int = 1, g_reuse_z: bool = False, log_every_n_steps: int = 50,
                 skip_nonfinite: bool = True, accumulate_grad_batches: int = 1, compile: bool | str = False,
                 channels_last: bool = False,
                 lambda_p: float = 1.0, lambda_r: float = 1.0,
                 lambda_w: float | None = None, schedule_steps: int | None = None, r_updates_generator: bool = True,
                 gp_reduction: Literal["mean", "sum"] = "mean", nudge: Mapping | None = None,
                 nudge_discriminator: bool = False) -> None:
        if int(n_critic) != 1:
            raise ValueError(f"n_critic must be 1 for Dist-GAN (one R, one D and one G step per iteration, as "
                             f"the reference), got {n_critic}")
        objective = objective if objective is not None else DistGANObjective()
        if not isinstance(objective, DistGANObjective):
            raise ValueError(f"loss={objective.describe()}: Dist-GAN uses its own loss; choose loss=distgan or drop "
                             "the override")
        super().__init__(generator, discriminator, objective, regularizers, prior, optim,
                         z_dim, 1, g_reuse_z, log_every_n_steps, skip_nonfinite, accumulate_grad_batches, compile,
                         channels_last)
        if lambda_p < 0 or lambda_r < 0:
            raise ValueError(f"model.module.lambda_p and lambda_r must be >= 0, got {lambda_p}, {lambda_r}")
        if schedule_steps is not None and int(schedule_steps) < 1:
            raise ValueError(f"model.module.schedule_steps must be >= 1 (N of the w_r/w_rec schedule), got {schedule_steps}")
        if gp_reduction not in ("mean", "sum"):
            raise ValueError(f"model.module.gp_reduction must be 'mean' (reference) or 'sum', got {gp_reduction!r}")
        if lambda_w is None:
            feature_dim = getattr(discriminator, "feature_dim", None)
            if feature_dim is None:
                raise ValueError("model.module.lambda_w is null but the discriminator has no feature_dim: set "
                                 "lambda_w = sqrt(z_dim / feature_dim) explicitly")
            lambda_w = latent_distance_weight(int(z_dim), int(feature_dim))
        self.encoder = encoder
        if channels_last:
            self.use_channels_last(self.encoder)
        if compile:
            self.encoder.compile(mode=compile if isinstance(compile, str) else None)
        self.lambda_p, self.lambda_r, self.lambda_w = float(lambda_p), float(lambda_r), float(lambda_w)
        self.schedule_steps = int(schedule_steps) if schedule_steps is not None else None
        self.r_updates_generator = bool(r_updates_generator)
        self.gp_reduction = gp_reduction
        self.nudge_cfg = dict(nudge) if nudge else None
        self.nudge_discriminator = bool(nudge_discriminator)
        if self.nudge_discriminator and not self.nudge_cfg:
            raise ValueError("model.module.nudge_discriminator=true needs model.module.nudge options")
        self.d_batch_coupled = not self.concat_d  # the base sets concat_d from D's BatchNorm layers
        if self.nudge_discriminator and self.lambda_p > 0 and self.d_batch_coupled:
            # Hessian-vector products of a gradient penalty are third derivatives, which BatchNorm lacks.
            raise ValueError("model.module.nudge_discriminator=true with the gradient penalty needs a D without "
                             "BatchNorm: set model.discriminator.batch_norm=false (or model.module.lambda_p=0)")
        # Dist-GAN's D has BatchNorm; its features are computed in separate passes like the reference.
        self.concat_d = False

    optimizer_names = ("generator", "discriminator", "encoder")
    phase_optimizers = {"r": "encoder", "d": "discriminator", "g": "generator"}
    log_phase = "g"
    # One R, D and G step per iteration, each on its own batch and z: n_critic and g_reuse_z do not apply.
    config_use = ConfigUse("Dist-GAN", nets=("generator", "discriminator", "encoder"),
                           losses=("gancollapse.models.distgan_losses.DistGANObjective",),
                           loss_hint="choose loss=distgan (its R/D/G losses) or drop the override",
                           hooks=frozenset(REGULARIZER_HOOKS) - {"g_discriminator"}, d_features=False,
                           keys=frozenset({"accumulate_grad_batches", "compile", "channels_last"}))

    @property
    def r_steps(self) -> int:
        return self.steps.get("r", 0)

    def applied(self) -> dict[str, Any]:
        record = super().applied()
        record["n_critic"], record["g_reuse_z"] = 1, None  # one D step per iteration; each step draws its own z
        record["module"] = {"lambda_p": self.lambda_p, "lambda_r": self.lambda_r, "lambda_w": self.lambda_w,
                            "schedule_steps": self.schedule_steps, "r_updates_generator": self.r_updates_generator,
                            "gp_reduction": self.gp_reduction, "nudge": self.nudge_cfg,
                            "nudge_discriminator": self.nudge_discriminator}
        return record

    # ------------------------------------------------------------------ optimisation
    def optimizer_params(self, name: str) -> list[Tensor]:
        if name != "encoder":
            return super().optimizer_params(name)
        params = list(self.encoder.parameters())
        return params + list(self.generator.parameters()) if self.r_updates_generator else params

    def default_optimizer(self, name: str, params: list[Tensor]) -> torch.optim.Optimizer:
        # The reference uses one Adam recipe (lr 2e-4, betas (0.5, 0.9)) for all three steps.
        return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.9))

    def _nudged(self, opt: torch.optim.Optimizer) -> NudgedAdam:
        """A NudgedAdam over ``opt``'s parameters with its Adam hyperparameters and ``self.nudge_cfg``."""
        group = opt.param_groups[0]
        params = [p for g in opt.param_groups for p in g["params"]]
        return NudgedAdam(params, lr=group["lr"], betas=group["betas"], eps=group["eps"],
                          weight_decay=group.get("weight_decay", 0.0), **self.nudge_cfg)

    def configure_optimizers(self):
        base = super().configure_optimizers()
        if not self.nudge_cfg:
            return base
        opts, scheds = base if isinstance(base, tuple) else (base, None)
        opts[0] = self._nudged(opts[0])
        if self.nudge_discriminator:
            opts[1] = self._nudged(opts[1])
        if scheds is None:
            return opts
        return opts, [_build((self.optim_cfg or {})["scheduler"], o) for o in opts]

    def current_phase(self) -> Literal["r", "d", "g"]:
        """R, D, G in turn, derived from the counters so a resumed run continues where it stopped."""
        r, d, g = (self.micro.get(k, 0) for k in "rdg")
        if r == d == g:
            return "r"
        return "d" if r > d else "g"

    def phases(self) -> list[str]:
        """One phase per batch: each of R, D and G sees a fresh batch, as in the reference."""
        return [self.current_phase()]

    def score_weights(self) -> tuple[float, float]:
        if self.schedule_steps is None:
            raise ValueError("model.module.schedule_steps is null and the run has no max_g_steps: set one of them "
                             "(N of Dist-GAN's w_r/w_rec schedule)")
        return score_weights(self.d_steps, self.schedule_steps)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.schedule_steps is None and self.max_g_steps:
            self.schedule_steps = int(self.max_g_steps)

    # ------------------------------------------------------------------ phases
    def r_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        real, z = pb.real, pb.z
        with frozen(self.discriminator):
            z_enc = self.encoder(real)
            recon = self.generator(z_enc)
            fake = self.generator(z)
            _, f_real = features(self.discriminator, real)
            _, f_recon = features(self.discriminator, recon)
            _, f_fake = features(self.discriminator, fake)
            terms = self.objective.reconstruction_loss(f_real, f_recon, f_fake, z_enc, z, self.lambda_r, self.lambda_w)
        return {"loss": terms["r_loss"], **terms}

    def discriminator_loss(self, real: Tensor, z: Tensor, with_gp: bool = True) -> dict[str, Tensor]:
        """Dist-GAN D loss on one batch (used by the D step and by the collapse observatory)."""
        with torch.no_grad():
            fake = self.generator(z)
            recon = self.generator(self.encoder(real))
        logit_real = self.discriminator(real)
        logit_recon = self.discriminator(recon)
        logit_fake = self.discriminator(fake)
        w_real, w_recon = self.score_weights()
        terms = self.objective.discriminator_score_loss(logit_real, logit_recon, logit_fake, w_real, w_recon)
        if with_gp and self.lambda_p > 0:
            mixed = interpolate(real, fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(self.discriminator(mixed).sum(), mixed, create_graph=True)
            terms["gp"] = self.lambda_p * slope_penalty(grad, self.gp_reduction)
        step = Step("d", real, fake, z, logit_real, logit_fake, self.generator, self.discriminator, self.d_steps,
                    self.current_epoch)
        terms.update(self._regularize(step))
        extra = [v for k, v in terms.items() if k not in ("d_loss", "d_real_bce", "d_recon_bce", "d_fake_bce")]
        terms["d_total"] = terms["d_loss"] + sum(extra)
        terms["d_real"], terms["d_fake"] = logit_real.mean().detach(), logit_fake.mean().detach()
        terms["w_real"] = torch.tensor(w_real, device=logit_real.device)
        return terms

    def d_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        terms = self.discriminator_loss(pb.real, pb.z)
        return {"loss": terms["d_total"], **terms}

    def generator_loss(self, real: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Dist-GAN G loss on one batch; D's parameters get no gradient."""
        with frozen(self.discriminator):
            fake = self.generator(z)
            logit_real = self.discriminator(real).detach()
            logit_fake = self.discriminator(fake)
            step = Step("g", real, fake, z, logit_real, logit_fake, self.generator, self.discriminator,
                        self.g_steps, self.current_epoch)
            idx = self.select_fake(logit_fake, step)  # top-k: G's score term on the k best-scored fakes
            loss = self.objective.generator_score_loss(logit_real, logit_fake if idx is None else logit_fake[idx])
            terms = self._regularize(step)
        total = loss + sum(terms.values()) if terms else loss
        return {"g_loss": loss, **terms, "g_total": total}

    def g_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        terms = self.generator_loss(pb.real, pb.z)
        return {"loss": terms["g_total"], **terms}

    def hessian_losses(self, real: Tensor, z: Tensor) -> dict[str, tuple[Tensor, list[Tensor]]]:
        """The G and D training losses with the parameters they are minimised over (collapse observatory).

        D's loss leaves out the gradient penalty when D has BatchNorm: its Hessian-vector products would be
        third derivatives, which BatchNorm does not implement.
        """
        g = self.generator_loss(real, z)["g_total"]
        with frozen(self.generator, self.encoder):
            d = self.discriminator_loss(real, z, with_gp=not self.d_batch_coupled)["d_total"]
        return {"g": (g, [p for p in self.generator.parameters() if p.requires_grad]),
                "d": (d, [p for p in self.discriminator.parameters() if p.requires_grad])}

    # ------------------------------------------------------------------ bookkeeping
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Checkpoints written before the step skeleton kept the R count apart.
        state = checkpoint.get("gancollapse", {})
        if "r" not in self.steps:
            self.steps["r"] = int(state.get("r_steps", self.d_steps))
            self.micro["r"] = self.steps["r"]


__all__ = ["DistGANModule", "frozen", "features"]
