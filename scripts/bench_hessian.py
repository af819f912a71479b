"""Benchmark the Hessian machinery of the Dist-GAN / NuGAN study on the MNIST nets.

Measures, on Dist-GAN's DCGAN-MNIST nets (z = 100, batch 64, 28×28):

* ``g_step``: one Dist-GAN G step (G and D forward, |mean σ(D(x)) − mean σ(D(G(z)))|, backward, Adam);
* ``iteration``: one Dist-GAN iteration = R step + D step (with GP) + G step;
* ``lanczos``: one call of top-5 eigenpairs of the G loss's Hessian by Lanczos with 20 iterations
  (:func:`gancollapse.optim.lanczos.hessian_eigenpairs`; includes the create_graph gradient);
* ``observatory``: one evaluation of the collapse observatory at its defaults (G and D spectra, k = 5,
  20 iterations, 512-sample spreads; no classifier), and its overhead at the default interval
  (``every_n_steps`` iterations): eval / (every × iteration).

Times are medians over ``--repeats`` after one warm-up; CUDA times are synchronised wall times.
The G has two forms: ``fc`` (the reference's 8192→6272 bridge, 52.8M parameters) and ``crop`` (1.4M).

Usage:
    python scripts/bench_hessian.py [--device cpu|cuda|auto] [--bridge fc,crop] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from gancollapse.metrics.observatory import CollapseObservatory
from gancollapse.models.distgan import DistGANModule
from gancollapse.models.phased import PhaseBatch
from gancollapse.nets.mnist import MnistDiscriminator, MnistEncoder, MnistGenerator, count_parameters
from gancollapse.optim.lanczos import hessian_eigenpairs
from gancollapse.samplers.prior import PriorSampler

B, Z = 64, 100


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, cuDNN autotune)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _Trainer:
    """The few trainer attributes the observatory reads (no Lightning loop in a micro-benchmark)."""

    def __init__(self) -> None:
        self.default_root_dir = "/tmp"
        self.datamodule = None
        self.callback_metrics: dict = {}
        self.is_global_zero = True


def bench(bridge: str, device: torch.device, repeats: int, every: int, observatory: bool = True) -> dict:
    torch.manual_seed(0)
    module = DistGANModule(MnistGenerator(Z, bridge=bridge), MnistDiscriminator(), MnistEncoder(Z),
                           prior=PriorSampler("uniform"), z_dim=Z, schedule_steps=100_000).to(device)
    module.use_optimizers(module.configure_optimizers())
    real = (torch.rand(B, 1, 28, 28, device=device) * 2 - 1)

    def g_step():
        module._update(module.g_loss(PhaseBatch(real, module.sample_z(B)))["loss"], "g")

    def iteration():
        for _ in range(3):  # R, D, G, each on its own batch
            module.training_step(real)

    def lanczos():
        loss = module.generator_loss(real, module.sample_z(B))["g_total"]
        pairs, _ = hessian_eigenpairs(loss, list(module.generator.parameters()), k=5, iterations=20)
        return pairs

    obs = CollapseObservatory(every_n_steps=every, plot=False)
    trainer = _Trainer()
    obs.setup(trainer, module, "fit")
    obs._collect_real((torch.rand(512, 1, 28, 28, device=device) * 2 - 1, None))

    def observe():
        obs.evaluate(trainer, module)

    out = {"bridge": bridge, "device": str(device), "g_params": count_parameters(module.generator),
           "d_params": count_parameters(module.discriminator)}
    out["g_step_s"] = _time(g_step, device, repeats)
    out["iteration_s"] = _time(iteration, device, repeats)
    out["lanczos_s"] = _time(lanczos, device, repeats)
    out["observatory_s"] = _time(observe, device, max(1, repeats - 1)) if observatory else float("nan")
    out["lanczos_over_g_step"] = out["lanczos_s"] / out["g_step_s"]
    out["lanczos_over_iteration"] = out["lanczos_s"] / out["iteration_s"]
    out["observatory_every"] = every
    out["observatory_overhead"] = out["observatory_s"] / (every * out["iteration_s"])
    # NuGAN at the notebooks' interval (every 50 G steps) adds one Lanczos call per 50 iterations.
    out["nugan_overhead_every50"] = out["lanczos_s"] / (50 * out["iteration_s"])
    pairs = lanczos()
    out["g_top5"] = [round(float(v), 4) for v in pairs.values]
    if device.type == "cuda":
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bridge", default="fc,crop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--every", type=int, default=1000, help="observatory interval (G steps = iterations)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-observatory", action="store_true", help="skip the observatory timing (slow on CPU)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = [bench(b, device, args.repeats, args.every, not args.no_observatory) for b in args.bridge.split(",")]
    meta = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(json.dumps(meta))
    print("| G bridge | G params | device | G step | iteration (R+D+G) | Lanczos top-5, 20 it | ratio to G step | "
          "ratio to iteration | observatory eval | observatory overhead @ every | NuGAN overhead @ 50 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bridge']} | {r['g_params'] / 1e6:.1f}M | {r['device']} | {r['g_step_s'] * 1e3:.0f} ms | "
              f"{r['iteration_s'] * 1e3:.0f} ms | {r['lanczos_s']:.2f} s | {r['lanczos_over_g_step']:.1f}× | "
              f"{r['lanczos_over_iteration']:.1f}× | {r['observatory_s']:.2f} s | "
              f"{100 * r['observatory_overhead']:.2f}% @ {r['observatory_every']} | {100 * r['nugan_overhead_every50']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
