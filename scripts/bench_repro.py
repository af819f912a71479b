"""Benchmark: CPU cost of one training step of every reproduction cell (conf/experiment/repro/), to size
`make reproduce`.

Times (CPU seconds of this process, and wall) ``GANModule.training_step`` on the cell's own nets, batch, loss, regularizers and update order (no Trainer,
no evaluation: what a long run spends its time on), one thread, and extrapolates to the paper's budget
(``max_g_steps``) and to the shortened ``repro.short`` schedule. Cells whose regularizer config is not in this
checkout (Unrolled GAN, GDPP) are reported as missing; ``--proxies`` times stand-ins for them: D steps with a
kept graph (k unrolled D steps) and two symmetric eigendecompositions of the batch kernel (GDPP's loss).

With ``--ensemble K`` each cell is also timed as K seeds batched in one process
(:class:`gancollapse.models.ensemble.EnsembleGAN`, what ``ensemble=K`` trains), where this checkout can build
it: the CPU cost of one G step of all K together, and its ratio to one run's (``make reproduce`` plans batched
cells with it).

    python scripts/bench_repro.py [--steps 300] [--warmup 20] [--proxies] [--ensemble 5] [--cells gan,...]
        [--tables pacgan_ring,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from gancollapse.build import build_module
from gancollapse.instantiate import build_datamodule
from gancollapse.paths import CONF_DIR

REPRO = sorted(p.stem for p in (Path(CONF_DIR) / "experiment" / "repro").glob("*.yaml"))


def _cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _timed_g_steps(module, dm, n_critic: int, steps: int, warmup: int) -> tuple[float, float]:  # noqa: ANN001
    """(CPU seconds, wall seconds) per G step (``n_critic`` training steps each) after ``warmup`` untimed ones."""
    batches = iter(dm.train_dataloader())

    def g_step() -> None:
        nonlocal batches
        for _ in range(n_critic):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(dm.train_dataloader())
                batch = next(batches)
            module.training_step(batch)

    for _ in range(warmup):
        g_step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        g_step()
    return (time.process_time() - c0) / steps, (time.perf_counter() - t0) / steps


def time_cell(name: str, overrides: list[str], steps: int, warmup: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per G step of the cell (one G step = n_critic training steps). CPU time is
    this process's (``time.process_time``): on a machine shared with other jobs it is the cost a run needs,
    wall time is what it got."""
    cfg = _cfg([f"experiment=repro/{name}", *overrides])
    torch.manual_seed(0)
    module = build_module(cfg)
    module.use_optimizers(module.configure_optimizers())
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return _timed_g_steps(module, dm, int(cfg.n_critic), steps, warmup)


