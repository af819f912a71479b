"""Samples/s of each latent sampler on the toy MLP nets and on DCGAN-32 (untrained weights: speed only).

    python scripts/bench_samplers.py                           # toy + dcgan32, all samplers, device auto
    python scripts/bench_samplers.py --nets toy --device cpu --threads 1
    python scripts/bench_samplers.py --nets dcgan32 --chain-length 20   # shorter chains, extrapolated

Each sampler runs its ``conf/sampler/<name>.yaml`` settings with ``batch_size = --n`` (one batch of chains)
unless --batch-size is given. ``--chain-length K`` shortens MH-GAN/REP-GAN/WL-GAN chains and DDLS runs
to K steps (WL-GAN's warm-up to min(100, K)); the table then also gives the rate extrapolated to the
configured length (cost ∝ steps). One untimed call first warms caches (and CUDA kernels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SAMPLERS = ["prior", "drs", "mhgan", "repgan", "ddls", "wlgan"]
LENGTH_KEY = {"mhgan": "chain_length", "repgan": "chain_length", "wlgan": "chain_length", "ddls": "n_steps"}


def build_nets(kind: str, device: str) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    if kind == "toy":
        from gancollapse.nets.mlp import MLP

        z_dim = 32
        g = MLP(z_dim, 2, 256, 4, last_hidden_activation="tanh")
        d = MLP(2, 1, 256, 4)
    elif kind == "dcgan32":
        from gancollapse.nets.dcgan import DCGAN32Discriminator, DCGAN32Generator

        z_dim = 100
        g, d = DCGAN32Generator(z_dim), DCGAN32Discriminator()
    else:
        raise ValueError(f"--nets: unknown net {kind!r} (toy, dcgan32)")
    return g.to(device).eval(), d.to(device).eval(), z_dim


def make_sampler(name: str, n: int, batch_size: int | None, chain_length: int | None):
    cfg = OmegaConf.load(ROOT / "conf" / "sampler" / f"{name}.yaml")
    if name != "prior":
        cfg.batch_size = batch_size or n
    configured = cfg.get(LENGTH_KEY.get(name, ""), None)
    if chain_length is not None and name in LENGTH_KEY:
        cfg[LENGTH_KEY[name]] = chain_length
        if name == "wlgan":
            cfg.warmup_steps = min(100, chain_length)
    return instantiate(cfg), configured


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(name: str, g, d, z_dim: int, device: str, n: int, batch_size: int | None,  # noqa: ANN001
          chain_length: int | None, repeats: int) -> dict[str, float]:
    sampler, configured = make_sampler(name, n, batch_size, chain_length)
    sampler.sample(g, d, min(n, 8), z_dim, device, seed=0)  # warm-up
    times = []
    for r in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        z = sampler.sample(g, d, n, z_dim, device, seed=r + 1)
        with torch.no_grad():
            g(z[: min(len(z), 1000)])
        sync(device)
        times.append(time.perf_counter() - t0)
    best = min(times)
    rate = n / best
    row = {"samples_per_s": rate, "seconds": best}
    if chain_length is not None and configured is not None:
        row["extrapolated_per_s"] = rate * chain_length / float(configured)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="toy,dcgan32")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=100, help="samples per timed call")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--chain-length", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); n={args.n}; chain length: {args.chain_length or 'configured'}")
    print("| nets | sampler | samples/s | seconds | samples/s at configured length |")
    print("|---|---|---|---|---|")
    for kind in args.nets.split(","):
        g, d, z_dim = build_nets(kind, device)
        for s in args.samplers.split(","):
            row = bench(s, g, d, z_dim, device, args.n, args.batch_size, args.chain_length, args.repeats)
            ext = f"{row['extrapolated_per_s']:.3g}" if "extrapolated_per_s" in row else "—"
            print(f"| {kind} | {s} | {row['samples_per_s']:.3g} | {row['seconds']:.3g} | {ext} |", flush=True)


if __name__ == "__main__":
    main()
