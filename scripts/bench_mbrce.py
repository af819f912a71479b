"""Benchmark the matrix-based Rényi terms of MBRCE-AAE against batch size (forward + backward, fp32).

Each case draws a "real" and a "generated" batch of latent codes, x and y of shape (B, d), both requiring
grad, and times one forward + backward of the term on them:

* ``cs2``      — ``renyi_divergence(x, y, estimator="cs2")``: the default MBRCE term, α = 2, B×B Gram
  matrices and log-sum-exps, no eigensolver;
* ``jr2``      — ``renyi_divergence(x, y, estimator="jr2")``: same matrices, no eigensolver;
* ``spectral`` — ``renyi_divergence(x, y, alpha, estimator="spectral")``: two fp64 ``eigh`` of B×B plus the
  Daleckii–Krein backward;
* ``entropy``  — ``renyi_entropy(normalized_gram(x), alpha)`` with α ≠ 2: one fp64 ``eigh`` of B×B.

The bandwidth is the median heuristic (as in training) unless ``--sigma2`` is given. Times are the median
over ``--reps`` after ``--warmup`` untimed calls; on CUDA every call is bracketed by synchronisations.

The share of a full training iteration is measured by the training benchmark: it calls
:func:`time_term` (or :func:`time_divergence`) with the same batch, code size and device as the step it
times, e.g. ``time_divergence("cs2", 64, 512, device="cuda")["median_ms"]``.

Usage:
    python scripts/bench_mbrce.py [--device cpu|cuda] [--batches 16,32,64,128,256] [--dim 512]
                                  [--alpha 0.5] [--reps 10] [--warmup 2] [--sigma2 S] [--threads N]
                                  [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import date

import torch

from gancollapse.aae.renyi import normalized_gram, renyi_divergence, renyi_entropy

CASES = ("cs2", "jr2", "spectral", "entropy")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_term(step: Callable[[], None], device: str | torch.device = "cpu", reps: int = 10,
              warmup: int = 2) -> dict:
    """Wall time of ``step()`` (which should run forward + backward): median and min over ``reps`` in ms."""
    dev = torch.device(device)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3, "reps": reps}


def time_divergence(case: str, batch: int, dim: int, *, alpha: float = 0.5, device: str = "cpu",
                    reps: int = 10, warmup: int = 2, sigma2: float | None = None, seed: int = 0) -> dict:
    """Time one MBRCE term (``case`` in :data:`CASES`) on two (batch, dim) fp32 code batches.

    ``alpha`` is used by ``spectral`` and ``entropy`` only (``cs2``/``jr2`` are α = 2 by definition).
    Returns the case, its settings and ``median_ms``/``min_ms`` of forward + backward.
    """
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=gen).to(device).requires_grad_(True)
    y = (torch.randn(batch, dim, generator=gen) + 0.3).to(device).requires_grad_(True)

    def step() -> None:
        x.grad = y.grad = None
        if case == "entropy":
            value = renyi_entropy(normalized_gram(x, sigma2=sigma2), alpha)
        elif case == "spectral":
            value = renyi_divergence(x, y, alpha, "spectral", sigma2=sigma2)
        else:
            value = renyi_divergence(x, y, 2.0, case, sigma2=sigma2)
        value.backward()

    used_alpha = alpha if case in ("spectral", "entropy") else 2.0
    row = {"case": case, "batch": batch, "dim": dim, "alpha": used_alpha, "device": str(device)}
    return row | time_term(step, device, reps, warmup)


def machine_line(device: str) -> str:
    """CPU model (/proc/cpuinfo), cores, threads, torch version, GPU if used, and today's date."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [f"CPU: {cpu}", f"{os.cpu_count()} cores", f"torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}"]
    if device.startswith("cuda"):
        parts.append(f"GPU: {torch.cuda.get_device_name(torch.device(device))}")
    parts.append(f"date {date.today().isoformat()}")
    return " · ".join(parts)


def markdown_table(rows: list[dict]) -> str:
    """Batch × case table of forward+backward ms as "median (min)", plus the spectral/cs2 ratio of medians."""
    batches = sorted({r["batch"] for r in rows})
    cases = [c for c in CASES if any(r["case"] == c for r in rows)]
    ms = {(r["case"], r["batch"]): r["median_ms"] for r in rows}
    lo = {(r["case"], r["batch"]): r["min_ms"] for r in rows}
    alpha = next((r["alpha"] for r in rows if r["case"] in ("spectral", "entropy")), None)
    names = {"cs2": "cs2 (α=2)", "jr2": "jr2 (α=2)", "spectral": f"spectral (α={alpha})",
             "entropy": f"entropy (α={alpha})"}
    ratio = "spectral" in cases and "cs2" in cases
    head = ["batch", *[f"{names[c]} ms" for c in cases]] + (["spectral / cs2"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for b in batches:
        cells = [str(b), *[f"{ms[(c, b)]:.2f} ({lo[(c, b)]:.2f})" if (c, b) in ms else "–" for c in cases]]
        if ratio:
            cells.append(f"{ms[('spectral', b)] / ms[('cs2', b)]:.1f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--batches", default="16,32,64,128,256", help="comma-separated batch sizes")
    parser.add_argument("--dim", type=int, default=512, help="latent code size d (ALAE CelebA-HQ: 512)")
    parser.add_argument("--alpha", type=float, default=0.5, help="α of the spectral and entropy cases")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sigma2", type=float, default=None, help="fixed σ² (default: median heuristic)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is steadier on a shared machine")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for case in args.cases.split(","):
            rows.append(time_divergence(case, batch, args.dim, alpha=args.alpha, device=args.device,
                                        reps=args.reps, warmup=args.warmup, sigma2=args.sigma2))
    print(f"MBRCE terms, forward + backward, fp32 codes (B, {args.dim}), ms: median (min) of {args.reps} — "
          f"{args.device}\n\n{machine_line(args.device)}\n")
    print(markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(args.device), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
