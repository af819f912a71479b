"""Lightning callback: image-GAN evaluation (the metrics of ``evaluator.metrics``: FID, KID, PRDC, IS, I-Variance,
Stacked MNIST mode counts, ...) and sample grids.

On the :class:`~gancollapse.metrics.evaluator.Evaluator` schedule (every ``every_n_steps`` generator steps or
``every_n_epochs`` epochs, and at the end of training) it generates ``n_samples`` images from a fixed seeded
set of latents and feeds them batch by batch to its metrics (:mod:`gancollapse.metrics.metric_set`), with the
inputs of :data:`IMAGE_INPUTS`: the features are extracted once per batch and shared, and the real statistics are
cached on disk per dataset + resolution + feature extractor. The base class publishes the metrics (loggers,
``summary.json``, ``trainer.callback_metrics`` → the ``best.ckpt`` ModelCheckpoint, saved right after the
evaluation so the checkpoint holds exactly the evaluated weights); ``best/fid`` and ``best/fid_step`` (G steps)
track the best FID and survive resumes.

The feature extractor (Inception: 95 MB) is held by this callback, never registered on the LightningModule,
so it never enters a checkpoint.

``n_samples`` and ``n_real`` may be ``auto``: decided at the first evaluation from the module's device
(:func:`resolve_eval_sizes`; CUDA: 10,000 vs 50,000, else 2,000 vs 10,000) and announced in one log line. An
Inception FID of 50k samples takes tens of minutes per evaluation on a CPU: paper-comparable FID is a GPU
setting. Explicit numbers are always used as given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gancollapse.classifier import default_classifier_path, load_classifier
from gancollapse.data.images import to_float
from gancollapse.metrics.evaluator import Evaluator
from gancollapse.metrics.features import build_feature_extractor, real_stats
from gancollapse.metrics.metric_set import MetricSet, config_metrics

log = logging.getLogger("gancollapse")

#: ``auto`` (n_samples, n_real) per device type: a CUDA device keeps this evaluator's former defaults; a CPU
#: (or any other device) gets sizes that keep one Inception evaluation to minutes
AUTO_EVAL_SIZES = {"cuda": (10_000, 50_000), "cpu": (2_000, 10_000)}
#: what a paper-comparable FID (Heusel et al. 2017: 50k samples) needs: a GPU setting
PAPER_FID = "evaluator.n_samples=50000 evaluator.n_real=50000"

Size = int | Literal["auto"]

#: what an image metric's ``update`` may take, computed once per generated batch (only when some metric takes it)
IMAGE_INPUTS: dict[str, str] = {
    "images": "the generated batch, floats in [-1, 1] on the evaluation device",
    "features": "the batch's features from evaluator.feature's extractor, float32",
    "probs": "class probabilities: Inception's logits with torch-fidelity's weights, else evaluator.classifier's "
             "on images with its channels; set evaluator.classifier",
    "classifier": "evaluator.classifier's network; set evaluator.classifier",
    "real": "the cached real statistics (gancollapse.metrics.features.RealStats: sums and kept features)",
    "seed": "evaluator.seed",
}


def _is_auto(value: object) -> bool:
    return isinstance(value, str) and value.lower() == "auto"


def resolve_eval_sizes(n_samples: Size | str, n_real: Size | str, device: str | torch.device) -> tuple[int, int]:
    """(n_samples, n_real): ``auto`` → :data:`AUTO_EVAL_SIZES` for the device (``cuda``/``cuda:N``: the CUDA
    sizes, anything else the CPU's); numbers are returned as given."""
    auto = AUTO_EVAL_SIZES["cuda" if torch.device(device).type == "cuda" else "cpu"]
    return (auto[0] if _is_auto(n_samples) else int(n_samples), auto[1] if _is_auto(n_real) else int(n_real))


def eval_sizes_message(n_samples: int, n_real: int, device: str | torch.device, auto: tuple[str, ...]) -> str:
    """The one line announcing sizes chosen by ``auto`` (``auto``: the keys that were auto)."""
    kind = "CUDA" if torch.device(device).type == "cuda" else "CPU"
    return (f"evaluator: FID on {n_samples:,} samples vs {n_real:,} real images ({kind} default of "
            f"{'/'.join(auto)}=auto; paper-comparable FID is a GPU setting: {PAPER_FID})")


class ImageEvaluator(Evaluator):
    """Scores a generator on images.

    Args (besides the common ones of :class:`~gancollapse.metrics.evaluator.Evaluator`, whose ``monitor``
    defaults to ``fid`` here, and whose ``n_samples`` may be ``auto`` here):
        n_real: real images for the cached statistics (all of a smaller set); ``auto``: see
            :func:`resolve_eval_sizes` (both ``auto`` sizes are decided at the first evaluation).
        feature: ``inception`` (standard FID, offline weights), ``tiny`` (fixed random conv net, fast, for
            CPU/tests), or ``classifier`` (the platform classifier's penultimate layer).
        feature_dim: output dimension of the ``tiny`` extractor.
        classifier: path to a ``gancollapse.classifier`` checkpoint, or ``auto`` (the default path for the
            dataset, skipped with a warning when absent): the ``probs`` of IS and I-Variance and the
            ``classifier`` of Stacked MNIST mode counting. With ``feature: inception`` and torch-fidelity's own
            weights in the torch hub cache, ``probs`` come from Inception's logits instead (the standard IS).
        grid_size: images in the sample grid PNG (fixed noise), ``<run>/samples/step_XXXXXX.png`` (G steps),
            the last one copied to ``samples/final.png``; 0: none.
        batch_size: generation / feature batch size.
        cache_dir: where real statistics are cached (default ``$GANCOLLAPSE_CACHE`` or ~/.cache/gancollapse).
        metrics: name → metric taking some of :data:`IMAGE_INPUTS` (:mod:`gancollapse.metrics.metric_set`; null
            entries are off); default: those of ``conf/evaluator/image.yaml`` (FID, KID, PRDC, IS, I-Variance).
    """

    #: the inputs this evaluator gives its metrics
    inputs = IMAGE_INPUTS

    namespace = "eval"

    def __init__(self, every_n_steps: int | None = 1000, every_n_epochs: int | None = None, n_samples: Size = 10_000,
                 seed: int = 1234, monitor: str | None = "fid", monitor_mode: str = "min",
                 samplers: Mapping[str, Any] | Sequence[str] | None = None, n_calibration: int = 2000,
                 n_real: Size = 50_000,
                 feature: str = "inception", feature_dim: int = 64, classifier: str | None = None,
                 grid_size: int = 64, grid_nrow: int | None = None, batch_size: int = 500,
                 cache_dir: str | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        for key, val in {"n_samples": n_samples, "n_real": n_real}.items():
            if isinstance(val, str) and not _is_auto(val) and not val.strip().isdigit():
                raise ValueError(f"evaluator.{key} must be a number or auto, got {val!r}")
        # Until the first evaluation knows the module's device, ``auto`` stands for this machine's likely sizes
        # (the latents drawn at setup need a count); _settle_sizes then decides, redrawing them if they differ.
        likely = resolve_eval_sizes(n_samples, n_real, "cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(every_n_steps, every_n_epochs, likely[0], seed, monitor, monitor_mode, samplers, n_calibration)
        for key, val in {"n_samples": likely[0], "n_real": likely[1], "batch_size": batch_size}.items():
            if int(val) < 2:
                raise ValueError(f"evaluator.{key} must be >= 2, got {val}")
        self._auto_samples, self._auto_real = _is_auto(n_samples), _is_auto(n_real)
        if grid_size < 0:
            raise ValueError(f"evaluator.grid_size must be >= 0, got {grid_size}")
        self.n_real, self.feature, self.feature_dim = likely[1], feature, int(feature_dim)
        self.classifier_path = classifier
        self.grid_size, self.grid_nrow, self.batch_size = int(grid_size), grid_nrow, int(batch_size)
        self.cache_dir = cache_dir
        self.metrics = MetricSet(config_metrics("image") if metrics is None else metrics, self.inputs)
        self._extractor = None
        self._classifier = None
        self._real = None

    @property
    def n_samples(self) -> int:
        return self._n_samples

    @n_samples.setter
    def n_samples(self, value: int) -> None:
        # A count set after construction (python -m gancollapse.sample scores its own latents) is explicit.
        self._n_samples, self._auto_samples = int(value), False

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._draw_latents(pl_module)

    def _draw_latents(self, pl_module: L.LightningModule) -> None:
        """The fixed evaluation and grid latents (seeded; the grid's follow the evaluation's)."""
        gen = torch.Generator().manual_seed(self.seed)
        self.eval_z = pl_module.sample_z(self.n_samples, "cpu", gen)
        self.grid_z = pl_module.sample_z(max(self.grid_size, 1), "cpu", gen)

    def _settle_sizes(self, device: str | torch.device) -> None:
        """Decide the ``auto`` sizes from the device the module evaluates on (once) and announce them."""
        auto = tuple(k for k, a in (("n_samples", self._auto_samples), ("n_real", self._auto_real)) if a)
        if not auto:
            return
        n_samples, n_real = resolve_eval_sizes("auto" if self._auto_samples else self.n_samples,
                                               "auto" if self._auto_real else self.n_real, device)
        self._n_samples, self.n_real = n_samples, n_real
        self._auto_samples = self._auto_real = False
        log.info(eval_sizes_message(n_samples, n_real, device, auto))

    def _classifier_file(self) -> Path | None:
        if not self.classifier_path:
            return None
        if self.classifier_path != "auto":
            return Path(self.classifier_path)
        dm = self.datamodule
        identity = f"mnist-{dm.img_size}px-1ch" if getattr(dm, "name", "") == "stacked_mnist" else dm.describe()
        path = default_classifier_path(identity, self.cache_dir)
        if not path.is_file():
            fix = (f"python -m gancollapse.classifier dataset={'mnist' if dm.name == 'stacked_mnist' else dm.name} "
                   f"dataset.img_size={dm.img_size}")
            if self.feature == "classifier":
                raise FileNotFoundError(f"evaluator.feature=classifier needs a classifier at {path}: run `{fix}`")
            log.warning("no classifier at %s: IS/mode counts skipped (train one: %s)", path, fix)
            return None
        return path

    def _prepare(self, device: torch.device) -> None:
        """Build the extractor and the real statistics once (cached on disk across runs)."""
        self._settle_sizes(device)
        if self._extractor is None:
            cls_file = self._classifier_file()
            self._extractor = build_feature_extractor(self.feature, dim=self.feature_dim, seed=0,
                                                      classifier=str(cls_file) if cls_file else self.classifier_path,
                                                      cache=self.cache_dir)
            if cls_file is not None:
                self._classifier = load_classifier(cls_file)
        self._extractor.to(device)
        if self._classifier is not None:
            self._classifier.to(device)
        if self._real is None:
            dm = self.datamodule
            key = dm.cache_key(self.n_real, self.seed)
            keep = max(self.metrics.real_features(), 2)

            def real_batches():  # uint8 until the device: 4× less host memory than floats for 50k images
                images, _ = dm.sample_uint8(self.n_real, seed=self.seed)
                return (to_float(b.to(device)) for b in images.split(self.batch_size))

            self._real = real_stats(self._extractor, real_batches, key, self.cache_dir, keep=keep,
                                    batch_size=self.batch_size, device=device)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def compute(self, pl_module: L.LightningModule) -> dict[str, float]:
        """The metrics for the current generator (no logging, no files)."""
        device = pl_module.device
        self._settle_sizes(device)
        if len(self.eval_z) != self.n_samples:  # auto decided other sizes than setup's guess
            self._draw_latents(pl_module)
        self._prepare(device)  # first: building the extractor or the real statistics draws from the RNG too
        with self.seeded(device):  # G's noise from the seed, batch by batch as they are scored
            fakes = (pl_module.generate(z.shape[0], z=z.to(device), batch_size=self.batch_size)
                     for z in self.eval_z.split(self.batch_size))
            return self.score_images(fakes, device)

    @torch.no_grad()
    def score_images(self, fakes: Iterable[Tensor], device: torch.device | str) -> dict[str, float]:
        """The metrics of generated images given as batches of floats in [-1, 1] on ``device`` (the generator's,
        or another program's: ``python -m gancollapse.score``), against this dataset's cached real statistics:
        each batch's inputs (:data:`IMAGE_INPUTS`) computed once, only those some metric takes, and fed to all."""
        device = torch.device(device)
        self._prepare(device)
        self.metrics.start(device)
        needs = self.metrics.needs()
        inception_probs = getattr(self._extractor, "has_logits", False)
        shared = {"real": self._real, "seed": self.seed, "classifier": self._classifier}
        for fake in fakes:
            batch: dict[str, Any] = {"images": fake, **shared}
            if inception_probs and needs & {"features", "probs"}:
                # torch-fidelity's weights are in the hub cache: IS from the same forward as the features
                f, logits = self._extractor.features_and_logits(fake)
                batch["features"], batch["probs"] = f.float(), torch.softmax(logits.double(), dim=1)
            elif "features" in needs:
                batch["features"] = self._extractor(fake).float()
            if (not inception_probs and "probs" in needs and self._classifier is not None
                    and fake.shape[1] == self._classifier.config["channels"]):
                batch["probs"] = torch.softmax(self._classifier(fake).float(), dim=1)
            self.metrics.update(batch)
        return self.metrics.compute()

    def after_evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float],
                       step: int) -> None:
        if trainer.is_global_zero and self.grid_size > 0 and self.run_dir is not None:
            self.save_grid(pl_module, self.run_dir / "samples" / f"step_{step:06d}.png")

    def save_grid(self, pl_module: L.LightningModule, path: Path) -> None:
        imgs = pl_module.generate(self.grid_size, z=self.grid_z[: self.grid_size].to(pl_module.device)).float().cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        nrow = self.grid_nrow or max(1, int(round(self.grid_size ** 0.5)))
        save_image(imgs, path, nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.run_dir is not None:
            grids = sorted((self.run_dir / "samples").glob("step_*.png"))
            if grids:  # the report's thumbnail
                (self.run_dir / "samples" / "final.png").write_bytes(grids[-1].read_bytes())


def grid_tensor(images: Tensor, nrow: int) -> Tensor:
    """The (3, H, W) grid torchvision would save, in [0, 1] (for loggers that take images)."""
    return make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))


