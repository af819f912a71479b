"""Sample a trained run through a latent sampler and score the samples.

    python -m gancollapse.sample <run dir> [sampler=prior] [n=10000] [seed=0] [device=auto] [sampler.<key>=<value> ...]
    gancollapse-sample <run dir> sampler=wlgan n=10000      (the same, as a console script)

Loads the run with :func:`gancollapse.load`, fits the sampler's D calibrator on fresh held-out real samples
(``n_calibration`` of them, from the run's datamodule) and as many generated ones, samples ``n`` latent codes
(MCMC samplers print their estimated time first; the progress bar moves within chains), generates, evaluates with the run's evaluator (toy: modes / HQ fraction /
reverse KL; images: the run's ImageEvaluator metrics — FID, KID, PRDC, IS — on the sampled codes) and writes to
``<run dir>/samples_<sampler>[_<tag>]/``:

* ``samples.pt``  — ``{"x": samples (toy: float points; images: uint8 0–255), "z": latent codes, "sampler", "seed"}``,
* ``samples.png`` — a scatter over the real data (toy) or an image grid,
* ``summary.json`` — one flat dict (run identity, ``sampler``, ``sampler_overrides`` (``k=v,...`` of the
  sampler.<key> options), ``tag``, ``sample_seed``, ``n``, metrics, calibration
  Brier scores, sampler diagnostics, ``sampler/seconds`` and ``sampler/samples_per_s``),
* ``sampler.yaml`` — the resolved sampler config.

Keys: sampler (prior (default: plain draws from the training prior)|drs|mhgan|repgan|ddls|wlgan or a .yaml path), n, seed, device (auto|cpu|cuda[:i]),
which (best|last checkpoint), n_calibration, tag, out (output dir), progress, sampler.<key> (any key of the
sampler's config, e.g. sampler.batch_size=1000 sampler.chain_length=100).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gancollapse.api import RunHandle, load
from gancollapse.build import sampler_config
from gancollapse.data import held_out_real
from gancollapse.progress import format_duration
from gancollapse.runio import RunError, one_line_errors
from gancollapse.samplers.refined import RefinedSampler

DEFAULTS: dict[str, Any] = {"sampler": "prior", "n": 10_000, "seed": 0, "device": "auto", "which": "best",
                            "n_calibration": 5000, "tag": None, "out": None, "progress": True}


def parse_args(argv: list[str]) -> tuple[Path, DictConfig, DictConfig]:
    """``<run dir> key=value ...`` → (run dir, top-level options, sampler overrides)."""
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0)
    if not argv or "=" in argv[0]:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)  # usage error, like argparse
    top, sampler_pairs = [], []
    for a in argv[1:]:
        if "=" not in a:
            raise RunError(f"argument {a!r} is not key=value", "write options as key=value, e.g. sampler=wlgan n=10000")
        key, value = a.split("=", 1)
        if key.startswith("sampler."):
            sampler_pairs.append(f"{key[len('sampler.'):]}={value}")
        else:
            top.append(a)
    opts = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(top))
    unknown = set(opts.keys()) - set(DEFAULTS)
    if unknown:
        raise RunError(f"unknown option(s) {sorted(unknown)}",
                       f"valid: {', '.join(sorted(DEFAULTS))}, and sampler.<key>=<value>")
    for key, low in (("n", 1), ("n_calibration", 4), ("seed", None)):
        value = opts[key]
        if isinstance(value, bool) or not str(value).lstrip("-").isdigit():
            raise RunError(f"{key}={value}: not a whole number", f"give {key} an integer, e.g. {key}={DEFAULTS[key]}")
        if low is not None and int(value) < low:
            raise RunError(f"{key}={value}: {key} must be >= {low}", f"e.g. {key}={DEFAULTS[key]}")
    return Path(argv[0]), opts, OmegaConf.from_dotlist(sampler_pairs)


def evaluator_config(cfg: DictConfig) -> DictConfig | None:
    """The run's evaluator node: the ``evaluator`` group, or ``dataset.evaluator`` in runs saved before that
    group existed (image evaluators saved before ``evaluator.metrics``: with their metrics as that mapping); None
    when the run had none (``evaluator=none`` composes to an empty node)."""
    from gancollapse.metrics.image_callback import upgrade_saved_evaluator

    node = cfg.get("evaluator") or cfg.dataset.get("evaluator")
    return upgrade_saved_evaluator(node, cfg.dataset.get("name")) if node else None


def evaluate(handle: RunHandle, datamodule, x: torch.Tensor, z: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
    """The run's evaluator metrics on the samples (toy mode stats; image metrics when available)."""
    evaluator = evaluator_config(handle.cfg) or {}
    if hasattr(datamodule, "centers") and hasattr(datamodule, "std"):
        from gancollapse.metrics.toy import mode_stats

        return mode_stats(x.cpu(), datamodule.centers, datamodule.std, float(evaluator.get("threshold", 3.0)),
                          float(evaluator.get("min_fraction", 0.008)), int(evaluator.get("min_count", 1))).as_dict()
    try:
        from gancollapse.metrics import fid as fid_module  # noqa: F401
    except ImportError:
        print("image metrics skipped: gancollapse.metrics.fid is not available in this checkout")
        return {}
    return image_metrics(handle, datamodule, z)


