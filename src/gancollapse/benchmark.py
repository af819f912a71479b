"""The offline Stacked Digits mode-collapse benchmark: ``make benchmark`` / ``python -m gancollapse.benchmark``.

* :class:`StackedDigitsEvaluator` — the image evaluator plus PacGAN's mode count (Lin et al., NeurIPS 2018,
  following VEEGAN): each channel of a generated image is classified by the digits classifier trained at the
  same size (built on first use and cached, :func:`ensure_digits_classifier`), the triple is its mode, and the
  run reports ``modes`` (distinct triples of 1,000 hit) and ``kl_uniform`` (KL(p̂ ‖ U₁₀₀₀)).
* :func:`train_commands` / :func:`sample_commands` / :func:`run_commands` — the sweep: every configuration of
  ``conf/experiment/benchmark/`` × seeds, as separate ``gancollapse.train`` processes (``jobs`` at a time, one
  torch thread each), then MH-GAN and DRS sampling (``gancollapse.sample``) on the baseline's checkpoints.
* :func:`plot_modes_kl` — the bar chart of modes and KL (mean ± std over seeds) from the report's
  ``leaderboard.csv`` (:mod:`gancollapse.report` does the seed aggregation).

    python -m gancollapse.benchmark --out multirun/benchmark [--jobs 2] [--seeds 0,1,2] [--configs ns,hinge]
        [--skip-train] [--skip-sample] [-- <hydra overrides for every training run>]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gancollapse.classifier import default_classifier_path, load_classifier, save_classifier, train_classifier
from gancollapse.data.images import DigitsDataModule
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.metrics.mode_count import mode_stats, stacked_modes
from gancollapse.paths import CONF_DIR
from gancollapse.plots import plt
from gancollapse.report import write_report

log = logging.getLogger("gancollapse")

N_MODES = 1000
# The sweep, in the chart's order: conf/experiment/benchmark/<name>.yaml.
CONFIGS: tuple[str, ...] = ("ns", "hinge", "wgan_gp", "lsgan", "maem", "topk", "sn", "r1", "pack2", "distgan")
BASELINE = "ns"
# prior: the same n images without refinement, the control the refined samplers are compared with.
SAMPLERS: tuple[str, ...] = ("prior", "mhgan", "drs")
SEEDS: tuple[int, ...] = (0, 1, 2)
CLASSIFIER_EPOCHS = 20


# ---------------------------------------------------------------------------- mode counting
def ensure_digits_classifier(img_size: int, cache: str | None = None, epochs: int = CLASSIFIER_EPOCHS,
                             seed: int = 0) -> Path:
    """Path of the digits classifier at ``img_size`` (``<cache>/classifiers/digits-<S>px-1ch.pt``), trained on
    the embedded digits and saved there when absent — what ``python -m gancollapse.classifier dataset=digits
    dataset.img_size=<S>`` writes, so either way builds the same file."""
    dm = DigitsDataModule(img_size=img_size, channels=1)
    path = default_classifier_path(dm.describe(), cache)
    if path.is_file():
        return path
    data = dm.load()
    t0 = time.perf_counter()
    with torch.enable_grad():  # first use is inside the evaluator's no_grad compute
        model, acc = train_classifier(data.images, data.labels, dm.num_classes, epochs=epochs, seed=seed)
    save_classifier(model, path, {"dataset": dm.describe(), "val_accuracy": acc, "epochs": epochs,
                                  "seconds": time.perf_counter() - t0})
    log.info("built the digits classifier at %d px (held-out accuracy %.3f): %s", img_size, acc, path)
    return path


@torch.no_grad()
def count_modes(images: Tensor, classifier: nn.Module, batch_size: int = 1000) -> dict[str, float]:
    """``modes`` and ``kl_uniform`` of (N, 3, H, W) images in [-1, 1]: each channel classified as a digit, the
    triple 100·d₁ + 10·d₂ + d₃ is the mode (PacGAN's protocol, Lin et al. 2018, §5.1)."""
    stats = mode_stats(stacked_modes(images, classifier, batch_size), N_MODES)
    return {"modes": stats["modes"], "kl_uniform": stats["kl_uniform"]}


class StackedDigitsEvaluator(ImageEvaluator):
    """:class:`~gancollapse.metrics.image_callback.ImageEvaluator` for ``dataset=stacked_digits``: its metrics
    (FID etc.) plus ``modes`` and ``kl_uniform`` over the ``n_samples`` evaluation images.

    ``classifier: auto`` uses (and builds on first use, ``classifier_epochs`` epochs, a few CPU seconds at
    16 px) the digits classifier at the dataset's ``img_size``; a path uses that checkpoint.
    """

    def __init__(self, *args: Any, classifier: str | None = "auto", classifier_epochs: int = CLASSIFIER_EPOCHS,
                 **kwargs: Any) -> None:
        super().__init__(*args, classifier=classifier, **kwargs)
        if not classifier:
            raise ValueError("evaluator.classifier must be auto or a digits classifier path: Stacked Digits counts "
                             "modes with it")
        self.classifier_epochs = int(classifier_epochs)

    def _classifier_file(self) -> Path | None:
        if self.classifier_path != "auto":
            return Path(self.classifier_path)
        return ensure_digits_classifier(self.datamodule.img_size, self.cache_dir, self.classifier_epochs)

    @torch.no_grad()
    def score_images(self, fakes: Iterable[Tensor], device: torch.device | str) -> dict[str, float]:
        """The image metrics, plus modes and KL of the same images (the generator's in training, another
        program's under ``python -m gancollapse.score --dataset stacked_digits``)."""
        kept: list[Tensor] = []

        def keep(batches: Iterable[Tensor]) -> Iterator[Tensor]:
            for batch in batches:
                kept.append(batch.cpu())
                yield batch

        metrics = super().score_images(keep(fakes), device)  # loads self._classifier; no modes for this name
        metrics.update(count_modes(torch.cat(kept), self._classifier, self.batch_size))
        return metrics


def load_digits_classifier(img_size: int, cache: str | None = None) -> nn.Module:
    """The digits classifier at ``img_size`` (built on first use)."""
    return load_classifier(ensure_digits_classifier(img_size, cache))


# ---------------------------------------------------------------------------- the sweep
def train_commands(out: Path, configs: Sequence[str] = CONFIGS, seeds: Sequence[int] = SEEDS,
                   overrides: Sequence[str] = (), python: str = sys.executable) -> list[list[str]]:
    """One ``gancollapse.train`` command per (configuration, seed), run dir ``<out>/<config>_s<seed>``."""
    return [[python, "-m", "gancollapse.train", f"experiment=benchmark/{c}", f"seed={s}",
             f"hydra.run.dir={out / f'{c}_s{s}'}", *overrides] for c in configs for s in seeds]


def sample_commands(out: Path, seeds: Sequence[int] = SEEDS, samplers: Sequence[str] = SAMPLERS,
                    n: int = 2000, python: str = sys.executable, baseline: str = BASELINE,
                    extra: Sequence[str] = ("sampler.chain_length=100",)) -> list[list[str]]:
    """Prior / MH-GAN / DRS sampling on each baseline run's last checkpoint (``<run>/samples_<sampler>/``).
    ``extra`` applies to every sampler that has the key; MH-GAN's chains are shortened to 100 proposals for the
    CPU (Turner et al.: 640)."""
    return [[python, "-m", "gancollapse.sample", str(out / f"{baseline}_s{s}"), f"sampler={name}", f"n={n}",
             "which=last", "device=cpu", "progress=false", f"seed={s}",
             *(e for e in extra if name == "mhgan" or not e.startswith("sampler.chain_length"))]
            for s in seeds for name in samplers]


def run_commands(commands: Sequence[Sequence[str]], jobs: int = 2, threads: int = 1, log_dir: Path | None = None) -> list[int]:
    """Run the commands ``jobs`` at a time (each with ``threads`` torch threads), output to
    ``<log_dir>/<i>.log``; returns the exit codes (a failed run does not stop the others: the report lists it)."""
    if int(jobs) < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[int, Sequence[str]]) -> int:
        i, cmd = item
        t0 = time.perf_counter()
        if log_dir is None:
            rc = subprocess.run(list(cmd), env=env, check=False).returncode
        else:
            with open(log_dir / f"{i:03d}.log", "w") as f:
                f.write(" ".join(cmd) + "\n")
                f.flush()
                rc = subprocess.run(list(cmd), env=env, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
        print(f"[{'ok' if rc == 0 else f'exit {rc}'}] {time.perf_counter() - t0:7.1f} s  {' '.join(cmd[2:5])}",
              flush=True)
        return rc

    with ThreadPoolExecutor(max_workers=int(jobs)) as pool:
        return list(pool.map(one, enumerate(commands)))


# ---------------------------------------------------------------------------- the chart
def _num(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x


def bar_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Chart labels of leaderboard rows: the configuration (overrides not shared by every row, without the
    ``experiment=benchmark/`` prefix), plus ``· <sampler> sampling`` for a sampler sub-run."""
    tokens = [str(r.get("overrides") or r.get("run") or "?").split() for r in rows]
    shared = set(tokens[0]).intersection(*map(set, tokens[1:])) if len(rows) > 1 else set()
    labels = []
    for r, toks in zip(rows, tokens, strict=True):
        label = " ".join(t for t in toks if t not in shared).replace("experiment=benchmark/", "") or "baseline"
        if r.get("sample_seed") not in (None, ""):
            label += f" · {r.get('sampler')} sampling"
        labels.append(label)
    return labels


def plot_modes_kl(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Two bar charts, modes (of 1,000) and KL to uniform, mean ± std over seeds, one bar per leaderboard row
    that has ``modes``; rows keep their order. Returns ``path``."""
    rows = [r for r in rows if not math.isnan(_num(r.get("modes")))]
    if not rows:
        raise ValueError("no leaderboard row has a 'modes' value: is this a dataset=stacked_digits sweep?")
    labels = bar_labels(rows)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.6 * len(rows) + 4), 4.5))
    for ax, key, title in ((axes[0], "modes", "modes (of 1,000) ↑"), (axes[1], "kl_uniform", "KL(p̂ ‖ uniform) ↓")):
        means = [_num(r.get(key)) for r in rows]
        stds = [0.0 if math.isnan(_num(r.get(f"{key}/std"))) else _num(r.get(f"{key}/std")) for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color="tab:blue" if key == "modes" else "tab:red")
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(N_MODES, color="k", lw=0.8, ls="--")
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def read_leaderboard(csv_path: Path | str) -> list[dict[str, Any]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def report(out: Path) -> Path:
    """Leaderboard (seed-aggregated, :func:`gancollapse.report.write_report`) and ``modes_kl.png``."""
    md = write_report(out)
    return plot_modes_kl(read_leaderboard(md.with_suffix(".csv")), out / "modes_kl.png")


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gancollapse.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("multirun/benchmark"), help="sweep directory")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seeds", type=_csv, default=[str(s) for s in SEEDS])
    parser.add_argument("--configs", type=_csv, default=list(CONFIGS), help="conf/experiment/benchmark/ names")
    parser.add_argument("--samplers", type=_csv, default=list(SAMPLERS))
    parser.add_argument("--n-sample", type=int, default=2000, help="images per prior / MH-GAN / DRS sampling run")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training run (after --)")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs if not (Path(CONF_DIR) / "experiment" / "benchmark" / f"{c}.yaml").is_file()]
    if unknown:
        raise ValueError(f"--configs {unknown}: no conf/experiment/benchmark/<name>.yaml; choose from {list(CONFIGS)}")
    seeds = [int(s) for s in args.seeds]
    t0 = time.perf_counter()
    if not args.skip_train:
        run_commands(train_commands(args.out, args.configs, seeds, args.overrides), args.jobs, args.threads,
                     args.out / "logs")
    if not args.skip_sample and BASELINE in args.configs and args.samplers:
        run_commands(sample_commands(args.out, seeds, args.samplers, args.n_sample), args.jobs, args.threads,
                     args.out / "logs" / "sample")
    chart = report(args.out)
    print(f"benchmark: {time.perf_counter() - t0:.0f} s; {args.out / 'leaderboard.md'}, {chart}")


if __name__ == "__main__":
    main()
