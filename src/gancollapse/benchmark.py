"""The offline stacked-digit mode-collapse benchmarks: ``make benchmark [BENCH=<set>]`` / ``python -m gancollapse.benchmark``.

* :class:`StackedDigitsEvaluator` — the image evaluator plus PacGAN's mode count (Lin et al., NeurIPS 2018,
  following VEEGAN): each channel of a generated image is classified by the classifier of the dataset's digit
  source trained at the same size (built on first use and cached, :func:`gancollapse.classifier.ensure_classifier`),
  the triple is its mode, and the run reports ``modes`` (distinct triples of 1,000 hit) and ``kl_uniform``
  (KL(p̂ ‖ U₁₀₀₀)). Datasets: ``stacked_digits`` (embedded 8×8 digits) and ``stacked_mnist5k`` (real MNIST).
* :class:`BenchmarkSet` / :func:`load_set` — a named set of the sweep, ``conf/benchmark/<set>.yaml``: which
  configurations of ``conf/experiment/benchmark/``, seeds, samplers, and the Hydra overrides (e.g. the dataset)
  of every run. ``stacked_digits`` (the default) and ``stacked_mnist5k`` share the configuration files.
* :func:`train_commands` / :func:`sample_commands` / :func:`gancollapse.sweep.run_commands` — the sweep: every configuration ×
  seed as separate ``gancollapse.train`` processes (``jobs`` at a time, one torch thread each), then MH-GAN and
  DRS sampling (``gancollapse.sample``) on the baseline's checkpoints.
* :func:`plot_modes_kl` — the bar chart of modes and KL (mean over seeds, 95% bootstrap interval of the mean
  as error bars, ``*`` where Welch's test against the baseline ``ns`` holds after Holm's adjustment) from the
  report's ``leaderboard.csv`` (:mod:`gancollapse.report` does the seed aggregation and the statistics).

    python -m gancollapse.benchmark [--set stacked_digits] [--out DIR] [--jobs 2] [--seeds 0,1,2]
        [--configs ns,hinge] [--skip-train] [--skip-sample] [-- <hydra overrides for every training run>]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from gancollapse.classifier import ensure_classifier, load_classifier
from gancollapse.data.digits import DigitsDataModule
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.metrics.mode_count import mode_stats, stacked_modes
from gancollapse.paths import CONF_DIR
from gancollapse.plots import plt
from gancollapse.report import load_leaderboard, write_report
from gancollapse.sweep import exit_when_stopped, run_commands

N_MODES = 1000
BASELINE = "ns"
CLASSIFIER_EPOCHS = 20
DEFAULT_SET = "stacked_digits"
SET_KEYS = ("configs", "seeds", "samplers", "overrides", "out")


@dataclass(frozen=True)
class BenchmarkSet:
    """A named sweep, ``conf/benchmark/<name>.yaml``: configurations (``conf/experiment/benchmark/<c>.yaml``,
    in the chart's order), seeds, samplers on the baseline's checkpoints (prior: the same n images without
    refinement, the control the refined samplers are compared with), Hydra overrides of every training run,
    and the default sweep directory."""

    name: str
    configs: tuple[str, ...]
    seeds: tuple[int, ...]
    samplers: tuple[str, ...]
    overrides: tuple[str, ...]
    out: str


def set_names() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "benchmark").glob("*.yaml"))


def unknown_configs(configs: Sequence[str]) -> list[str]:
    """The names among ``configs`` without a ``conf/experiment/benchmark/<name>.yaml``."""
    return [c for c in configs if not (Path(CONF_DIR) / "experiment" / "benchmark" / f"{c}.yaml").is_file()]


def load_set(name: str) -> BenchmarkSet:
    """``conf/benchmark/<name>.yaml`` → :class:`BenchmarkSet`; an unknown set, a missing or unknown key, or a
    configuration without its file fails in one line naming it."""
    path = Path(CONF_DIR) / "benchmark" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"--set={name}: no conf/benchmark/{name}.yaml; choose from {set_names()}")
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(node, dict) or set(node) != set(SET_KEYS):
        keys = sorted(node) if isinstance(node, dict) else node
        raise ValueError(f"--set={name}: conf/benchmark/{name}.yaml has keys {keys}; it needs exactly {list(SET_KEYS)}")
    bad = unknown_configs(node["configs"])
    if bad:
        raise ValueError(f"--set={name}: configs {bad} have no conf/experiment/benchmark/<name>.yaml; fix "
                         f"conf/benchmark/{name}.yaml")
    return BenchmarkSet(name, tuple(node["configs"]), tuple(int(s) for s in node["seeds"]),
                        tuple(node["samplers"]), tuple(node["overrides"]), str(node["out"]))


# The default set's sweep (tests and callers that name no set).
_DEFAULT = load_set(DEFAULT_SET)
CONFIGS: tuple[str, ...] = _DEFAULT.configs
SEEDS: tuple[int, ...] = _DEFAULT.seeds
SAMPLERS: tuple[str, ...] = _DEFAULT.samplers


# ---------------------------------------------------------------------------- mode counting
def ensure_digits_classifier(img_size: int, cache: str | None = None, epochs: int = CLASSIFIER_EPOCHS,
                             seed: int = 0) -> Path:
    """Path of the digits classifier at ``img_size`` (``<cache>/classifiers/digits-<S>px-1ch.pt``), trained on
    the embedded digits and saved there when absent (:func:`gancollapse.classifier.ensure_classifier`) — what
    ``python -m gancollapse.classifier dataset=digits dataset.img_size=<S> epochs=20`` writes."""
    return ensure_classifier(DigitsDataModule(img_size=img_size, channels=1), cache, epochs, seed)


@torch.no_grad()
def count_modes(images: Tensor, classifier: nn.Module, batch_size: int = 1000) -> dict[str, float]:
    """``modes`` and ``kl_uniform`` of (N, 3, H, W) images in [-1, 1]: each channel classified as a digit, the
    triple 100·d₁ + 10·d₂ + d₃ is the mode (PacGAN's protocol, Lin et al. 2018, §5.1)."""
    stats = mode_stats(stacked_modes(images, classifier, batch_size), N_MODES)
    return {"modes": stats["modes"], "kl_uniform": stats["kl_uniform"]}


class StackedDigitsEvaluator(ImageEvaluator):
    """:class:`~gancollapse.metrics.image_callback.ImageEvaluator` for ``dataset=stacked_digits`` and
    ``dataset=stacked_mnist5k``: its metrics (FID etc.) and, from the digit classifier it provides, ``modes`` and
    ``kl_uniform`` over the ``n_samples`` evaluation images (``evaluator.metrics.modes``,
    :class:`gancollapse.metrics.mode_count.StackedModes`: the same numbers as :func:`count_modes`).

    ``classifier: auto`` uses (and builds on first use, ``classifier_epochs`` epochs: a few CPU seconds for the
    digits at 16 px, a few CPU minutes for MNIST-5k at 28 px) the classifier of the dataset's digit
    source (``datamodule.digit_source()``: the embedded digits, or MNIST-5k's training split) at its
    ``img_size``; a path uses that checkpoint.
    """

    def __init__(self, *args: Any, classifier: str | None = "auto", classifier_epochs: int = CLASSIFIER_EPOCHS,
                 **kwargs: Any) -> None:
        super().__init__(*args, classifier=classifier, **kwargs)
        if not classifier:
            raise ValueError("evaluator.classifier must be auto or a digits classifier path: Stacked Digits counts "
                             "modes with it")
        if "classifier" not in self.metrics.needs():
            raise ValueError("evaluator.metrics: no metric takes the digit classifier, so Stacked Digits would count no "
                             "modes; add modes: {_target_: gancollapse.metrics.mode_count.StackedModes}")
        self.classifier_epochs = int(classifier_epochs)

    def _classifier_file(self) -> Path | None:
        if self.classifier_path != "auto":
            return Path(self.classifier_path)
        return ensure_classifier(self.datamodule.digit_source(), self.cache_dir, self.classifier_epochs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.classifier_path == "auto" and not hasattr(self.datamodule, "digit_source"):
            raise ValueError(f"evaluator.classifier=auto: dataset={getattr(self.datamodule, 'name', '?')} has no "
                             "digit source to train a classifier on; use dataset=stacked_digits or stacked_mnist5k, "
                             "or set evaluator.classifier=<path of a digit classifier>")

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


def interval_errors(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Error-bar lengths below and above each row's mean of ``key``: to the ends of its bootstrap interval
    (``<key>/lo``, ``<key>/hi``, written by the report for rows with n ≥ 3); NaN (no bar) for a row without one."""
    below, above = [], []
    for r in rows:
        mean, lo, hi = _num(r.get(key)), _num(r.get(f"{key}/lo")), _num(r.get(f"{key}/hi"))
        ok = not any(math.isnan(x) for x in (mean, lo, hi))
        below.append(mean - lo if ok else math.nan)
        above.append(hi - mean if ok else math.nan)
    return below, above


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"


def plot_modes_kl(rows: Sequence[dict[str, Any]], path: Path | str, level: str = "95%") -> Path:
    """Two bar charts, modes (of 1,000) and KL to uniform, one bar per leaderboard row that has ``modes``
    (rows keep their order): the mean over seeds, error bars to the ends of its ``level`` bootstrap interval of
    the mean (:func:`interval_errors`; none where n < 3, and the tick says so), ``*`` over a bar whose
    difference from the baseline row (hatched) is significant in the report's test. Returns ``path``."""
    rows = [r for r in rows if not math.isnan(_num(r.get("modes")))]
    if not rows:
        raise ValueError("no leaderboard row has a 'modes' value: is this a stacked_digits / stacked_mnist5k "
                         "sweep?")
    labels = [lab + (" (baseline)" if _truthy(r.get("baseline")) else "")
              + ("" if r.get("modes/lo") not in (None, "") else f" (n={r.get('n', 1)}, no CI)")
              for lab, r in zip(bar_labels(rows), rows, strict=True)]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.6 * len(rows) + 4), 4.8))
    for ax, key, title in ((axes[0], "modes", "modes (of 1,000) ↑"), (axes[1], "kl_uniform", "KL(p̂ ‖ uniform) ↓")):
        means = [_num(r.get(key)) for r in rows]
        below, above = interval_errors(rows, key)
        bars = ax.bar(range(len(rows)), means, yerr=[below, above], capsize=3,
                      color="tab:blue" if key == "modes" else "tab:red",
                      hatch=["//" if _truthy(r.get("baseline")) else "" for r in rows])
        for bar, r, top in zip(bars, rows, above, strict=True):
            if _truthy(r.get(f"{key}/significant")):
                y = bar.get_height() + (0.0 if math.isnan(top) else top)
                ax.annotate("*", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom", fontsize=12)
        ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(N_MODES, color="k", lw=0.8, ls="--")
    fig.suptitle(f"mean over seeds; error bars: {level} bootstrap CI of the mean (n ≥ 3); "
                 "*: differs from the baseline (Welch, Holm-adjusted p < 0.05)", fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def read_leaderboard(csv_path: Path | str) -> list[dict[str, Any]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def report(out: Path, baseline: str | None = None, include: Sequence[Path] = ()) -> Path:
    """Leaderboard (seed-aggregated, :func:`gancollapse.report.write_report`; with a ``baseline`` row name,
    rows tested against it, Holm-adjusted; ``include``: earlier leaderboard.csv files whose rows join it) and
    ``modes_kl.png``."""
    md = write_report(out, baseline=baseline, include=tuple(include))
    return plot_modes_kl(read_leaderboard(md.with_suffix(".csv")), out / "modes_kl.png")


def baseline_name(configs: Sequence[str], seeds: Sequence[int], include: Sequence[Path] = ()) -> str | None:
    """The baseline row's name for the report: a run dir of this sitting's ``ns`` (unique even when no override
    tells the rows apart, ``--configs ns``), else the ``ns`` row of an included leaderboard, else none."""
    if BASELINE in configs and seeds:
        return f"{BASELINE}_s{seeds[0]}"
    label = f"experiment=benchmark/{BASELINE}"
    if any(label in str(r.get("config_id") or r.get("overrides") or "").split() and not r.get("sample_seed")
           for path in include for r in load_leaderboard(path)):
        return label
    return None


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


@exit_when_stopped
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gancollapse.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--set", default=DEFAULT_SET, help=f"conf/benchmark/<set>.yaml: {', '.join(set_names())}")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default: the set's out)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--seeds", type=_csv, default=None, help="default: the set's")
    parser.add_argument("--configs", type=_csv, default=None,
                        help="conf/experiment/benchmark/ names (default: the set's)")
    parser.add_argument("--samplers", type=_csv, default=None, help="default: the set's")
    parser.add_argument("--n-sample", type=int, default=2000, help="images per prior / MH-GAN / DRS sampling run")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--include", type=Path, action="append", default=[], metavar="LEADERBOARD_CSV",
                        help="an earlier sitting's leaderboard.csv whose configurations join the report and chart "
                             "(repeatable; a configuration run here again is taken from this sitting)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every training run (after --)")
    args = parser.parse_args(argv)
    bench = load_set(args.set)
    configs = bench.configs if args.configs is None else args.configs
    unknown = unknown_configs(configs)
    if unknown:
        raise ValueError(f"--configs {unknown}: no conf/experiment/benchmark/<name>.yaml; choose from {list(bench.configs)}")
    seeds = list(bench.seeds) if args.seeds is None else [int(s) for s in args.seeds]
    samplers = bench.samplers if args.samplers is None else args.samplers
    out = Path(bench.out) if args.out is None else args.out
    t0 = time.perf_counter()
    if not args.skip_train:
        run_commands(train_commands(out, configs, seeds, [*bench.overrides, *args.overrides]), args.jobs,
                     args.threads, out / "logs")
    if not args.skip_sample and BASELINE in configs and samplers:
        run_commands(sample_commands(out, seeds, samplers, args.n_sample), args.jobs, args.threads,
                     out / "logs" / "sample")
    # the baseline named by a run dir: unique even when no override tells the rows apart (``--configs ns``)
    chart = report(out, baseline_name(configs, seeds, args.include), args.include)
    print(f"benchmark {bench.name}: {time.perf_counter() - t0:.0f} s; {out / 'leaderboard.md'}, {chart}")


if __name__ == "__main__":
    main()
