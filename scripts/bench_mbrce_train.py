"""Share of the matrix-based divergence in one MBRCE-AAE training iteration, at the digits default, on CPU.

    python scripts/bench_mbrce_train.py [--repeats 20] [--threads 1] [--estimator cs2] [--lod top]

Builds the module of ``experiment=mbrce_aae_digits`` (32 px, 1 channel; no data needed: random images at the
lod's resolution, batch from the schedule) and times, as medians over ``--repeats`` after warm-up:

- **iteration**: one full ``training_step`` — encoder, generator and latent-autoencoding steps with their
  optimizer updates (the non-finite guard included, as in training);
- **divergence alone**: forward + backward of ``renyi_divergence`` on code batches of the iteration's shape
  (B × latent), counted twice (the encoder and the generator step each evaluate it once);
- **A/B**: the iteration with the divergence replaced by a free stand-in (squared mean difference of the
  codes), alternating with the real one; iteration − A/B is a second estimate of the same cost, much noisier
  on a shared machine (the difference of two medians of ~1 s timings).

Prints a markdown table with the machine and the date. The design's goal: ``cs2`` ≤ 3 % of an iteration (its
Gram matrices are B × B; only ``spectral`` calls an eigensolver).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from gancollapse.aae.renyi import renyi_divergence
from gancollapse.build import build_module
from gancollapse.paths import CONF_DIR


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:  # noqa: ANN001
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a fair share of a shared CPU)")
    parser.add_argument("--estimator", default="cs2", help="cs2, jr2 or spectral")
    parser.add_argument("--lod", default="top", help="lod to time (default: the top lod, past its fade-in)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mbrce_aae_digits", "model.module.image_size=32",
                                          "model.module.image_channels=1", f"model.module.estimator={args.estimator}",
                                          "model.module.alpha=" + ("0.99" if args.estimator == "spectral" else "2.0")])
    module = build_module(cfg)
    module.configure_schedule(dataset_size=1597)
    module.use_optimizers(module.configure_optimizers())
    schedule = module.schedule
    lod = schedule.max_lod if args.lod == "top" else int(args.lod)
    # The last epoch of the lod's stage: past its fade-in, so the timing is the steady state.
    module.standalone_epoch = (schedule.stage_starts[lod + 1] - 1 if lod < schedule.max_lod
                               else schedule.stage_starts[lod] + schedule.epochs_per_lod[lod] - 1)
    batch = schedule.batch_sizes[lod]
    side = 2 ** (lod + 2)
    x = torch.rand(batch, module.image_channels, side, side) * 2 - 1

    def iteration() -> None:
        module.sched_batches = 1  # stay inside the stage: no optimizer reset, same lod and blend
        module.training_step((x, None))

    def free_divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.mean(0) - b.mean(0)).pow(2).sum()

    # Real and stand-in iterations alternate, so a load change on a shared machine hits both alike.
    real_times, free_times = [], []
    for i in range(args.repeats + 2):
        for times, swap in ((real_times, False), (free_times, True)):
            if swap:
                module.divergence = free_divergence
            t0 = time.perf_counter()
            iteration()
            if i >= 2:  # warm-up
                times.append(time.perf_counter() - t0)
            if swap:
                del module.divergence
    t_iter, t_free = statistics.median(real_times), statistics.median(free_times)
    u = torch.randn(batch, module.latent_dim, requires_grad=True)
    v = torch.randn(batch, module.latent_dim, requires_grad=True)

    def divergence() -> None:
        renyi_divergence(u, v, module.alpha, module.estimator, module.sigma2, kernel=module.kernel,
                         eps=module.spectral_eps, bandwidth_grad=module.bandwidth_grad).backward()

    t_div = 2 * median_seconds(divergence, args.repeats * 5)
    rows = [{"estimator": args.estimator, "lod": lod, "px": side, "batch": batch, "latent": module.latent_dim,
             "iteration_ms": 1e3 * t_iter, "divergence_ms": 1e3 * t_div, "share": t_div / t_iter,
             "ab_share": (t_iter - t_free) / t_iter}]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nMBRCE-AAE iteration cost — {datetime.date.today().isoformat()}, {cpu_name()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} thread(s), load average {load:.1f}\n")
    print("| estimator | lod (px) | batch × latent | iteration (ms) | divergence ×2 (ms) | share | A/B share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['estimator']} | {r['lod']} ({r['px']}) | {r['batch']} × {r['latent']} | {r['iteration_ms']:.1f} | "
              f"{r['divergence_ms']:.2f} | {100 * r['share']:.2f} % | {100 * r['ab_share']:.1f} % |")
    return rows


if __name__ == "__main__":
    main()
