"""Benchmark: generator steps per second on the 2D toy (seed config: batch 500, RMSprop 1e-4, 4x256 MLPs).

Times the platform's Lightning path (GANModule + Trainer, as `python -m gancollapse.train` runs it, toy
evaluator off) side by side with a plain PyTorch loop of the same nets and the same work, on CPU and, when
available, on GPU. Both skip the same 5 warm-up steps and time the next ``--steps`` G steps; each reports
wall-clock steps/s and, on the CPU, steps per CPU-second of the process (less sensitive to other jobs on a
shared machine). ``--plain`` picks the bare loop: ``same`` (default) computes what the platform computes (D's
forward on cat(real, fake), G reusing D's z and D's G(z), recorded once with grad, and D frozen during G's step),
so the ratio is the platform's own overhead; ``textbook`` recomputes G(z) in G's step after a no-grad G(z) for D,
as most GAN loops do (one G forward per step more than the platform); ``seed`` is ``textbook`` that also
computes D's weight gradients in G's step, as the Mode_Collapse seed does (``--plain-seed-style`` is kept as
its alias). ``--compile [MODE]``
runs the platform's nets under ``torch.compile`` (default mode ``reduce-overhead``: CUDA graphs on a GPU);
``--no-plain`` times the platform path alone. The two loops alternate in order, repeat by repeat; the table
shows the best of N, and the median of the per-repeat (back-to-back) ratios is printed after it, the figure to
quote from a loaded machine. Usage:

    python scripts/bench_toy.py [--steps 1500] [--repeats 3] [--device cpu|cuda|all] [--compile [MODE]]
        [--no-plain] [--plain same|textbook|seed] [--json out.json]

``--ensemble K`` times ``ensemble=K`` (K seeds as one batched model, gancollapse.ensemble) against one run of
the same config, for the cases of ``--cases`` (gdpp: the GDPP/VEEGAN 2x128 MLPs at GDPP's batch 512 and z 256;
gdpp64: the same at batch 64; ring: the default 4x256 at batch 500; pacgan: PacGAN's Table 1 PacGAN2 2D-ring cell
as ``conf/experiment/repro/pacgan_ring.yaml`` sets it, BatchNorm G 4x400, maxout D 3x200x5 packed 2 at a time,
simultaneous updates, batch 200, with its toy evaluator scoring once at the end; not in the default ``--cases``),
and reports the matmul FLOP/s each reaches (FLOPs of one G step counted by torch.utils.flop_counter) against the
device's fp32 peak:

    python scripts/bench_toy.py --ensemble 10 [--cases gdpp gdpp64 ring pacgan] [--steps 300] [--repeats 2]
        [--sequential] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gancollapse.nets.mlp import MLP
from gancollapse.paths import CONF_DIR
from gancollapse.train import run

WARMUP = 5  # untimed G steps before the clock starts, in both loops


PLAIN_STYLES = ("same", "textbook", "seed")


def plain_loop(steps: int, device: str, batch: int = 500, n: int = 10_000, z_dim: int = 32,
               style: str = "same") -> dict[str, float]:
    """The same D/G steps written as a bare PyTorch loop (``style``: see the module docstring); returns G
    steps per second (wall and CPU)."""
    if style not in PLAIN_STYLES:
        raise ValueError(f"plain loop style {style!r}: use one of {', '.join(PLAIN_STYLES)}")
    shared, seed_style = style == "same", style == "seed"
    torch.manual_seed(0)
    g = MLP(z_dim, 2, last_hidden_activation="tanh").to(device)
    d = MLP(2, 1).to(device)
    opt_g = torch.optim.RMSprop(g.parameters(), lr=1e-4)
    opt_d = torch.optim.RMSprop(d.parameters(), lr=1e-4)
    data = torch.randn(n, 2, device=device)

    def one_step(real: torch.Tensor) -> None:
        z = torch.randn(batch, z_dim, device=device)
        if shared:
            fake_g = g(z)
            fake = fake_g.detach()
        else:
            with torch.no_grad():
                fake = g(z)
        out = d(torch.cat([real, fake]))
        loss_d = F.softplus(-out[:batch]).mean() + F.softplus(out[batch:]).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(seed_style)  # the platform freezes D here: no D weight gradients in G's step
        loss_g = -F.softplus(d(fake_g if shared else g(z))).mean()
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


ENSEMBLE_CASES = {
    "gdpp": (["model.generator.hidden=128", "model.generator.depth=2", "model.discriminator.hidden=128",
              "model.discriminator.depth=2", "z_dim=256", "dataset.batch_size=512", "dataset.n_samples=10240"],
             "GDPP/VEEGAN 2x128 MLPs, batch 512, z 256"),
    "gdpp64": (["model.generator.hidden=128", "model.generator.depth=2", "model.discriminator.hidden=128",
                "model.discriminator.depth=2", "z_dim=256", "dataset.batch_size=64", "dataset.n_samples=10240"],
               "2x128 MLPs, batch 64, z 256"),
    "ring": ([], "ring default: 4x256 MLPs, batch 500, z 32"),
    "pacgan": (["experiment=repro/pacgan_ring", "regularizer=pack", "regularizer.pack.m=2", "dataset.batch_size=200",
                "evaluator=toy", "evaluator.every_n_steps=100000000", "evaluator.frames=false"],
               "PacGAN2 2D-ring cell: BN G 4x400, maxout D packed m=2, simultaneous, batch 200, z 2"),
}
DEFAULT_CASES = ("gdpp", "gdpp64", "ring")


def fp32_peak(device: str) -> tuple[float | None, str]:
    """The device's nominal fp32 peak (FLOP/s) and how it was derived. CPU: threads x clock (/proc/cpuinfo) x FMA
    lanes (AVX-512: 2 units x 16 lanes x 2; AVX2: 2 x 8 x 2); GPU: the vendor's non-tensor-core fp32 figure."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        table = {"H100 PCIe": 51.2e12, "H100": 66.9e12, "H200": 66.9e12, "A100": 19.5e12}  # vendor datasheets
        for key, peak in table.items():
            if key in name:
                return peak, f"{name}: {peak / 1e12:.1f} TFLOP/s fp32 (datasheet, no tensor cores)"
        return None, f"{name}: peak unknown"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    per_cycle = 64 if " avx512f" in flags else 32 if " fma" in flags else 8
    threads = torch.get_num_threads()
    peak = threads * mhz * 1e6 * per_cycle
    return peak, (f"{threads} thread(s) x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle "
                  f"({'AVX-512' if per_cycle == 64 else 'AVX2' if per_cycle == 32 else 'SSE'} FMA)")


