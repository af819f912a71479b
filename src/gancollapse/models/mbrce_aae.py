"""MBRCE-AAE and its baseline ALAE as one :class:`~gancollapse.models.phased.PhasedModule`.

ALAE (Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020; ``podgorskiy/ALAE``
``train_alae.py`` / ``model.py``) trains a mapping net F, a style generator G, an encoder E and a latent
discriminator head D with three optimizer steps per batch. MBRCE-AAE (Sledge & Príncipe, "Estimating Rényi's
α-cross-entropies in a matrix-based way", arXiv 2109.11737; ``isledge/MBRCE-AAE`` README) keeps ALAE's
networks and schedule and replaces the per-sample discriminator by a matrix-based divergence between the codes
of real and generated batches. With w = F(z), U = E(x) and V = E(G(w)), one iteration is:

1. ``e`` (E, and D for ``estimator=logistic``): minimise −λ·D(U, V). With ``estimator=logistic`` this is
   exactly ALAE's D step, mean[softplus(D(E(G(w)))) + softplus(−D(E(x))) + γ/2·‖∇ₓD(E(x))‖²].
2. ``g`` (F, G): minimise λ·D(U.detach(), V) with style mixing; ALAE: mean softplus(−D(E(G(w)))).
3. ``ae`` (F, G and E): ‖E(G(w)) − w.detach()‖², no style mixing, stepping *both* Adams as ALAE's
   ``encoder_optimizer.step(); decoder_optimizer.step()`` (``train_alae.py``), so the autoencoding step shares
   their moment estimates instead of keeping a third Adam.

Progressive growing follows :class:`~gancollapse.aae.lod.LodSchedule` from (epoch, batches done in the epoch):
the real batch goes through :func:`~gancollapse.aae.lod.blend_real_images`; the lr of both Adams is the stage's;
their state is cleared at the first batch of every stage with lod > 0, never on resume
(:meth:`LodSchedule.lod_just_started`); the EMA of F and G moves after every iteration with
β = 0.5^(batch/half-life). The datamodule (:class:`~gancollapse.data.progressive.ProgressiveTFRecordDataModule`)
reads each epoch's lod from :meth:`MBRCEAAEModule.data_schedule`, which needs
``Trainer(reload_dataloaders_every_n_epochs=1)``.

Our readings where the paper and its README are silent (the MBRCE-AAE code was never published):

- The sign convention: E *maximises* the divergence between real and generated codes ("push away") and G
  minimises it ("pull back"); λ (``lambda_div``) weighs both. The divergence is the design's ``cs2`` by
  default, with one median-heuristic bandwidth per call, pooled over U and V and differentiated through
  (``bandwidth_grad``), so D depends on the codes' shape, not their scale (see :mod:`gancollapse.aae.renyi`).
- In the ``g`` step the real codes U are computed without gradient, so only V moves; in the ``e`` step the
  fakes are generated without gradient (as ALAE's D step), with style mixing in both (ALAE mixes in both).
- Each step draws a fresh z, as ALAE's ``model.py`` does (``generate(count=…)`` in every step).
- The R1 of a divergence estimator (``r1_gamma`` > 0) penalises the gradient of the batch quantity w.r.t. each
  real image, scaled to a per-sample size: γ/2 · mean_i ‖n·∂D/∂x_i‖², the analogue of ALAE's
  γ/2 · mean_i ‖∂d_i/∂x_i‖² for a head that scores each sample. The module's default is 0; the MBRCE and ALAE
  experiments both set ALAE's γ = 10, so that they differ in the latent term alone (``spectral`` refuses R1:
  its eigendecompositions have no double backward).
- The latent discriminator head D is unused (frozen, outside every optimizer) unless ``estimator=logistic``.
- Optimizers are ALAE's: Adam β = (0, 0.99), ε = 1e-8, lr per lod; the state reset at a lod change covers
  both Adams, as ALAE's ``LODDriver.set_epoch``.
- The EMA covers F and G only (the sampling nets); samples, reconstructions and evaluation decode with the
  EMA G (``eval_ema``) and encode with the live E. ALAE's sampling model also averages E.
- Under DDP every rank gathers the codes of all ranks with gradient (:func:`gather_codes`) and estimates D on
  the global batch of B samples, the batch a single process would see; per-shard estimates would be a
  different, noisier quantity (a kernel divergence is not a mean over samples). ALAE's per-sample losses
  need no gather: DDP's average of per-rank means is the global mean.
- Per-lod lists must name every lod (ALAE reuses the last entry silently); batch sizes are global and are
  divided by the DDP world size, which must divide them.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gancollapse.aae.alae import ALAE, alae_channels, set_learning_rate, synthesize
from gancollapse.aae.checkpoints import LodCheckpoint
from gancollapse.aae.ema import ema_beta
from gancollapse.aae.lod import LodSchedule, blend_real_images, lod_of
from gancollapse.aae.renyi import ESTIMATORS, KERNELS, renyi_divergence
from gancollapse.data import images_of
from gancollapse.instantiate import build_datamodule, instantiate_checked, prior_config
from gancollapse.models.contract import ConfigUse
from gancollapse.models.distgan import frozen
from gancollapse.models.phased import PhaseBatch, PhasedModule, _inner
from gancollapse.runio import RunError
from gancollapse.samplers.prior import PriorSampler

log = logging.getLogger("gancollapse")
# The EMA shadows are sampling networks kept in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


# ---------------------------------------------------------------------------- the losses (pure)
def alae_discriminator_loss(d_real: Tensor, d_fake: Tensor, real: Tensor, r1_gamma: float) -> tuple[Tensor, Tensor]:
    """ALAE's D step, ``losses.discriminator_logistic_simple_gp``: per sample softplus(d_fake) + softplus(−d_real)
    + γ/2·‖∂d_real/∂x‖² (R1, Mescheder et al., ICML 2018, Eq. 9), averaged. Returns (loss, mean R1 term)."""
    loss = F.softplus(d_fake) + F.softplus(-d_real)
    if r1_gamma <= 0:
        return loss.mean(), torch.zeros((), device=loss.device)
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    r1 = grad.pow(2).flatten(1).sum(dim=1) * (0.5 * r1_gamma)
    return (loss + r1).mean(), r1.mean().detach()


def alae_generator_loss(d_fake: Tensor) -> Tensor:
    """ALAE's G step, ``losses.generator_logistic_non_saturating``: mean softplus(−D(E(G(w))))."""
    return F.softplus(-d_fake).mean()


