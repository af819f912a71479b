"""Benchmark: generator steps per second on the 2D toy (seed config: batch 500, RMSprop 1e-4, 4x256 MLPs).

Times the platform's Lightning path (GANModule + Trainer, as `python -m gancollapse.train` runs it, toy
evaluator off) side by side with a plain PyTorch loop of the same nets and the same work, on CPU and, when
available, on GPU. Both skip the same 5 warm-up steps and time the next ``--steps`` G steps; each reports
wall-clock steps/s and, on the CPU, steps per CPU-second of the process (less sensitive to other jobs on a
shared machine). The plain loop does what the platform computes: D's forward on cat(real, fake), G reusing
D's z, and D frozen during G's step (no D weight gradients). ``--plain-seed-style`` computes D's weight
gradients in G's step as the Mode_Collapse seed does (more work than the platform does). ``--compile [MODE]``
runs the platform's nets under ``torch.compile`` (default mode ``reduce-overhead``: CUDA graphs on a GPU);
``--no-plain`` times the platform path alone. Usage:

    python scripts/bench_toy.py [--steps 1500] [--repeats 3] [--device cpu|cuda|all] [--compile [MODE]]
        [--no-plain] [--plain-seed-style] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gancollapse.nets.mlp import MLP
from gancollapse.train import CONF_DIR, run

WARMUP = 5  # untimed G steps before the clock starts, in both loops


def plain_loop(steps: int, device: str, batch: int = 500, n: int = 10_000, z_dim: int = 32,
               seed_style: bool = False) -> dict[str, float]:
    """The same D/G steps written as a bare PyTorch loop; returns G steps per second (wall and CPU)."""
    torch.manual_seed(0)
    g = MLP(z_dim, 2, last_hidden_activation="tanh").to(device)
    d = MLP(2, 1).to(device)
    opt_g = torch.optim.RMSprop(g.parameters(), lr=1e-4)
    opt_d = torch.optim.RMSprop(d.parameters(), lr=1e-4)
    data = torch.randn(n, 2, device=device)

    def one_step(real: torch.Tensor) -> None:
        z = torch.randn(batch, z_dim, device=device)
        with torch.no_grad():
            fake = g(z)
        out = d(torch.cat([real, fake]))
        loss_d = F.softplus(-out[:batch]).mean() + F.softplus(out[batch:]).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(seed_style)  # the platform freezes D here: no D weight gradients in G's step
        loss_g = -F.softplus(d(g(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        d.requires_grad_(True)

    def batches():
        while True:
            perm = torch.randperm(n, device=device)
            for i in range(n // batch):
                yield data[perm[i * batch : (i + 1) * batch]]

    stream = batches()
    for _ in range(WARMUP):
        one_step(next(stream))
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        one_step(next(stream))
    _sync(device)
    return {"wall": steps / (time.perf_counter() - t0), "cpu": steps / (time.process_time() - c0)}


class StepClock(L.Callback):
    """Reads the clocks at the end of G step ``WARMUP`` and at the end of the last batch (Hydra instantiates
    it from the ``callbacks`` group, so the readings go to the class)."""

    readings: dict[int, tuple[float, float]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        StepClock.readings = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.g_steps >= WARMUP:
            StepClock.readings.setdefault(WARMUP, (time.perf_counter(), time.process_time()))
            StepClock.readings[pl_module.g_steps] = (time.perf_counter(), time.process_time())


def lightning_loop(steps: int, device: str, compile_mode: str | None = None) -> dict[str, float]:
    """GANModule under the Lightning Trainer with the default callbacks/loggers; returns G steps per second
    (wall and CPU) over the ``steps`` G steps after the warm-up."""
    overrides = [
        "loss=standard",
        f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        f"max_g_steps={steps + WARMUP}",
        "evaluator=none",
        "ckpt_every_n_steps=1000000",
        f"+callbacks.bench_clock._target_={__name__}.StepClock",
    ]
    if compile_mode:
        overrides.append(f"compile={compile_mode}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp))
    (w0, c0), (w1, c1) = StepClock.readings[WARMUP], StepClock.readings[steps + WARMUP]
    return {"wall": steps / (w1 - w0), "cpu": steps / (c1 - c0)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    p.add_argument("--compile", nargs="?", const="reduce-overhead", default=None, metavar="MODE",
                   help="torch.compile the platform's nets (default mode reduce-overhead)")
    p.add_argument("--no-plain", action="store_true", help="time the platform path only")
    p.add_argument("--plain-seed-style", action="store_true",
                   help="the plain loop computes D's weight gradients in G's step, as the seed does")
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "load_at_start": load, "rows": []}
    for dev in devices:
        # Interleave the two loops so drift in machine load hits both equally; report the best of N.
        plain, light = [], []
        for _ in range(args.repeats):
            if not args.no_plain:
                plain.append(plain_loop(args.steps, dev, seed_style=args.plain_seed_style))
            light.append(lightning_loop(args.steps, dev, args.compile))
        row = {"device": dev if dev == "cpu" else torch.cuda.get_device_name(), "steps": args.steps,
               "compile": args.compile or False, "plain": "seed-style" if args.plain_seed_style else "same work",
               "lightning_steps_s": max(r["wall"] for r in light)}
        clocks = ["wall", "cpu"] if dev == "cpu" else ["wall"]
        if dev == "cpu":
            row["lightning_steps_per_cpu_s"] = max(r["cpu"] for r in light)
        if plain:
            best_p, best_l = max(r["wall"] for r in plain), row["lightning_steps_s"]
            row.update({"plain_steps_s": best_p, "ratio": best_l / best_p,
                        # per-G-step time the platform adds over the bare loop (negative: it is faster)
                        "overhead_ms": 1000 / best_l - 1000 / best_p})
            if dev == "cpu":
                best_pc, best_lc = max(r["cpu"] for r in plain), row["lightning_steps_per_cpu_s"]
                row.update({"plain_steps_per_cpu_s": best_pc, "cpu_ratio": best_lc / best_pc,
                            "cpu_overhead_ms": 1000 / best_lc - 1000 / best_pc})
            # each repeat's own ratio (plain and platform ran back to back): their spread shows the noise
            row["ratios_per_repeat"] = {c: [round(lt[c] / pl[c], 4) for pl, lt in zip(plain, light, strict=True)]
                                        for c in clocks}
        results["rows"].append(row)
        print(json.dumps(row))
    results["load_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {results['load_at_start']:.2f} at the start, {results['load_at_end']:.2f} at the end")
    print("| device | clock | plain loop G steps/s | gancollapse (Lightning) G steps/s | ratio | added ms/step |")
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        for clock, key, suffix in (("wall", "steps_s", ""), ("CPU", "steps_per_cpu_s", "cpu_")):
            if f"lightning_{key}" not in r:
                continue
            if f"plain_{key}" in r:
                print(f"| {r['device']} | {clock} | {r[f'plain_{key}']:.1f} | {r[f'lightning_{key}']:.1f} "
                      f"| {r[f'{suffix}ratio']:.3f} | {r[f'{suffix}overhead_ms']:+.2f} |")
            else:
                print(f"| {r['device']} | {clock} | – | {r[f'lightning_{key}']:.1f} | – | – |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
