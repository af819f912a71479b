"""Collapse observatory: a callback that watches any run for the signatures of mode collapse.

Every ``every_n_steps`` generator steps (and at the end of training) it records

* the top-k Hessian eigenvalues of the G loss (w.r.t. G's parameters) and of the D loss (w.r.t. D's) on a
  fixed real batch and fixed z, by Lanczos on Hessian-vector products (:mod:`gancollapse.optim.lanczos`) —
  NuGAN's claim is that G's top eigenvalues grow when G collapses;
* the spread of generated samples — mean nearest-neighbour distance of ``n_spread`` samples — in sample
  space and in D's code space (D's features when it has them), with the same statistic on real data as a
  reference (``spread_ratio`` ≈ 1 for a diverse G, → 0 when samples coincide);
* on toy mixtures (a datamodule with ``centers``/``std``): modes captured, HQ fraction and reverse KL
  (:func:`gancollapse.metrics.toy.mode_stats`);
* on image data with a classifier (``classifier=<path>`` from ``python -m gancollapse.classifier``): the
  class histogram of generated images, the classes covered, and the Inception Score
  (:func:`gancollapse.metrics.inception_score.inception_score`, one split) computed with that classifier's
  p(y|x). Without a classifier this part is skipped with a logged reason.

Numbers go to the loggers (``observatory/*`` columns of metrics.csv) and to ``summary.json`` (via
``latest_eval``); ``<run>/plots/observatory.png`` is the dashboard, redrawn at the end of training.

Side effects are contained: the evaluation runs under a forked RNG (training randomness is unchanged) and
restores every buffer of the module (BatchNorm running statistics) afterwards. The G/D losses are the
module's own when it defines ``hessian_losses(real, z)`` (Dist-GAN); otherwise the objective's
``g_loss``/``d_loss`` (stateful regularizer terms are left out on purpose: they would mutate state).
Its own time is logged as ``observatory/overhead`` (seconds spent / training seconds excluding them).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.utils import make_grid

from gancollapse.classifier import default_classifier_path, load_classifier, predict_proba
from gancollapse.data import images_of
from gancollapse.metrics.inception_score import inception_score
from gancollapse.metrics.toy import mode_histogram, mode_stats
from gancollapse.models.contract import Adversarial, Generative, HessianProbe
from gancollapse.nets.stochastic import deterministic
from gancollapse.optim.lanczos import hessian_eigenpairs
from gancollapse.plots import plt

log = logging.getLogger("gancollapse")


# ---------------------------------------------------------------------------- pure metrics
def mean_nn_distance(x: Tensor) -> float:
    """Mean Euclidean distance from each row of x (n, ...) to its nearest *other* row (O(n²) memory)."""
    flat = x.reshape(x.shape[0], -1).float()
    if flat.shape[0] < 2:
        return float("nan")
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(float("inf"))
    return float(d.min(dim=1).values.mean())


def class_coverage(probs: Tensor, min_fraction: float = 0.1) -> tuple[Tensor, int, float]:
    """(histogram of arg-max classes, classes holding ≥ ``min_fraction``·N/C samples, entropy in nats).

    A class counts as covered when it gets at least a tenth of its fair share by default — the classifier's
    view of "modes of 10 digits".
    """
    n, c = probs.shape
    hist = torch.bincount(probs.argmax(dim=1), minlength=c)
    covered = int((hist >= min_fraction * n / c).sum())
    p = hist.double() / max(n, 1)
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return hist, covered, entropy


def objective_losses(module: nn.Module, real: Tensor, z: Tensor) -> dict[str, tuple[Tensor, list[Tensor]]]:
    """G and D losses of a plain :class:`~gancollapse.models.gan.GANModule` from its objective, each with the
    parameters it is minimised over."""
    g_params = [p for p in module.generator.parameters() if p.requires_grad]
    d_params = [p for p in module.discriminator.parameters() if p.requires_grad]
    fake = module.generator(z)
    g_loss = module.objective.g_loss(module.discriminator(fake))
    d_loss = module.objective.d_loss(module.discriminator(real), module.discriminator(fake.detach()))
    return {"g": (g_loss, g_params), "d": (d_loss, d_params)}


def _d_codes(discriminator: nn.Module, x: Tensor) -> Tensor:
    """D's feature vector when its forward accepts ``return_features`` (Dist-GAN nets), else its output."""
    try:
        accepts = "return_features" in inspect.signature(discriminator.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    if accepts:
        return discriminator(x, return_features=True)[1]
    return discriminator(x)


def _fit_images(x: Tensor, size: int, channels: int) -> Tensor:
    """Bring generated images to the classifier's input: zero-pad (background −1) 28→32, else resize."""
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1) if channels != 1 else x.mean(dim=1, keepdim=True)
    s = x.shape[-1]
    if s == size:
        return x
    if s < size and (size - s) % 2 == 0:
        p = (size - s) // 2
        return F.pad(x, (p, p, p, p), value=-1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


# ---------------------------------------------------------------------------- the callback
class CollapseObservatory(L.Callback):
    """Collapse diagnostics every ``every_n_steps`` G steps; dashboard at ``<run>/plots/observatory.png``.

    Args:
        every_n_steps: G steps between evaluations (also one at the end of training).
        k / iterations: Lanczos eigenpairs and Krylov dimension per net (NuGAN's k=5, 20).
        nets: which Hessians: any of ``g``, ``d`` (empty: no spectrum).
        hessian_batch: real samples / z draws in the fixed batch the Hessians are taken on.
        n_spread: samples for the nearest-neighbour spread (O(n²) distances).
        classifier: path of a ``gancollapse.classifier`` checkpoint for class histogram + IS (image data), or
            ``auto``: the checkpoint ``python -m gancollapse.classifier`` writes for this dataset, if any.
        n_classify: generated images classified per evaluation.
        toy_samples: samples scored for toy mode coverage.
        plot: draw the PNG dashboard.
        seed: seed of the fixed z / real selection and of the forked RNG.
    """

    #: what the model must offer (gancollapse.models.contract): samples, and D's codes and losses
    requires = (Generative, Adversarial)

    def __init__(self, every_n_steps: int = 1000, k: int = 5, iterations: int = 20, nets: tuple[str, ...] | list[str] = ("g", "d"),
                 hessian_batch: int = 64, n_spread: int = 512, classifier: str | None = None, n_classify: int = 1000,
                 toy_samples: int = 2500, plot: bool = True, seed: int = 1234) -> None:
        super().__init__()
        if int(every_n_steps) < 1:
            raise ValueError(f"callbacks.observatory.every_n_steps must be >= 1, got {every_n_steps}")
        if int(k) < 1 or int(iterations) < int(k):
            raise ValueError(f"callbacks.observatory needs 1 <= k <= iterations, got k={k}, iterations={iterations}")
        bad = [n for n in nets if n not in ("g", "d")]
        if bad:
            raise ValueError(f"callbacks.observatory.nets may contain only 'g' and 'd', got {list(nets)}")
        for key, val in {"hessian_batch": hessian_batch, "n_spread": n_spread, "n_classify": n_classify}.items():
            if int(val) < 2:
                raise ValueError(f"callbacks.observatory.{key} must be >= 2, got {val}")
        self.every, self.k, self.iterations, self.nets = int(every_n_steps), int(k), int(iterations), tuple(nets)
        self.hessian_batch, self.n_spread, self.n_classify = int(hessian_batch), int(n_spread), int(n_classify)
        self.toy_samples, self.plot, self.seed = int(toy_samples), bool(plot), int(seed)
        self.classifier_path = classifier
        self.classifier: nn.Module | None = None
        self.history: list[dict[str, float]] = []
        self.last_hist: Tensor | None = None
        self.last_samples: Tensor | None = None
        self.seconds = 0.0
        self._last_eval = -1
        self._real: list[Tensor] = []
        self._real_n = 0
        self._real_spread: float | None = None
        self.run_dir: Path | None = None
        self.skipped: dict[str, str] = {}

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir = Path(trainer.default_root_dir)
        dm = trainer.datamodule
        self.toy = dm is not None and hasattr(dm, "centers") and hasattr(dm, "std")
        path = self._classifier_file(dm)
        if path is not None:
            self.classifier = load_classifier(path)
        elif not self.toy and "classes" not in self.skipped:
            self._skip("classes", "no classifier configured (callbacks.observatory.classifier=<path>; train one "
                                  "with `python -m gancollapse.classifier dataset=<name>`): class histogram and IS skipped")

    def _classifier_file(self, dm: Any) -> Path | None:
        """An explicit path, or for ``auto`` the platform's default path for this dataset when it exists."""
        if not self.classifier_path or self.toy:
            return None
        if self.classifier_path != "auto":
            return Path(self.classifier_path)
        if dm is None or not hasattr(dm, "describe"):
            self._skip("classes", "classifier=auto needs an image datamodule: class histogram and IS skipped")
            return None
        path = default_classifier_path(dm.describe())
        if not path.is_file():
            self._skip("classes", f"no classifier at {path}: class histogram and IS skipped (train one with "
                                  f"`python -m gancollapse.classifier dataset={getattr(dm, 'name', '<name>')}`)")
            return None
        return path

    def _skip(self, what: str, why: str) -> None:
        if what not in self.skipped:
            self.skipped[what] = why
            log.info("observatory: %s", why)

    def _collect_real(self, batch: Any) -> None:
        if self._real_n >= max(self.n_spread, self.hessian_batch):
            return
        real = images_of(batch).detach()
        if real.is_floating_point():
            self._real.append(real.cpu().clone())
            self._real_n += real.shape[0]

    def _real_pool(self) -> Tensor:
        return torch.cat(self._real)[: max(self.n_spread, self.hessian_batch)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        t0 = time.perf_counter()
        step = pl_module.g_steps
        self._last_eval = step
        device = pl_module.device
        saved = {name: b.detach().clone() for name, b in pl_module.named_buffers()}
        fork = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork), torch.enable_grad():
            torch.manual_seed(self.seed)
            metrics = self._measure(pl_module, device)
        with torch.no_grad():
            for name, b in pl_module.named_buffers():
                b.copy_(saved[name])
        metrics["observatory/g_step"] = float(step)
        self.seconds += time.perf_counter() - t0
        pl_module._accumulate_time()
        train_s = max(pl_module.train_seconds - self.seconds, 1e-9)
        metrics["observatory/seconds"] = self.seconds
        metrics["observatory/overhead"] = self.seconds / train_s
        pl_module.latest_eval.update(metrics)
        pl_module.log_metrics(metrics)
        for key, val in metrics.items():
            trainer.callback_metrics[key] = torch.tensor(val)
        self.history.append(metrics)
        return metrics

    def _measure(self, pl_module: L.LightningModule, device: torch.device) -> dict[str, float]:
        metrics: dict[str, float] = {}
        gen = torch.Generator().manual_seed(self.seed)
        have_real = self._real_n >= 2
        real = self._real_pool().to(device) if have_real else None
        # Spectrum of the training losses on a fixed batch.
        if self.nets and real is not None:
            batch = real[: self.hessian_batch]
            z = pl_module.sample_z(batch.shape[0], "cpu", gen).to(device)
            losses = pl_module.hessian_losses(batch, z) if isinstance(pl_module, HessianProbe) else objective_losses(pl_module, batch, z)
            for name in self.nets:
                loss, params = losses[name]
                pairs, grad = hessian_eigenpairs(loss, params, self.k, self.iterations, seed=self.seed)
                for i, v in enumerate(pairs.values.tolist()):
                    metrics[f"observatory/{name}_eig{i}"] = float(v)
                metrics[f"observatory/{name}_grad_norm"] = float(grad.norm())
            del losses
        # Spread of samples and of D codes, relative to real data.
        z = pl_module.sample_z(self.n_spread, "cpu", gen).to(device)
        fake = pl_module.generate(self.n_spread, z=z)
        self.last_samples = (fake[:64] if fake.dim() == 4 else fake[:1000]).detach().cpu()
        metrics["observatory/spread"] = mean_nn_distance(fake)
        # The code spread is a property of D's mean code; a stochastic head's draw would add its noise.
        with torch.no_grad(), deterministic(pl_module.discriminator):
            codes_fake = _d_codes(pl_module.discriminator, fake)
            metrics["observatory/d_code_spread"] = mean_nn_distance(codes_fake)
            if real is not None:
                real_s = real[: self.n_spread]
                if self._real_spread is None and real_s.shape[0] >= min(self.n_spread, 64):
                    self._real_spread = mean_nn_distance(real_s)
                if self._real_spread:
                    metrics["observatory/spread_ratio"] = metrics["observatory/spread"] / self._real_spread
                real_codes = _d_codes(pl_module.discriminator, real_s)
                real_code_spread = mean_nn_distance(real_codes)
                if real_code_spread > 0:
                    metrics["observatory/d_code_spread_ratio"] = metrics["observatory/d_code_spread"] / real_code_spread
        # Toy mixtures: mode coverage.
        if self.toy:
            dm = pl_module.trainer.datamodule
            pts = pl_module.generate(self.toy_samples, z=pl_module.sample_z(self.toy_samples, "cpu", gen)).cpu()
            metrics.update(mode_stats(pts, dm.centers, dm.std).as_dict("observatory/toy_"))
            self.last_hist, _ = mode_histogram(pts, dm.centers, dm.std)
        # Images with a classifier: class histogram and IS.
        elif self.classifier is not None and fake.dim() == 4:
            cfg = getattr(self.classifier, "config", {})
            zc = pl_module.sample_z(self.n_classify, "cpu", gen).to(device)
            imgs = _fit_images(pl_module.generate(self.n_classify, z=zc), cfg.get("img_size", fake.shape[-1]),
                               cfg.get("channels", fake.shape[1]))
            clf = self.classifier.to(device)
            probs = predict_proba(clf, imgs).cpu()
            hist, covered, entropy = class_coverage(probs)
            self.last_hist = hist
            metrics["observatory/classes_covered"] = float(covered)
            metrics["observatory/class_entropy"] = entropy
            metrics["observatory/is"] = inception_score(probs, splits=1)[0]  # one split: 1,000 samples a check
        return metrics

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._collect_real(batch)
        step = pl_module.g_steps
        if step > 0 and step % self.every == 0 and step != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps != self._last_eval and self._real_n > 0:
            self.evaluate(trainer, pl_module)
        if self.plot and trainer.is_global_zero and self.run_dir is not None and self.history:
            self.dashboard(self.run_dir / "plots" / "observatory.png")

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "seconds": self.seconds, "last_eval": self._last_eval}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.seconds = float(state_dict.get("seconds", 0.0))
        self._last_eval = int(state_dict.get("last_eval", -1))

    # ------------------------------------------------------------------ dashboard
    def dashboard(self, path: Path) -> Path:
        """Four panels: top eigenvalues of G and D, spread ratios, coverage, and the latest samples."""
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = [h["observatory/g_step"] for h in self.history]
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=90)
        ax = axes[0, 0]
        for name, color in (("g", "tab:red"), ("d", "tab:blue")):
            for i in range(self.k):
                key = f"observatory/{name}_eig{i}"
                ys = [h.get(key, float("nan")) for h in self.history]
                if any(not math.isnan(y) for y in ys):
                    ax.plot(steps, ys, color=color, alpha=1.0 - 0.15 * i, lw=1.5 if i == 0 else 0.8, marker=".",
                            label=f"{name.upper()} λ{i}" if i in (0, self.k - 1) else None)
        ax.set_yscale("symlog")
        ax.set_title("top Hessian eigenvalues (G loss / D loss)", fontsize=9)
        ax.set_xlabel("G step")
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        for key, label in (("observatory/spread_ratio", "samples NN-dist / real"),
                           ("observatory/d_code_spread_ratio", "D codes NN-dist / real")):
            ys = [h.get(key, float("nan")) for h in self.history]
            ax.plot(steps, ys, marker=".", label=label)
        ax.axhline(1.0, color="grey", lw=0.5, ls="--")
        ax.set_title("spread (1 = as diverse as real data)", fontsize=9)
        ax.set_xlabel("G step")
        ax.legend(fontsize=7)
        ax = axes[1, 0]
        if self.last_hist is not None:
            ax.bar(range(len(self.last_hist)), self.last_hist.tolist(), color="tab:green")
            cov_key = "observatory/toy_modes" if self.toy else "observatory/classes_covered"
            last = self.history[-1]
            ax.set_title(f"latest mode/class histogram ({last.get(cov_key, float('nan')):.0f} covered"
                         + (f", IS {last['observatory/is']:.2f}" if "observatory/is" in last else "") + ")", fontsize=9)
        else:
            ax.text(0.5, 0.5, self.skipped.get("classes", "no mode information"), ha="center", va="center",
                    wrap=True, fontsize=7, transform=ax.transAxes)
            ax.axis("off")
        ax = axes[1, 1]
        s = self.last_samples
        if s is not None and s.dim() == 4:
            grid = make_grid(s.float().clamp(-1, 1), nrow=8, normalize=True, value_range=(-1, 1))
            ax.imshow(grid.permute(1, 2, 0).numpy())
            ax.axis("off")
        elif s is not None and s.dim() == 2 and s.shape[1] >= 2:
            ax.scatter(s[:, 0], s[:, 1], s=4, c="tab:red")
            ax.set_aspect("equal")
        ax.set_title(f"samples at G step {steps[-1]:.0f}", fontsize=9)
        fig.suptitle(f"collapse observatory ({self.seconds:.1f}s, overhead "
                     f"{100 * self.history[-1].get('observatory/overhead', float('nan')):.1f}%)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


__all__ = ["CollapseObservatory", "mean_nn_distance", "class_coverage", "objective_losses"]