#: keys of image evaluator nodes saved before ``evaluator.metrics`` existed (older runs' config.yaml)
LEGACY_METRIC_KEYS = ("kid", "kid_subset_size", "kid_subsets", "prdc", "n_prdc", "is_splits", "fid_backend")
#: evaluator classes that moved, old ``_target_`` → new (the AAE evaluator left the aae package, below the models)
MOVED_TARGETS = {"gancollapse.aae.evaluate.AAEEvaluator": "gancollapse.metrics.aae.AAEEvaluator"}


def upgrade_saved_evaluator(node: Any, dataset: str | None = None) -> Any:
    """An image evaluator node saved before ``evaluator.metrics`` existed, its metric keys turned into the
    ``metrics`` mapping that computes what that run computed (Stacked MNIST / Stacked Digits: with mode counts),
    so ``python -m gancollapse.sample`` and ``gancollapse.evaluate_aae`` still score older runs; any other node
    is returned as it is. A ``_target_`` that moved since (:data:`MOVED_TARGETS`) is pointed at its new place."""
    if not isinstance(node, (DictConfig, Mapping)):
        return node
    moved = MOVED_TARGETS.get(str(node.get("_target_")))
    if moved is not None:
        node = OmegaConf.merge(node, {"_target_": moved}) if isinstance(node, DictConfig) else {**node, "_target_": moved}
    if "metrics" in node or not any(k in node for k in LEGACY_METRIC_KEYS):
        return node
    out = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    old = {k: out.pop(k) for k in LEGACY_METRIC_KEYS if k in out}
    pkg = "gancollapse.metrics"
    metrics: dict[str, Any] = {"fid": {"_target_": f"{pkg}.fid.FID", "backend": old.get("fid_backend", "eigh")}}
    if old.get("kid", True):
        metrics["kid"] = {"_target_": f"{pkg}.kid.KID", "subsets": old.get("kid_subsets", 100),
                          "subset_size": old.get("kid_subset_size", 1000)}
    if old.get("prdc", True):
        metrics["prdc"] = {"_target_": f"{pkg}.prdc.PRDC", "n": old.get("n_prdc", 5000)}
    splits = old.get("is_splits", 10)
    metrics["is"] = {"_target_": f"{pkg}.inception_score.InceptionScore", "splits": splits}
    metrics["i_variance"] = {"_target_": f"{pkg}.i_variance.IVariance", "splits": splits}
    if dataset == "stacked_mnist" or str(out.get("_target_", "")).endswith(".StackedDigitsEvaluator"):
        metrics["modes"] = {"_target_": f"{pkg}.mode_count.StackedModes"}
    out["metrics"] = metrics
    return OmegaConf.create(out)
