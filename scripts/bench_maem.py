"""Benchmark MaEM-GAN: the RB-MaEM entropy term, and the full MaEM training step on DCGAN-32.

1. ``entropy``: forward + backward (and the buffer update) of the entropy term for S ∈ {1024, 8192, 65536},
   d ∈ {16, 64}, B = 64, in two forms:

   * ``ours``: a (S, d) FIFO ring; nearest neighbour by one (B×d)·(d×S) product (scored in float64) + argmin
     + gather of B rows (:func:`gancollapse.regularizers.maem.manifold_entropy`), then ``index_copy_`` of B rows.
   * ``broadcast``: the seed's form, written out here for comparison: a (S, B, d) buffer (every entry copied
     B times), ``mean((buf − c)², dim=2).min(dim=0)``, then the update. The seed's own update
     ``cat(buf[B:], new)`` shrinks the buffer (the bug); to time a buffer that really holds S entries the
     fixed update ``cat(buf[1:], new)`` is used, which also rewrites the whole buffer every step.

   Each configuration runs in a fresh subprocess so its memory figure is its own. CUDA: time from CUDA
   events, memory = ``torch.cuda.max_memory_allocated`` (buffer included). CPU: wall time, memory = growth
   of the process's peak RSS over its RSS before the buffer was allocated (buffer included; page-granular,
   so small sizes read as ~0).

2. ``step``: images/s of the full MaEM training step (MaF + DLLE + DIsoMap + entropy on both sides, σ at
   full weight, stochastic spectral-norm D with m = 16, n_critic 3, G reusing D's z), DCGAN-32, batch 64,
   through the platform's Lightning path (``experiment=maem_cifar10`` on synthetic 32×32 RGB images held on
   the device, evaluator off). images/s = 64 × D steps / seconds, timed after warm-up steps.

3. ``nn``: exactness and time of three ways to score the nearest neighbour on codes far from the origin
   (offset o, spread 0.01, S = 1024, B = 64, d = 16): the float32 expansion ‖c‖² − 2c·b + ‖b‖², the same
   after centring codes and buffer on the buffer mean, and float64 (ours); wrong neighbours are counted
   against ``torch.cdist`` in float64. A two-cluster buffer (0 and o) shows what centring does not fix.

Usage:
    python scripts/bench_maem.py nn [--reps 200]
    python scripts/bench_maem.py entropy [--device cpu|cuda] [--reps 20] [--sizes 1024,8192,65536] [--dims 16,64]
    python scripts/bench_maem.py step [--device cpu|cuda] [--d-steps 60] [--warmup 9] [--compile]
    python scripts/bench_maem.py all --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch

from gancollapse.regularizers.maem import nearest_neighbour

B = 64


# --------------------------------------------------------------------------------------- entropy term
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def broadcast_entropy_step(codes: torch.Tensor, buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's estimator: buf is (S, B, d); returns (log of the mean NN distance, updated buffer)."""
    dist = (buf - codes[None]).pow(2).mean(dim=2)  # (S, B): the (S, B, d) temporaries live here
    loss = torch.log(dist.min(dim=0).values.mean())
    new_buf = torch.cat((buf[1:], codes.detach()[None]), dim=0)  # the FIFO fix; still an O(S·B·d) copy
    return loss, new_buf


def entropy_case(form: str, size: int, dim: int, device: str, reps: int) -> dict:
    """Time and peak memory of one form at one (S, d); meant to run alone in its process."""
    from gancollapse.regularizers.maem import ReplayBuffer, manifold_entropy

    torch.manual_seed(0)
    cuda = device == "cuda"
    # Start autograd's machinery (threads, pools) on a toy graph first, so the baseline excludes it.
    warm = torch.randn(8, 8, device=device, requires_grad=True)
    torch.log((warm @ warm.t()).pow(2).mean(dim=1).min()).backward()
    base_rss = _rss_bytes()
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    codes_all = [torch.randn(B, dim, device=device) for _ in range(4)]
    if form == "ours":
        ring = ReplayBuffer(size, dim).to(device)

        def one(c: torch.Tensor) -> None:
            c = c.clone().requires_grad_(True)
            manifold_entropy(c, ring.data).backward()
            ring.push(c)
    else:
        state = {"buf": torch.empty(size, B, dim, device=device).uniform_(-1, 1)}

        def one(c: torch.Tensor) -> None:
            c = c.clone().requires_grad_(True)
            loss, state["buf"] = broadcast_entropy_step(c, state["buf"])
            loss.backward()

    one(codes_all[0])  # warm-up (allocator, kernels)
    times = []
    for i in range(reps):
        c = codes_all[i % 4]
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            one(c)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            one(c)
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() - base_alloc if cuda else max(_peak_rss_bytes() - base_rss, 0)
    return {"form": form, "S": size, "d": dim, "B": B, "device": device, "reps": reps,
            "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
            "peak_mib": peak / 2**20}