def image_metrics(handle: RunHandle, datamodule, z: torch.Tensor) -> dict[str, float]:  # noqa: ANN001
    """The run's image evaluator (FID, KID, PRDC, IS when it has a classifier) on G(z) for the sampled z:
    its ``compute`` scores ``eval_z``, which we set to the sampler's latent codes."""
    evaluator_cfg = evaluator_config(handle.cfg)
    if evaluator_cfg is None:
        print("image metrics skipped: the run has no evaluator")
        return {}
    evaluator = instantiate(evaluator_cfg)
    if not hasattr(evaluator, "compute"):
        print(f"image metrics skipped: {type(evaluator).__name__} has no compute(pl_module)")
        return {}
    evaluator.datamodule = datamodule
    evaluator.eval_z = z.detach().cpu()
    evaluator.n_samples = len(z)
    return {k: float(v) for k, v in evaluator.compute(handle.module).items()}


def save_plot(x: torch.Tensor, datamodule, path: Path, title: str) -> None:  # noqa: ANN001
    if x.ndim == 2 and x.shape[1] == 2 and hasattr(datamodule, "centers"):
        from gancollapse.plots import scatter_frame

        real = datamodule.sample(2000, seed=1234)
        scatter_frame(real, x[:2000].cpu(), path, title, datamodule.centers)
    elif x.ndim == 4:
        from torchvision.utils import save_image

        save_image(x[:64].float().cpu(), path, nrow=8, normalize=True, value_range=(-1, 1))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def main(argv: list[str] | None = None) -> dict[str, Any]:
    run_dir, opts, sampler_over = parse_args(sys.argv[1:] if argv is None else argv)
    return sample_run(run_dir, opts, sampler_over)


def cli() -> None:
    """The ``gancollapse-sample`` console script (returns None: a console script exits with its return value)."""
    with one_line_errors():  # error: <what> — <fix>, no traceback (HYDRA_FULL_ERROR=1: with it)
        main()


def sample_run(run_dir: Path | str, opts: DictConfig | dict, sampler_over: DictConfig | dict | None = None) -> dict[str, Any]:
    """Programmatic entry point (tests, sweeps); returns the summary dict."""
    opts = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.create(dict(opts)))
    run_dir = Path(run_dir)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto" else str(opts.device)
    handle = load(run_dir, which=str(opts.which), map_location=device)
    if handle.checkpoint is None:  # the module would be an untrained, randomly initialised G
        raise RunError(f"{run_dir} has no checkpoint to sample (checkpoints/{'best.ckpt or ' if opts.which == 'best' else ''}"
                       "last.ckpt)", f"train it first: python -m gancollapse.train hydra.run.dir={run_dir}")
    name = str(opts.sampler)
    s_cfg = sampler_config(name, handle.cfg, sampler_over)
    sampler = instantiate(s_cfg)
    label = Path(name).stem
    out = Path(opts.out) if opts.out else run_dir / (f"samples_{label}" + (f"_{opts.tag}" if opts.tag else ""))
    out.mkdir(parents=True, exist_ok=True)
    datamodule = handle.datamodule()
    seed = int(opts.seed)
    fit_report: dict[str, float] = {}
    if hasattr(sampler, "fit"):
        real = held_out_real(datamodule, int(opts.n_calibration), seed=20_000 + seed)
        fit_report = sampler.fit(handle.generator, handle.discriminator, real, handle.z_dim, seed=seed)
    handle.module.eval()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if isinstance(sampler, RefinedSampler) and sampler.chain_steps > 1:
        eta = sampler.estimate_seconds(handle.generator, handle.discriminator, int(opts.n), handle.z_dim, device)
        print(f"{label}: {int(opts.n)} chains × {sampler.chain_steps} steps in batches of {sampler.batch_size}: "
              f"about {format_duration(eta)} on {device} (estimated)", flush=True)
    t0 = time.perf_counter()
    if isinstance(sampler, RefinedSampler):
        z = sampler.sample(handle.generator, handle.discriminator, int(opts.n), handle.z_dim, device, seed=seed,
                           progress=bool(opts.progress))
    else:
        z = sampler.sample(handle.generator, handle.discriminator, int(opts.n), handle.z_dim, device, seed=seed)
    x = handle.module.generate(int(opts.n), z=z)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    metrics = evaluate(handle, datamodule, x, z)
    from gancollapse.callbacks import applied_labels, describe_run

    summary: dict[str, Any] = {
        **describe_run(handle.cfg),
        **applied_labels(handle.module.applied()),
        "sampler": label,
        "sampler_overrides": ",".join(f"{k}={v}" for k, v in OmegaConf.to_container(OmegaConf.create(sampler_over or {})).items()),
        "tag": opts.tag,
        "sample_seed": seed,
        "n": int(opts.n),
        "status": "sampled",
        "run_dir": str(run_dir),
        "checkpoint": str(handle.checkpoint) if handle.checkpoint else None,
        "device": device,
        **metrics,
        **fit_report,
        **getattr(sampler, "stats", {}),
        "sampler/seconds": round(seconds, 3),
        "sampler/samples_per_s": round(int(opts.n) / max(seconds, 1e-9), 2),
    }
    summary = {k: _clean(v) for k, v in summary.items()}
    # Images are stored as uint8 (a 10k CIFAR sample is 30 MB instead of 120 MB); toy points as floats.
    stored = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) if x.ndim == 4 else x
    torch.save({"x": stored.cpu(), "z": z.cpu(), "sampler": label, "seed": seed}, out / "samples.pt")
    OmegaConf.save(s_cfg, out / "sampler.yaml")
    title = f"{label}: " + (f"{metrics['toy/modes']:.0f}/{metrics['toy/n_modes']:.0f} modes, HQ {100 * metrics['toy/hq_fraction']:.1f}%"
                            if "toy/modes" in metrics else f"n={opts.n}")
    save_plot(x, datamodule, out / "samples.png", title)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    shown = {**metrics, **{k: v for k, v in summary.items() if k.startswith(("sampler/", "calibration/brier"))}}
    print(f"samples: {out}")
    print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return summary


if __name__ == "__main__":
    cli()
