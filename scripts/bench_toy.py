"""Benchmark: generator steps per second on the 2D toy (seed config: batch 500, RMSprop 1e-4, 4x256 MLPs).

Times the platform's Lightning path (GANModule + Trainer, as `python -m gancollapse.train` runs it, toy
evaluator off) side by side with a plain PyTorch loop of the same nets and the same math, on CPU and, when
available, on GPU. ``--compile [MODE]`` runs the platform's nets under ``torch.compile`` (default mode
``reduce-overhead``: CUDA graphs on a GPU); ``--no-plain`` times the platform path alone. Usage:

    python scripts/bench_toy.py [--steps 1500] [--repeats 3] [--device cpu|cuda|all] [--compile [MODE]]
        [--no-plain] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gancollapse.nets.mlp import MLP
from gancollapse.train import CONF_DIR, run


def plain_loop(steps: int, device: str, batch: int = 500, n: int = 10_000, z_dim: int = 32) -> float:
    """The same D/G steps written as a bare PyTorch loop; returns G steps per second."""
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
        loss_g = -F.softplus(d(g(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    def epoch_batches():
        perm = torch.randperm(n, device=device)
        for i in range(n // batch):
            yield data[perm[i * batch : (i + 1) * batch]]

    for real in list(epoch_batches())[:5]:  # warm-up
        one_step(real)
    _sync(device)
    t0, done = time.perf_counter(), 0
    while done < steps:
        for real in epoch_batches():
            one_step(real)
            done += 1
            if done >= steps:
                break
    _sync(device)
    return steps / (time.perf_counter() - t0)


def lightning_loop(steps: int, device: str, compile_mode: str | None = None) -> float:
    """GANModule under the Lightning Trainer with the default callbacks/loggers; returns G steps/s."""
    overrides = [
        "loss=standard",
        f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
        f"max_g_steps={steps}",
        "evaluator=none",
        "ckpt_every_n_steps=1000000",
    ]
    if compile_mode:
        overrides.append(f"compile={compile_mode}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, Path(tmp))
    return summary["g_steps"] / summary["wall_seconds"]


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
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    results = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "rows": []}
    for dev in devices:
        # Interleave the two loops so drift in machine load hits both equally; report the best of N.
        plain, light = [], []
        for _ in range(args.repeats):
            if not args.no_plain:
                plain.append(plain_loop(args.steps, dev))
            light.append(lightning_loop(args.steps, dev, args.compile))
        row = {"device": dev if dev == "cpu" else torch.cuda.get_device_name(), "steps": args.steps,
               "compile": args.compile or False, "lightning_steps_s": max(light)}
        if plain:
            row.update({"plain_steps_s": max(plain), "ratio": max(light) / max(plain),
                        # per-G-step time the platform adds over the bare loop (negative: it is faster)
                        "overhead_ms": 1000 / max(light) - 1000 / max(plain)})
        results["rows"].append(row)
        print(json.dumps(row))
    print("\n| device | plain loop G steps/s | gancollapse (Lightning) G steps/s | ratio | added ms/step |")
    print("|---|---|---|---|---|")
    for r in results["rows"]:
        if "plain_steps_s" in r:
            print(f"| {r['device']} | {r['plain_steps_s']:.1f} | {r['lightning_steps_s']:.1f} | {r['ratio']:.3f} "
                  f"| {r['overhead_ms']:+.2f} |")
        else:
            print(f"| {r['device']} | – | {r['lightning_steps_s']:.1f} | – | – |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