def time_ensemble(name: str, overrides: list[str], k: int, steps: int, warmup: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per G step of K seeds of the cell batched in one process (every member's
    step together). Raises what the ensemble raises for a cell it cannot batch."""
    from gancollapse.data.ensemble import EnsembleDataModule
    from gancollapse.ensemble import member_config
    from gancollapse.models.ensemble import EnsembleGAN

    cfg = _cfg([f"experiment=repro/{name}", *overrides, f"ensemble={k}"])
    modules, datamodules, states = [], [], []
    for s in range(k):
        torch.manual_seed(s)
        member = member_config(cfg, s)
        datamodules.append(build_datamodule(member))
        modules.append(build_module(member))
        states.append(torch.get_rng_state())
    module = EnsembleGAN(modules, list(range(k)), states)
    dm = EnsembleDataModule(datamodules)
    dm.setup("fit")
    return _timed_g_steps(module, dm, int(cfg.n_critic), steps, warmup)


def time_proxies(steps: int) -> dict[str, float]:
    """Stand-ins for the pending regularizers on the GDPP/VEEGAN nets (batch 512): CPU seconds of the extra
    G-side work per G step — Unrolled GAN's k = 5 differentiable D steps and the G loss through them, and GDPP's
    two eigendecompositions of 512 x 512 feature kernels with the backward through the fake one."""
    import torch.nn.functional as F
    from torch.func import functional_call

    from gancollapse.nets.mlp import MLP

    torch.manual_seed(0)
    g = MLP(256, 2, hidden=128, depth=2, activation="tanh")
    d = MLP(2, 1, hidden=128, depth=2, activation="tanh")
    real, z = torch.randn(512, 2), torch.randn(512, 256)
    n = max(steps // 10, 5)

    def d_loss(params: dict, fake: torch.Tensor) -> torch.Tensor:
        return (F.softplus(-functional_call(d, params, (real,))).mean()
                + F.softplus(functional_call(d, params, (fake,))).mean())

    out: dict[str, float] = {}
    c0 = time.process_time()
    for _ in range(n):
        fake = g(z)
        params = dict(d.named_parameters())
        for _ in range(5):
            grads = torch.autograd.grad(d_loss(params, fake), list(params.values()), create_graph=True)
            params = {k: p - 1e-4 * gr for (k, p), gr in zip(params.items(), grads, strict=True)}
        g.zero_grad()
        F.softplus(-functional_call(d, params, (fake,))).mean().backward()
    out["unrolled_k5_g_side_cpu_s"] = (time.process_time() - c0) / n
    c0 = time.process_time()
    for _ in range(n):
        fake = g(z)
        phi_fake, phi_real = d.net[:4](fake), d.net[:4](real)  # D's last hidden layer: GDPP's features
        vals_f, vecs_f = torch.linalg.eigh(F.normalize(phi_fake, dim=1) @ F.normalize(phi_fake, dim=1).t())
        with torch.no_grad():
            vals_r, vecs_r = torch.linalg.eigh(F.normalize(phi_real, dim=1) @ F.normalize(phi_real, dim=1).t())
        g.zero_grad()
        ((vals_f - vals_r).square().mean() - (vecs_f * vecs_r).sum(0).sum()).backward()
    out["gdpp_eigh512_g_side_cpu_s"] = (time.process_time() - c0) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--proxies", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--only-proxies", action="store_true")
    parser.add_argument("--ensemble", type=int, default=0, help="also time K seeds batched (0: off)")
    parser.add_argument("--tables", default="", help="comma-separated repro files (default: all)")
    parser.add_argument("--cells", default="", help="comma-separated cell names (default: all)")
    args = parser.parse_args()
    tables = [t for t in args.tables.split(",") if t] or REPRO
    cells = {c for c in args.cells.split(",") if c}
    torch.set_num_threads(1)
    rows = []
    for name in [] if args.only_proxies else tables:
        meta = _cfg([f"experiment=repro/{name}"])
        paper_steps = int(meta.max_g_steps)
        for cell, spec in meta.repro.cells.items():
            if cells and cell not in cells:
                continue
            # a cell's own short schedule replaces its table's
            short = [o for o in spec.get("short", meta.repro.short) if o.startswith("max_g_steps=")]
            short_steps = int(short[0].split("=")[1]) if short else paper_steps
            overrides = list(spec.overrides)
            missing = [o.split("=")[1] for o in overrides if o.startswith("regularizer=")
                       and not (Path(CONF_DIR) / "regularizer" / f"{o.split('=')[1]}.yaml").is_file()]
            if missing:
                rows.append({"protocol": name, "cell": cell, "missing": missing})
                print(f"{name:12s} {cell:13s} missing regularizer config(s): {', '.join(missing)}", flush=True)
                continue
            sec, wall = time_cell(name, overrides, args.steps, args.warmup)
            row = {"protocol": name, "cell": cell, "ms_per_g_step": round(1000 * sec, 3),
                   "wall_ms_per_g_step": round(1000 * wall, 3), "paper_g_steps": paper_steps,
                   "paper_cpu_min": round(sec * paper_steps / 60, 1), "short_g_steps": short_steps,
                   "short_cpu_min": round(sec * short_steps / 60, 1), "runs": meta.repro.runs or meta.repro.runs_chosen}
            if args.ensemble > 1:
                try:
                    esec, ewall = time_ensemble(name, overrides, args.ensemble, args.steps, args.warmup)
                    row.update({"ensemble": args.ensemble, "ensemble_ms_per_g_step": round(1000 * esec, 3),
                                "ensemble_wall_ms_per_g_step": round(1000 * ewall, 3),
                                "ensemble_ratio": round(esec / sec, 2)})
                    print(f"{name:12s} {cell:13s} ensemble={args.ensemble}: {1000 * esec:8.2f} CPU-ms/G step "
                          f"= {esec / sec:.2f} x one run", flush=True)
                except Exception as err:  # noqa: BLE001 -- a cell this checkout cannot batch: say why
                    row["ensemble_error"] = f"{type(err).__name__}: {err}"[:200]
                    print(f"{name:12s} {cell:13s} ensemble={args.ensemble}: not batched here ({row['ensemble_error']})",
                          flush=True)
            rows.append(row)
            print(f"{name:12s} {cell:13s} {row['ms_per_g_step']:8.2f} CPU-ms/G step (wall {row['wall_ms_per_g_step']:.1f})"
                  f"  paper {paper_steps:>7,} steps = "
                  f"{row['paper_cpu_min']:7.1f} CPU-min/run  short {short_steps:>6,} = {row['short_cpu_min']:6.1f}",
                  flush=True)
    result = {"date": str(date.today()), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__, "threads": 1,
              "steps": args.steps, "rows": rows}
    if args.proxies or args.only_proxies:
        result["proxies"] = time_proxies(args.steps)
        print("proxies (s per G step, on top of the GAN step):", result["proxies"])
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