def divergence_r1(divergence: Tensor, real: Tensor, r1_gamma: float, world_size: int = 1) -> Tensor:
    """γ/2 · mean_i ‖n·∂D/∂x_i‖² for a batch quantity D of the n real images x (our R1 for a divergence).

    ``real`` is this process's share; with ``world_size`` W > 1, D is the divergence of the gathered codes
    (:func:`gather_codes`), n = W·len(real), and the mean runs over the local images (DDP averages the W
    means). Every rank holds the same D and the gather's backward sums the ranks' gradients, so autograd
    returns W·∂D/∂x_i: divided out here.
    """
    (grad,) = torch.autograd.grad(divergence, real, create_graph=True)
    n, grad = real.shape[0] * world_size, grad / world_size
    return (0.5 * r1_gamma) * (n * grad).pow(2).flatten(1).sum(dim=1).mean()


def code_scale(u: Tensor) -> dict[str, Tensor]:
    """Size of this process's real codes U (n, d), detached, for the training log: ``code_norm`` = mean ‖u_i‖,
    ``code_spread`` = RMS ‖u_i − ū‖, the scale a kernel bandwidth sees. ALAE's latent autoencoding step pulls
    the norm towards that of w = F(z) whatever the latent loss; a divergence that E can raise by rescaling
    the codes shows up in the spread."""
    u = u.detach().flatten(1)
    return {"code_norm": u.norm(dim=1).mean(), "code_spread": (u - u.mean(dim=0)).pow(2).sum(dim=1).mean().sqrt()}


def gather_codes(x: Tensor) -> Tensor:
    """Every process's rows of x, concatenated in rank order, with gradient (the whole batch's codes).

    ``torch.distributed.nn.functional.all_gather``: its backward sums, over ranks, each rank's gradient for
    this rank's rows. Each rank computes the same divergence of the gathered codes, so a rank's codes get W
    times the divergence's gradient and DDP's average of the W ranks' parameter gradients is exactly the
    gradient of the divergence of the global batch. Needs an initialised process group and the same number
    of rows on every rank (the progressive loader gives every rank full batches).
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("gather_codes needs an initialised torch.distributed process group (world size > 1)")
    return torch.cat(dist_nn.all_gather(x), dim=0)


def latent_autoencoding_loss(w_rec: Tensor, w: Tensor) -> Tensor:
    """ALAE's L_ae = mean ‖E(G(w)) − w‖² over batch and latent dims, with w a constant target."""
    return (w_rec - w.detach()).pow(2).mean()