def run_entropy(device: str, reps: int, sizes: list[int], dims: list[int]) -> list[dict]:
    rows = []
    for size in sizes:
        for dim in dims:
            for form in ("ours", "broadcast"):
                cmd = [sys.executable, __file__, "_entropy_case", form, str(size), str(dim), device, str(reps)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    row = {"form": form, "S": size, "d": dim, "device": device, "error": out.stderr.strip().splitlines()[-1:]}
                else:
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- NN precision
def _nn_float32(c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return b[torch.addmm(b.pow(2).sum(dim=1)[None], c, b.t(), alpha=-2.0).argmin(dim=1)]


def _nn_centred(c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m = b.mean(dim=0)
    return _nn_float32(c - m, b - m) + m


NN_FORMS = {"float32": _nn_float32, "centred float32": _nn_centred, "float64 (ours)": nearest_neighbour}


def run_nn(device: str, reps: int) -> list[dict]:
    """Wrong neighbours and µs per call for the three scorings (see the module docstring, part 3)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for layout in ("one cluster", "two clusters"):
        for offset in (0.0, 30.0, 1000.0):
            b = 0.01 * torch.randn(1024, 16, generator=gen) + offset
            if layout == "two clusters":
                b[:512] -= offset
            c = (0.01 * torch.randn(B, 16, generator=gen) + offset).to(device)
            b = b.to(device)
            truth = b[torch.cdist(c.double(), b.double()).argmin(dim=1)]
            for name, fn in NN_FORMS.items():
                wrong = int((fn(c, b) - truth).abs().amax(dim=1).gt(1e-3).sum())
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn(c, b)
                if device == "cuda":
                    torch.cuda.synchronize()
                us = (time.perf_counter() - t0) / reps * 1e6
                row = {"layout": layout, "offset": offset, "scoring": name, "wrong_of_64": wrong, "us": round(us, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- training step
class StepTimer(L.Callback):
    """Lightning callback: wall time of D steps after ``warmup`` steps (synchronising CUDA at both ends)."""

    def __init__(self, warmup: int = 9) -> None:
        self.warmup, self.t0, self.t1, self.steps = int(warmup), None, None, 0

    def _sync(self, pl_module) -> None:  # noqa: ANN001
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.d_steps == self.warmup:
            self._sync(pl_module)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.t0 is not None:
            self._sync(pl_module)
            self.t1 = time.perf_counter()
            self.steps = pl_module.d_steps - self.warmup


def run_step(device: str, d_steps: int, warmup: int, compile_nets: bool) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from gancollapse.paths import CONF_DIR
    from gancollapse.train import run

    n_critic = 3
    overrides = [
        "experiment=maem_cifar10",
        "dataset=digits", "~dataset.train_test", "dataset.channels=3", "dataset.img_size=32", f"dataset.on_device={device == 'cuda'}",
        "evaluator=none", "logger=none", "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
        f"trainer={'gpu' if device == 'cuda' else 'cpu'}", "trainer.max_epochs=100000",
        f"max_g_steps={(d_steps + warmup) // n_critic}", "ckpt_every_n_steps=100000000",
        "regularizer.maem.ramp_epochs=0",  # σ at full weight: the term's cost is what is measured
        "log_every_n_steps=50",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    timer = StepTimer(warmup)
    with open_dict(cfg):
        cfg.callbacks = {}
    import gancollapse.train as train_mod

    original = train_mod.build_callbacks

    def with_timer(cfg_, run_dir, module):  # noqa: ANN001
        if compile_nets:
            module.generator = torch.compile(module.generator)
            module.discriminator = torch.compile(module.discriminator)
        return [*original(cfg_, run_dir, module), timer]

    train_mod.build_callbacks = with_timer
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(cfg, Path(tmp))
    finally:
        train_mod.build_callbacks = original
    seconds = timer.t1 - timer.t0
    return {"device": device if device == "cpu" else torch.cuda.get_device_name(), "batch": B,
            "timed_d_steps": timer.steps, "seconds": seconds, "images_per_s": B * timer.steps / seconds,
            "d_steps_per_s": timer.steps / seconds, "compile": compile_nets}


# --------------------------------------------------------------------------------------- CLI
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_entropy_case":
        form, size, dim, device, reps = sys.argv[2:7]
        print(json.dumps(entropy_case(form, int(size), int(dim), device, int(reps))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["entropy", "step", "nn", "all"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--sizes", default="1024,8192,65536")
    p.add_argument("--dims", default="16,64")
    p.add_argument("--d-steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=9)
    p.add_argument("--compile", action="store_true", help="torch.compile G and D for the step benchmark")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    result = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}",
              "device": args.device if args.device == "cpu" else torch.cuda.get_device_name()}
    if args.what in ("nn", "all"):
        result["nn"] = run_nn(args.device, args.reps if args.reps != 20 else 200)
    if args.what in ("entropy", "all"):
        rows = run_entropy(args.device, args.reps, [int(s) for s in args.sizes.split(",")],
                           [int(d) for d in args.dims.split(",")])
        result["entropy"] = rows
        print("\n| S | d | ours ms | ours peak MiB | broadcast ms | broadcast peak MiB |\n|---|---|---|---|---|---|")
        by = {(r["S"], r["d"], r["form"]): r for r in rows}
        for size in sorted({r["S"] for r in rows}):
            for dim in sorted({r["d"] for r in rows}):
                o, b = by.get((size, dim, "ours"), {}), by.get((size, dim, "broadcast"), {})
                fmt = lambda r, k: f"{r[k]:.3f}" if k in r else "error"  # noqa: E731
                print(f"| {size} | {dim} | {fmt(o, 'median_ms')} | {fmt(o, 'peak_mib')} | {fmt(b, 'median_ms')} | {fmt(b, 'peak_mib')} |")
    if args.what in ("step", "all"):
        row = run_step(args.device, args.d_steps, args.warmup, args.compile)
        result["step"] = row
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
