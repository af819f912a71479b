"""What the report's statistics can say from a few seeds: coverage of its bootstrap intervals and power of its test.

    python scripts/bootstrap_coverage.py [--reps 1000]

For normal data (the spread of a metric over seeds, in units of its standard deviation) and n values per row:

* coverage — how often the 95% bootstrap interval of the mean (:func:`gancollapse.aggregate.bootstrap_ci`,
  percentile and BCa, 9,999 resamples as in the report) contains the true mean; the Student t interval
  (mean ± t₀.₉₇₅,ₙ₋₁·s/√n) for comparison;
* Welch's test (:func:`gancollapse.aggregate.welch`, two rows of n values each): how often p < 0.05 when the
  true means differ by d standard deviations (d = 0: the false-positive rate).

Prints two markdown tables (docs/SCALING.md quotes them). Pure CPU, no torch.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats

from gancollapse.aggregate import bootstrap_ci, welch

NS = (3, 4, 5, 10, 20)
DS = (0.0, 1.0, 2.0, 3.0, 4.0)


def coverage(n: int, reps: int, rng: np.random.Generator) -> dict[str, float]:
    hits = {"percentile": 0, "BCa": 0, "t": 0}
    half = stats.t.ppf(0.975, n - 1) / math.sqrt(n)
    for i in range(reps):
        x = rng.normal(0.0, 1.0, n)
        for method in ("percentile", "BCa"):
            lo, hi = bootstrap_ci(x, method=method, seed=i)
            hits[method] += lo <= 0.0 <= hi
        hits["t"] += abs(x.mean()) <= half * x.std(ddof=1)
    return {k: v / reps for k, v in hits.items()}


def power(n: int, d: float, reps: int, rng: np.random.Generator) -> float:
    return float(np.mean([welch(rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)).p < 0.05 for _ in range(reps)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"Coverage of 95% intervals of the mean, normal data, {args.reps} samples per n\n")
    print("| n | percentile bootstrap | BCa bootstrap | Student t |\n|---|---|---|---|")
    for n in NS:
        c = coverage(n, args.reps, rng)
        print(f"| {n} | {c['percentile']:.1%} | {c['BCa']:.1%} | {c['t']:.1%} |", flush=True)
    print(f"\nWelch's test, two rows of n seeds each: share of p < 0.05 ({args.reps} pairs) when the means differ "
          "by d standard deviations\n")
    print("| n | " + " | ".join(f"d = {d:g}" for d in DS) + " |\n|---|" + "---|" * len(DS))
    for n in (3, 5, 10):
        print(f"| {n} | " + " | ".join(f"{power(n, d, args.reps, rng):.1%}" for d in DS) + " |", flush=True)


if __name__ == "__main__":
    main()