def step_flops(cfg, device: str) -> float:  # noqa: ANN001
    """Matmul FLOPs of one training step (a D and a G phase) of the module ``cfg`` builds, ensemble or not."""
    import lightning as L
    from torch.utils.flop_counter import FlopCounterMode

    from gancollapse.build import build_module
    from gancollapse.ensemble import ensemble_size, member_config
    from gancollapse.models.ensemble import EnsembleGAN

    k = ensemble_size(cfg)
    batch, dim = int(cfg.dataset.batch_size), 2
    if k == 1:
        module = build_module(cfg).to(device)
        module.use_optimizers(module.configure_optimizers())
        real = torch.randn(batch, dim, device=device)
    else:
        members, states = [], []
        for s in range(k):
            L.seed_everything(s, verbose=False)
            members.append(build_module(member_config(cfg, s)))
            states.append(torch.get_rng_state())
        module = EnsembleGAN(members, list(range(k)), states).to(device)
        real = torch.randn(k, batch, dim, device=device)
    with FlopCounterMode(display=False) as counter:
        module.training_step(real)
    return float(counter.get_total_flops())


def timed_run(overrides: list[str]) -> tuple[float, float]:
    """(training seconds as the run's summary records them, seconds of the whole ``run()`` call)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run(cfg, Path(tmp))
        total = time.perf_counter() - t0
    return float(summary["wall_seconds"]), total


def ensemble_rows(args: argparse.Namespace, device: str) -> list[dict]:
    """One row per case: one run and ensemble=K, wall time of training and of the whole run() call."""
    peak, peak_how = fp32_peak(device)
    rows = []
    for case in args.cases:
        extra, label = ENSEMBLE_CASES[case]
        own_evaluator = any(o.startswith("evaluator=") for o in extra)  # a repro cell scores with its own rule
        base = [f"trainer={'gpu' if device == 'cuda' else 'cpu'}", f"max_g_steps={args.steps}",
                *([] if own_evaluator else ["evaluator=none"]),
                "ckpt_every_n_steps=1000000", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
                "logger=none", *extra]

        one, ens, seq = [], [], []
        for _ in range(args.repeats):  # interleaved; best of N
            one.append(timed_run([*base, "seed=0"]))
            ens.append(timed_run([*base, "seed=0", f"ensemble={args.ensemble}"]))
            if args.sequential:
                runs = [timed_run([*base, f"seed={s}"]) for s in range(args.ensemble)]
                seq.append((sum(r[0] for r in runs), sum(r[1] for r in runs)))
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg1 = compose("train", overrides=base)
            cfgk = compose("train", overrides=base + [f"ensemble={args.ensemble}"])
        f1, fk = step_flops(cfg1, device), step_flops(cfgk, device)
        (t1, c1), (tk, ck) = min(one), min(ens)
        row = {"case": case, "label": label, "device": device, "K": args.ensemble, "steps": args.steps,
               "one_train_s": t1, "one_call_s": c1, "ens_train_s": tk, "ens_call_s": ck,
               "ratio_train": tk / t1, "ratio_call": ck / c1,
               "seq_call_s": min(s[1] for s in seq) if seq else args.ensemble * c1,
               "seq_measured": bool(seq),
               "one_gflops": f1 * args.steps / t1 / 1e9, "ens_gflops": fk * args.steps / tk / 1e9,
               "peak_gflops": peak / 1e9 if peak else None, "peak": peak_how}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def print_ensemble_table(rows: list[dict]) -> None:
    print(f"\n| case | one run: train s / call s | ensemble={rows[0]['K']}: train s / call s | ratio train / call "
          f"| {rows[0]['K']} runs in a row, call s | GFLOP/s one / ensemble (fp32 peak) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_gflops']:.0f}" if r["peak_gflops"] else "?"
        seq = f"{r['seq_call_s']:.1f}" + ("" if r["seq_measured"] else f" ({r['K']} x one)")
        print(f"| {r['label']} | {r['one_train_s']:.2f} / {r['one_call_s']:.2f} | {r['ens_train_s']:.2f} / "
              f"{r['ens_call_s']:.2f} | {r['ratio_train']:.2f} / {r['ratio_call']:.2f} | {seq} | "
              f"{r['one_gflops']:.1f} / {r['ens_gflops']:.1f} ({peak}) |")
    print(f"\npeak: {rows[0]['peak']}")


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
    p.add_argument("--plain", default="same", choices=PLAIN_STYLES,
                   help="the bare loop to compare with: same work as the platform (default), the textbook "
                        "loop (G(z) recomputed for G's step) or the seed's (textbook + D's weight gradients)")
    p.add_argument("--plain-seed-style", action="store_const", const="seed", dest="plain",
                   help="alias of --plain seed")
    p.add_argument("--json", type=Path, default=None, help="also write results here")
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help="time ensemble=K against one run (see --cases) instead of the plain-loop comparison")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=list(ENSEMBLE_CASES))
    p.add_argument("--sequential", action="store_true", help="with --ensemble: also time K single runs in a row")
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}", "load_at_start": load, "rows": []}
    if args.ensemble:
        for dev in devices:
            rows = ensemble_rows(args, dev)
            results["rows"].extend(rows)
            print_ensemble_table(rows)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    for dev in devices:
        # Interleave the two loops so drift in machine load hits both equally; report the best of N.
        plain, light = [], []
        for i in range(args.repeats):
            # the order alternates, so neither loop always runs first (warm caches, load that rises or falls)
            if not args.no_plain and i % 2 == 0:
                plain.append(plain_loop(args.steps, dev, style=args.plain))
            light.append(lightning_loop(args.steps, dev, args.compile))
            if not args.no_plain and i % 2 == 1:
                plain.append(plain_loop(args.steps, dev, style=args.plain))
        row = {"device": dev if dev == "cpu" else torch.cuda.get_device_name(), "steps": args.steps,
               "compile": args.compile or False, "plain": args.plain,
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
            # the paired figure for a loaded machine: the median over repeats of each back-to-back pair's ratio
            row["median_paired_ratio"] = {c: statistics.median(v) for c, v in row["ratios_per_repeat"].items()}
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
    for r in results["rows"]:
        if "median_paired_ratio" in r:
            print(f"{r['device']}: median of the {args.repeats} paired ratios (gancollapse / plain), "
                  + ", ".join(f"{c} {v:.3f}" for c, v in r["median_paired_ratio"].items())
                  + f"; per pair: {r['ratios_per_repeat']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