# ---------------------------------------------------------------------------- ALAE's two-optimizer step
class _MergedState(Mapping):
    """Read-only view of several optimizers' ``state`` (a ``ChainMap`` would insert keys into a defaultdict)."""

    def __init__(self, states: list[Mapping]) -> None:
        self.states = states

    def __getitem__(self, key: Any) -> Any:
        for s in self.states:
            if key in s:
                return s[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        for s in self.states:
            yield from s

    def __len__(self) -> int:
        return sum(len(s) for s in self.states)


class JointOptimizer:
    """Several optimizers stepped as one: ALAE's autoencoding step zeroes and steps both of its Adams."""

    def __init__(self, optimizers: Sequence[Any]) -> None:
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in _inner(o).param_groups]

    @property
    def state(self) -> Mapping:
        return _MergedState([_inner(o).state for o in self.optimizers])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def _per_lod_list(value: Any, num_lods: int, key: str, cast: type) -> list:
    """A scalar for every lod, or a list naming at least every lod (ValueError naming ``key`` otherwise)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [cast(value)] * num_lods
    else:
        values = [cast(v) for v in value]
        if len(values) < num_lods:
            raise ValueError(f"model.module.{key} has {len(values)} entries but the run has {num_lods} lods "
                             f"(0..{num_lods - 1}, 4 px up to {2 ** (num_lods + 1)} px): give one entry per lod")
        values = values[:num_lods]
    if any(v <= 0 for v in values):
        raise ValueError(f"every entry of model.module.{key} must be > 0, got {values}")
    return values


class MBRCEAAEModule(PhasedModule):
    """MBRCE-AAE (``estimator`` = cs2 | jr2 | spectral) or ALAE (``estimator=logistic``), progressive.

    Args:
        image_size / image_channels: top resolution (a power of two ≥ 4) and channels; null in a config: read
            from the data's metadata by :meth:`from_config`.
        latent_dim: size of z and w (ALAE ``LATENT_SPACE_SIZE``).
        mapping_layers: depth of F (ALAE ``MAPPING_LAYERS``).
        channels: width per lod, 4 px first; null: ALAE's ``min(max_channels, start_channels·2^(max_lod−r))``.
        start_channels / max_channels: ALAE ``START_CHANNEL_COUNT`` / ``MAX_CHANNEL_COUNT`` (when channels is null).
        d_layers: depth of ALAE's latent discriminator head (``estimator=logistic`` only).
        estimator: ``cs2`` (default), ``jr2``, ``spectral`` (matrix-based, :func:`~gancollapse.aae.renyi.renyi_divergence`)
            or ``logistic`` (ALAE).
        alpha: Rényi order (2 for cs2/jr2; any > 0 except 1 for spectral).
        kernel: ``gaussian`` or ``laplacian``.
        sigma2: kernel bandwidth σ² (> 0); null: the median heuristic per batch.
        bandwidth_grad: differentiate through the median bandwidth, so D is invariant to one common rescaling of
            the codes (default); false: the median is a constant in the backward pass (the seed's behaviour,
            which lets E raise D by inflating its codes). Applied only with ``sigma2`` null and a matrix-based
            estimator; :attr:`bandwidth_grad` holds what the run does.
        spectral_eps: regulariser of the spectral estimator's matrix powers.
        lambda_div: λ, the weight of the divergence in the ``e`` and ``g`` steps (> 0).
        r1_gamma: R1 weight γ on real images in the ``e`` step (ALAE: 10; 0: off).
        style_mixing_prob: probability of style mixing in the ``e`` and ``g`` steps (ALAE: 0.9).
        epochs_per_lod / batch_sizes / learning_rates: per-lod lists (or one number for all lods); batch sizes
            are global (all DDP ranks together), as ALAE's ``LOD_2_BATCH_*``.
        transition: fraction of each stage with lod > 0 spent fading the new block in (ALAE: 0.5).
        ema_half_life: images over which the EMA of F and G forgets half of itself (ALAE: 10 000).
        adam_betas / adam_eps: the default Adams (when ``optim`` has no entry): ALAE's (0, 0.99), 1e-8.
        truncation_psi / truncation_cutoff: truncation for sample figures only (ALAE: 0.7, 8).
        eval_ema: sample, decode and evaluate with the EMA of F and G (ALAE's sampling model).
        optim: optional partial optimizers ``encoder`` (E, D) and ``generator`` (F, G); lr is set per lod.
        log_every_n_steps / skip_nonfinite / accumulate_grad_batches: the skeleton's (accumulation must be 1).
    """

    optimizer_names = ("encoder", "generator")
    phase_optimizers = {"e": "encoder", "g": "generator"}
    #: phases that step several optimizers at once (ALAE's autoencoding step)
    joint_phases: Mapping[str, tuple[str, ...]] = {"ae": ("e", "g")}
    log_phase = "g"
    #: R1 on real images is the encoder step's own term (``r1_gamma``); no other regularizer hook is called
    R1_TARGET = "gancollapse.regularizers.r1.R1"
    config_use = ConfigUse("MBRCE-AAE/ALAE", nets=(), losses=(),
                           loss_hint="its latent loss is model.module.estimator (cs2, jr2, spectral, logistic = "
                                     "ALAE): use loss=none (the mbrce_aae_* / alae_* experiments set it)",
                           hooks=frozenset(), mapped={R1_TARGET: "model.module.r1_gamma"}, keys=frozenset(),
                           samplers=False, d_features=False)
    optim_keys_refused = {"lr": "MBRCE-AAE/ALAE sets the learning rate per lod from model.module.learning_rates"}

    def __init__(self, image_size: int, image_channels: int = 3, latent_dim: int = 512, mapping_layers: int = 8,
                 channels: Sequence[int] | None = None, start_channels: int = 64, max_channels: int = 512,
                 d_layers: int = 3, estimator: str = "cs2", alpha: float = 2.0, kernel: str = "gaussian",
                 sigma2: float | None = None, bandwidth_grad: bool = True, spectral_eps: float = 1e-6,
                 lambda_div: float = 1.0, r1_gamma: float = 0.0, style_mixing_prob: float = 0.9,
                 epochs_per_lod: int | Sequence[int] = 6, batch_sizes: int | Sequence[int] = 32,
                 learning_rates: float | Sequence[float] = 0.0015, transition: float = 0.5,
                 ema_half_life: float = 10_000.0, adam_betas: Sequence[float] = (0.0, 0.99),
                 adam_eps: float = 1e-8, truncation_psi: float | None = 0.7, truncation_cutoff: int = 8,
                 eval_ema: bool = True, optim: DictConfig | Mapping | None = None, log_every_n_steps: int = 50,
                 skip_nonfinite: bool = True, accumulate_grad_batches: int = 1,
                 prior: PriorSampler | None = None) -> None:
        super().__init__()
        if int(accumulate_grad_batches) != 1:
            raise ValueError("accumulate_grad_batches must be 1 for MBRCE-AAE/ALAE: the lod schedule counts one "
                             "batch per iteration; raise model.module.batch_sizes instead")
        self.init_skeleton(optim, log_every_n_steps, skip_nonfinite, accumulate_grad_batches)
        self.max_lod = lod_of(image_size, key="model.module.image_size")
        self.image_size, self.image_channels = int(image_size), int(image_channels)
        if self.image_channels < 1:
            raise ValueError(f"model.module.image_channels must be >= 1, got {image_channels}")
        num_lods = self.max_lod + 1
        if estimator not in ESTIMATORS:
            raise ValueError(f"model.module.estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if kernel not in KERNELS:
            raise ValueError(f"model.module.kernel must be one of {KERNELS}, got {kernel!r}")
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"model.module.alpha (the Rényi order) must be a finite number > 0, got {alpha}")
        if estimator in ("cs2", "jr2") and alpha != 2.0:
            raise ValueError(f"model.module.alpha={alpha} with estimator={estimator}: cs2 and jr2 are the α = 2 "
                             "forms; set alpha=2 or estimator=spectral")
        if estimator == "spectral" and alpha == 1.0:
            raise ValueError("model.module.alpha=1 with estimator=spectral: its (α−1)⁻¹ prefactor is undefined; "
                             "use e.g. alpha=0.99")
        if sigma2 is not None and (not math.isfinite(float(sigma2)) or float(sigma2) <= 0):
            raise ValueError(f"model.module.sigma2 (the kernel bandwidth σ²) must be > 0, or null for the median "
                             f"heuristic, got {sigma2}")
        if float(spectral_eps) <= 0:
            raise ValueError(f"model.module.spectral_eps must be > 0, got {spectral_eps}")
        if float(lambda_div) <= 0:
            raise ValueError(f"model.module.lambda_div (λ) must be > 0, got {lambda_div}")
        if float(r1_gamma) < 0:
            raise ValueError(f"model.module.r1_gamma must be >= 0 (0: off), got {r1_gamma}")
        if estimator == "spectral" and float(r1_gamma) > 0:
            raise ValueError("model.module.r1_gamma > 0 needs a double backward, which estimator=spectral's "
                             "eigendecompositions do not have: set r1_gamma=0 or estimator=cs2")
        if not 0.0 <= float(style_mixing_prob) <= 1.0:
            raise ValueError(f"model.module.style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        if float(ema_half_life) <= 0:
            raise ValueError(f"model.module.ema_half_life (images) must be > 0, got {ema_half_life}")
        if int(latent_dim) < 1:
            raise ValueError(f"model.module.latent_dim must be >= 1, got {latent_dim}")
        if channels is None:
            channels = alae_channels(start_channels, max_channels, self.max_lod)
        channels = [int(c) for c in channels]
        if len(channels) != num_lods:
            raise ValueError(f"model.module.channels has {len(channels)} entries but image_size={image_size} has "
                             f"{num_lods} lods: give one width per lod (4 px first), or null for ALAE's rule")
        self.epochs_per_lod = _per_lod_list(epochs_per_lod, num_lods, "epochs_per_lod", int)
        self.batch_sizes = _per_lod_list(batch_sizes, num_lods, "batch_sizes", int)
        self.learning_rates = _per_lod_list(learning_rates, num_lods, "learning_rates", float)
        if not 0.0 <= float(transition) <= 1.0:
            raise ValueError(f"model.module.transition is a fraction of a stage, in [0, 1]; got {transition}")

        self.alae = ALAE(int(latent_dim), int(mapping_layers), channels, image_channels=self.image_channels,
                         d_layers=int(d_layers))
        self.ema = self.alae.make_ema()
        self.z_dim, self.latent_dim, self.channels = int(latent_dim), int(latent_dim), channels
        self.prior = prior or PriorSampler()
        self.estimator, self.alpha, self.kernel = estimator, alpha, kernel
        self.sigma2 = None if sigma2 is None else float(sigma2)
        # What the step does, for the run's record: there is a bandwidth to differentiate only when it is the
        # median of a matrix-based estimator's codes.
        self.bandwidth_grad = bool(bandwidth_grad) and self.sigma2 is None and estimator != "logistic"
        if self.sigma2 is not None and estimator != "logistic":
            log.warning("model.module.sigma2=%s fixes the kernel bandwidth: D is then not invariant to a common "
                        "rescaling of the codes, and E can raise it by inflating them (sigma2=null follows them)",
                        self.sigma2)
        self.spectral_eps, self.lambda_div, self.r1_gamma = float(spectral_eps), float(lambda_div), float(r1_gamma)
        self.style_mixing_prob, self.transition = float(style_mixing_prob), float(transition)
        self.ema_half_life = float(ema_half_life)
        self.adam_betas, self.adam_eps = tuple(float(b) for b in adam_betas), float(adam_eps)
        self.truncation_psi = None if truncation_psi is None else float(truncation_psi)
        self.truncation_cutoff, self.eval_ema = int(truncation_cutoff), bool(eval_ema)
        if estimator != "logistic":
            self.alae.discriminator.requires_grad_(False)  # no per-sample head: keep it out of every update
        # Schedule position: (epoch, batches done in it), the lod/blend of the last batch, and the world size.
        self.schedule: LodSchedule | None = None
        self.world_size = 1
        self.standalone_epoch = 0  # the epoch when no Trainer drives the module (benchmarks, unit tests)
        self.sched_epoch, self.sched_batches = -1, 0
        self.lod, self.blend = 0, 1.0

    # ------------------------------------------------------------------ construction from a run config
    @classmethod
    def from_config(cls, cfg: DictConfig) -> MBRCEAAEModule:
        """Build from a composed run config (``gancollapse.build.build_module`` calls this).

        ``model.module.image_size`` / ``image_channels`` left null are read from the dataset's metadata (writing
        the embedded digits set first when ``dataset.prepare`` asks for it); the config itself is not changed,
        so a rerun with the same command resumes.
        """
        node = cfg.model.module
        sizes: dict[str, int] = {}
        if node.get("image_size") is None or node.get("image_channels") is None:
            dm = build_datamodule(cfg)
            if not hasattr(dm, "max_lod"):
                raise ValueError(f"model.module.image_size is null and dataset={cfg.dataset.get('name')} has no "
                                 "progressive metadata: use dataset=progressive or set model.module.image_size and "
                                 "image_channels")
            if node.get("image_size") is None:
                sizes["image_size"] = int(dm.img_size)
            if node.get("image_channels") is None:
                sizes["image_channels"] = int(dm.channels)
        optim = {k: instantiate(v) for k, v in (cfg.get("optim") or {}).items() if v is not None}
        extra = {k: cfg[k] for k in ("log_every_n_steps", "skip_nonfinite", "accumulate_grad_batches") if k in cfg}
        r1 = cls.r1_regularizer(cfg)
        if r1 is not None:  # regularizer=r1 is this model's R1 term
            sizes["r1_gamma"] = float(r1.get("gamma", 10.0))
        return instantiate_checked(node, optim=optim, prior=instantiate_checked(prior_config(cfg)), **sizes, **extra,
                                   _recursive_=False)

    @classmethod
    def r1_regularizer(cls, cfg: DictConfig) -> DictConfig | None:
        """The ``regularizer`` entry that is R1, if any."""
        return next((node for node in (cfg.get("regularizer") or {}).values()
                     if node is not None and node.get("_target_") == cls.R1_TARGET), None)

    @classmethod
    def check_config_extra(cls, cfg: DictConfig) -> None:
        """``regularizer=r1`` becomes ``model.module.r1_gamma``: refuse what that cannot express."""
        super().check_config_extra(cfg)
        r1 = cls.r1_regularizer(cfg)
        if r1 is None:
            return
        if int(r1.get("every", 1)) != 1:
            raise RunError(f"regularizer.r1.every={r1.every}: MBRCE-AAE/ALAE applies R1 at every encoder step "
                           "(model.module.r1_gamma)", "drop the override (every=1)")
        own = float(OmegaConf.select(cfg, "model.module.r1_gamma", default=0.0) or 0.0)
        gamma = float(r1.get("gamma", 10.0))
        if own > 0 and own != gamma:
            raise RunError(f"regularizer.r1.gamma={gamma:g} and model.module.r1_gamma={own:g} both set R1's weight",
                           "keep one of them (regularizer=r1 sets model.module.r1_gamma)")

    def applied(self) -> dict[str, Any]:
        alae = self.estimator == "logistic"
        optimizers = self.applied_optimizers()
        for record in optimizers.values():  # the lr of the record is the last stage's; the schedule sets it per lod
            record["lr"] = list(self.learning_rates)
        loss = "alae[logistic]" if alae else f"mbrce[{self.estimator}, alpha={self.alpha:g}, {self.kernel}]"
        return {"model": "ALAE" if alae else "MBRCE-AAE", "loss": loss,
                "regularizers": {"r1": {"type": "R1", "gamma": self.r1_gamma}} if self.r1_gamma > 0 else {},
                "prior": self.prior.describe(), "optimizers": optimizers, "n_critic": 1,
                "module": {"lambda_div": self.lambda_div, "sigma2": self.sigma2, "style_mixing_prob":
                           self.style_mixing_prob, "epochs_per_lod": list(self.epochs_per_lod),
                           "batch_sizes": list(self.batch_sizes), "ema_half_life": self.ema_half_life}}

    # ------------------------------------------------------------------ schedule
    def configure_schedule(self, dataset_size: int, world_size: int = 1) -> LodSchedule:
        """The lod schedule for ``dataset_size`` training images (all ranks) and ``world_size`` processes."""
        world_size = int(world_size)
        bad = [b for b in self.batch_sizes if b % world_size]
        if bad:
            raise ValueError(f"model.module.batch_sizes {self.batch_sizes} are global batches split over {world_size} "
                             f"processes; {bad} are not multiples of {world_size}")
        self.world_size = world_size
        self.schedule = LodSchedule(self.max_lod, dataset_size, self.epochs_per_lod, self.batch_sizes,
                                    self.learning_rates, transition=self.transition)
        return self.schedule

    def data_schedule(self, epoch: int) -> tuple[int, int]:
        """(lod, per-process batch) of ``epoch``: the progressive datamodule's ``lod_schedule``."""
        lod = self._schedule().lod_at_epoch(epoch)
        return lod, self.batch_sizes[lod] // self.world_size

    def _schedule(self) -> LodSchedule:
        if self.schedule is None:
            raise RuntimeError("the lod schedule is not set: train through a Trainer with the progressive "
                               "datamodule, or call configure_schedule(dataset_size) first")
        return self.schedule

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "lod_schedule"):
            raise ValueError("MBRCE-AAE/ALAE trains progressively: use dataset=progressive "
                             "(gancollapse.data.progressive.ProgressiveTFRecordDataModule)")
        if (int(dm.img_size), int(dm.channels)) != (self.image_size, self.image_channels):
            raise ValueError(f"model.module.image_size/image_channels = {self.image_size}/{self.image_channels} but "
                             f"the data's top level is {dm.img_size} px with {dm.channels} channels: set them to "
                             "null to follow the data, or dataset.max_resolution to train a lower top level")
        self.configure_schedule(len(dm), self.trainer.world_size)
        dm.lod_schedule = self.data_schedule

    def configure_callbacks(self) -> list[L.Callback]:
        """``checkpoints/lod<k>.ckpt`` at the end of every stage, whatever the run's callbacks."""
        return [LodCheckpoint()]

    def on_fit_start(self) -> None:
        trainer = self.trainer
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError("MBRCE-AAE/ALAE changes resolution and batch between epochs: set "
                             "trainer.reload_dataloaders_every_n_epochs=1")
        top_start = self._schedule().total_epochs_to_top()
        if self.max_g_steps is None and trainer.max_epochs not in (None, -1) and trainer.max_epochs <= top_start:
            raise ValueError(f"trainer.max_epochs={trainer.max_epochs} ends before the top lod {self.max_lod}, which "
                             f"starts at epoch {top_start} (model.module.epochs_per_lod={self.epochs_per_lod}): set "
                             f"trainer.max_epochs >= {top_start + 1} (ALAE: sum of epochs_per_lod)")

    def _epoch(self) -> int:
        return self.current_epoch if self._trainer is not None else int(self.standalone_epoch)

    def _start_batch(self) -> None:
        """Advance the schedule to this batch: lod, blend, the stage's lr, and the optimizer reset at a stage start."""
        epoch = self._epoch()
        if epoch != self.sched_epoch:
            self.sched_epoch, self.sched_batches = epoch, 0
        schedule = self._schedule()
        state = schedule.at_step(epoch, self.sched_batches)
        opts = [_inner(super(MBRCEAAEModule, self)._optimizer(p)) for p in self.phase_optimizers]
        if schedule.lod_just_started(epoch, state.images_in_epoch):
            for opt in opts:
                opt.state.clear()  # ALAE LODDriver.set_epoch: fresh Adam moments for the grown networks
            log.info("lod %d (%d px) starts at epoch %d: optimizer state reset", state.lod, state.resolution, epoch)
        for opt in opts:
            set_learning_rate(opt, state.learning_rate)
        self.lod, self.blend = state.lod, state.blend
        self.sched_batches += 1

    # ------------------------------------------------------------------ optimizers
    def optimizer_params(self, name: str) -> list[Tensor]:
        if name == "encoder":
            params = list(self.alae.encoder.parameters())
            return params + list(self.alae.discriminator.parameters()) if self.estimator == "logistic" else params
        if name == "generator":
            return list(self.alae.generator.parameters()) + list(self.alae.mapping.parameters())
        raise ValueError(f"{type(self).__name__} has no parameters for optimizer {name!r}")

    def default_optimizer(self, name: str, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.learning_rates[0], betas=self.adam_betas, eps=self.adam_eps)

    def _optimizer(self, phase: str) -> Any:
        joint = self.joint_phases.get(phase)
        if joint is None:
            return super()._optimizer(phase)
        return JointOptimizer([super(MBRCEAAEModule, self)._optimizer(p) for p in joint])

    def after_update(self, phase: str) -> None:
        if phase == "ae":  # ALAE: model_s.lerp(model, β) once per iteration, after its three steps
            beta = ema_beta(self.batch_sizes[self.lod], self.ema_half_life)
            self.ema.update(self.alae.ema_modules(), beta)

    # ------------------------------------------------------------------ phases
    def phases(self) -> list[str]:
        return ["e", "g", "ae"]

    def phase_batch(self, batch: Any) -> PhaseBatch:
        self._start_batch()
        real = blend_real_images(images_of(batch), self.lod, self.blend)
        return PhaseBatch(real, self.sample_z(real.shape[0]))

    def divergence(self, u: Tensor, v: Tensor) -> Tensor:
        """D(U, V) in bits with the configured estimator (matrix-based; not ``logistic``), on the codes of the
        whole global batch: under DDP each rank gathers all ranks' U and V with gradient first."""
        if self.world_size > 1:
            u, v = gather_codes(u), gather_codes(v)
        return renyi_divergence(u, v, self.alpha, self.estimator, self.sigma2, kernel=self.kernel,
                                eps=self.spectral_eps, bandwidth_grad=self.bandwidth_grad)

    def _fake(self, z: Tensor, mix_prob: float) -> tuple[Tensor, Tensor]:
        images, w = self.alae.generate(z, self.lod, self.blend, mix_prob=mix_prob, return_w=True)
        return images, w

    def e_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        lod, blend = self.lod, self.blend
        real = pb.real.detach().requires_grad_(self.r1_gamma > 0)
        with torch.no_grad():
            fake, _ = self._fake(pb.z, self.style_mixing_prob)
        u = self.alae.encode(real, lod, blend)
        v = self.alae.encode(fake, lod, blend)
        if self.estimator == "logistic":
            d_real, d_fake = self.alae.discriminator(u), self.alae.discriminator(v)
            loss, r1 = alae_discriminator_loss(d_real, d_fake, real, self.r1_gamma)
            div = renyi_divergence(d_real.detach(), d_fake.detach(), estimator="logistic")
        else:
            div = self.divergence(u, v)
            r1 = (divergence_r1(div, real, self.r1_gamma, self.world_size) if self.r1_gamma > 0
                  else torch.zeros((), device=u.device))
            loss = -self.lambda_div * div + r1
        return {"loss": loss, "e_loss": loss, "divergence": div.detach(), "r1": r1.detach(), **code_scale(u)}

    def g_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        lod, blend = self.lod, self.blend
        z = self.sample_z(pb.real.shape[0])
        with frozen(self.alae.encoder, self.alae.discriminator):
            fake, _ = self._fake(z, self.style_mixing_prob)
            v = self.alae.encode(fake, lod, blend)
            if self.estimator == "logistic":
                loss = alae_generator_loss(self.alae.discriminator(v))
            else:
                with torch.no_grad():
                    u = self.alae.encode(pb.real, lod, blend)
                loss = self.lambda_div * self.divergence(u, v)
        return {"loss": loss, "g_loss": loss}

    def ae_loss(self, pb: PhaseBatch) -> dict[str, Tensor]:
        z = self.sample_z(pb.real.shape[0])
        fake, w = self._fake(z, 0.0)
        loss = latent_autoencoding_loss(self.alae.encode(fake, self.lod, self.blend), w)
        device = loss.device
        return {"loss": loss, "ae_loss": loss, "lod": torch.tensor(float(self.lod), device=device),
                "blend": torch.tensor(float(self.blend), device=device)}

    # ------------------------------------------------------------------ sampling, encoding, decoding
    def _sampling_nets(self, ema: bool | None) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self.eval_ema if ema is None else ema:
            return self.ema["mapping"], self.ema["generator"]
        return self.alae.mapping, self.alae.generator

    def _lod_blend(self, lod: int | None) -> tuple[int, float]:
        """The given lod at full blend, or the module's current (lod, blend)."""
        return (self.lod, self.blend) if lod is None or int(lod) == self.lod else (int(lod), 1.0)

    @torch.no_grad()
    def generate(self, n: int, z: Tensor | None = None, batch_size: int = 500, *, lod: int | None = None,
                 ema: bool | None = None, truncation_psi: float | None = None, noise: bool = True) -> Tensor:
        """G(F(z)) for n prior samples (or the given z) at ``lod`` (default: the current lod and blend)."""
        lod, blend = self._lod_blend(lod)
        mapping, generator = self._sampling_nets(ema)
        z = self.sample_z(n) if z is None else z.to(self.device)
        return torch.cat([synthesize(mapping, generator, c, lod, blend, 0.0, noise, truncation_psi,
                                     self.truncation_cutoff)[0] for c in z.split(batch_size)])

    @torch.no_grad()
    def encode(self, x: Tensor, lod: int | None = None, batch_size: int = 500) -> Tensor:
        """E(x) → w (N, latent_dim) with the live encoder; ``x`` at ``lod``'s resolution (or higher: box-filtered)."""
        lod, blend = self._lod_blend(lod)
        x = blend_real_images(x.to(self.device), lod, blend)
        return torch.cat([self.alae.encode(c, lod, blend) for c in x.split(batch_size)])

    @torch.no_grad()
    def decode(self, styles: Tensor, lod: int | None = None, ema: bool | None = None, noise: bool = True,
               batch_size: int = 500) -> Tensor:
        """G(styles): w (N, D) or per-layer styles (N, L, D), at ``lod``."""
        lod, blend = self._lod_blend(lod)
        _, generator = self._sampling_nets(ema)
        return torch.cat([generator(c, lod, blend, noise) for c in styles.to(self.device).split(batch_size)])

    @torch.no_grad()
    def reconstruct(self, x: Tensor, lod: int | None = None, ema: bool | None = None, noise: bool = True) -> Tensor:
        """G(E(x)) at ``lod``."""
        return self.decode(self.encode(x, lod), lod, ema, noise)

    @property
    def num_style_layers(self) -> int:
        return self.alae.num_style_layers

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["mbrce_aae"] = {"lod": self.lod, "blend": self.blend, "sched_epoch": self.sched_epoch,
                                   "sched_batches": self.sched_batches, "max_lod": self.max_lod,
                                   "estimator": self.estimator}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("mbrce_aae", {})
        self.lod, self.blend = int(state.get("lod", 0)), float(state.get("blend", 1.0))
        self.sched_epoch = int(state.get("sched_epoch", -1))
        self.sched_batches = int(state.get("sched_batches", 0))


__all__ = ["JointOptimizer", "MBRCEAAEModule", "alae_discriminator_loss", "alae_generator_loss", "code_scale",
           "divergence_r1", "gather_codes", "latent_autoencoding_loss"]
