"""Why are spectral norm and MaEM-GAN far below the plain GAN on Stacked Digits? Budget, hyperparameters or defect.

    python scripts/diagnose_collapse.py [--out multirun/diagnosis] [--jobs 2] [--seeds 0,1,2] [--only curve_sn,...]

Two experiments on the Stacked Digits benchmark recipe (conf/experiment/benchmark/), each variant × seeds as
separate ``gancollapse.train`` processes (``gancollapse.sweep.run_commands``: ``jobs`` at a time, one torch
thread each; a rerun resumes finished runs):

* **budget curve** — ns, sn and maem at 4× the benchmark's 1,200 G steps, evaluated every 1,200 (modes and KL at
  1,200 / 2,400 / 3,600 / 4,800 G steps, in each run's metrics.csv);
* **ablations** at the benchmark's budget — MaEM: entropy weight σ = 0 and 10×, a 64-code buffer horizon, the
  deterministic D head, no spectral norm in its D; SN: D's learning rate 4×, five D steps per G step.

Then one report per experiment (``gancollapse.report --baseline``: mean ± std, 95% bootstrap intervals, Welch's
test against the unablated configuration) and ``curves.csv`` (modes at each evaluation, per run). docs/RESULTS.md
("Diagnosis: spectral norm and MaEM on Stacked Digits") states the verdict and how it was measured.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from gancollapse.report import write_report
from gancollapse.sweep import exit_when_stopped, run_commands

BUDGET = ["max_g_steps=4800", "evaluator.every_n_steps=1200"]
#: variant -> (experiment, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "curve_ns": ("ns", BUDGET),
    "curve_sn": ("sn", BUDGET),
    "curve_maem": ("maem", BUDGET),
    "maem": ("maem", []),
    "maem_sigma0": ("maem", ["regularizer.maem.sigma=0"]),
    "maem_sigma10x": ("maem", ["regularizer.maem.sigma=5e-3"]),
    "maem_buffer64": ("maem", ["regularizer.maem.buffer_size=64"]),
    "maem_deterministic_d": ("maem", ["model.discriminator.stochastic=false"]),
    "maem_no_sn": ("maem", ["model.discriminator.spectral_norm=false"]),
    "sn": ("sn", []),
    "sn_d_lr4x": ("sn", ["optim.discriminator.lr=8e-4"]),
    "sn_ncritic5": ("sn", ["n_critic=5"]),
    "ns": ("ns", []),
}
GROUPS = {"budget": [v for v in VARIANTS if v.startswith("curve_")],
          "maem": [v for v in VARIANTS if v.startswith("maem")],
          "sn": ["ns"] + [v for v in VARIANTS if v.startswith("sn")]}
BASELINES = {"maem": "maem_s0", "sn": "sn_s0", "budget": "curve_ns_s0"}


GROUP_OF = {v: g for g, members in GROUPS.items() for v in members}


def commands(out: Path, variants: list[str], seeds: list[int]) -> list[list[str]]:
    """One training command per (variant, seed); run dirs ``<out>/<group>/<variant>_s<seed>``."""
    return [[sys.executable, "-m", "gancollapse.train", f"experiment=benchmark/{VARIANTS[v][0]}", f"seed={s}",
             f"hydra.run.dir={out / GROUP_OF[v] / f'{v}_s{s}'}", *VARIANTS[v][1]] for v in variants for s in seeds]


def write_curves(out: Path) -> Path:
    """modes / kl_uniform at every evaluation of every run (the budget curve), one row per (run, G step)."""
    rows = []
    for metrics in sorted(out.glob("*/*/metrics.csv")):
        with open(metrics) as f:
            for r in csv.DictReader(f):
                if r.get("modes") not in (None, "") and r.get("eval/g_step") not in (None, ""):
                    rows.append({"run": metrics.parent.name, "g_step": int(float(r["eval/g_step"])),
                                 "modes": float(r["modes"]), "kl_uniform": float(r["kl_uniform"])})
    path = out / "curves.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "g_step", "modes", "kl_uniform"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@exit_when_stopped
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("multirun/diagnosis"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default=None, help="comma-separated variants (default: all)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.only.split(",") if args.only else list(VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: --only {unknown}: no such variant — choose from {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    run_commands(commands(args.out, variants, seeds), args.jobs, 1, args.out / "logs")
    for group in GROUPS:
        if (args.out / group).is_dir():
            write_report(args.out / group, baseline=BASELINES[group])
    print(f"diagnosis: {time.perf_counter() - t0:.0f} s; {write_curves(args.out)}; reports: "
          f"{', '.join(str(args.out / g / 'leaderboard.md') for g in GROUPS)}")


if __name__ == "__main__":
    main()
