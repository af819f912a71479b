"""Benchmark: the whole default toy run against the Mode_Collapse seed's whole run, as processes.

Runs ``python -m gancollapse.train`` (the default: ring-8, 2,500 G steps of batch 500, 4x256 MLPs, RMSprop
1e-4, non-saturating loss, 10 evaluations with frames and a GIF, checkpoints, CSV log) and the seed's
``main.py --device cpu --epochs 125 --loss non-saturating`` (github.com/ChristophReich1996/Mode_Collapse:
10,000 samples / batch 500 = 20 G steps an epoch, so 125 epochs = 2,500 G steps of the same nets, optimizer,
loss and batch size, with a plot every 10 epochs) N times each, interleaved (the order alternates), each in
a fresh process with the same thread settings, from a temporary folder outside the project. Prints each
run's wall and CPU time (user + sys of the child), the medians and seed / gancollapse (> 1: the platform
is faster), per back-to-back pair and as the median of those paired ratios (the figure to quote from a loaded
machine: load that drifts between pairs hits both runs of a pair alike). The seed is only run, from the
checkout given with ``--seed-path`` (or ``$GANCOLLAPSE_SEED_PATH``); without one its column reads "not
measured" and the script says how to get one.

Where the two differ in what they do (besides the framework): the seed computes D's weight gradients in G's
step (the platform freezes D there), draws a fresh z for G and runs G on it again (the platform reuses D's z
and backpropagates through the G(z) D's step computed), runs D twice (real, fake) where the platform runs it
once on both, reshuffles all 10,000 points before every batch, prints a
tqdm line with two ``.item()`` reads every step, draws its data point by point, and plots 12 frames of 1,000
points. The platform evaluates 10 times on 10,000 points (modes, HQ, reverse KL) and draws 10 frames, a GIF
and final.png, saves a resumable checkpoint every 1,000 optimizer steps and at the end, and logs to CSV.

    git clone https://github.com/ChristophReich1996/Mode_Collapse /tmp/mode_collapse_seed
    python scripts/bench_seed.py --seed-path /tmp/mode_collapse_seed [--repeats 3] [--threads 2]
        [--json out.json] [-- extra gancollapse.train overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

SEED_ARGS = ["--device", "cpu", "--epochs", "125", "--loss", "non-saturating"]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd`` to completion; its wall time and the CPU time (user + sys) of the process and its children."""
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (cwd / "stderr.txt").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode} in {cwd}:\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-path", type=Path, default=os.environ.get("GANCOLLAPSE_SEED_PATH") or None,
                   help="a checkout of github.com/ChristophReich1996/Mode_Collapse (default: $GANCOLLAPSE_SEED_PATH)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="OMP/MKL threads for both processes (default: this machine's torch default)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("overrides", nargs="*", help="extra gancollapse.train overrides (after --)")
    args = p.parse_args()
    if args.threads is None:
        import torch  # only to read its default thread count

        args.threads = torch.get_num_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    src = Path(__file__).resolve().parents[1] / "src"  # this checkout's package, wherever the script runs from
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    seed_main = args.seed_path / "main.py" if args.seed_path else None
    have_seed = seed_main is not None and seed_main.is_file()
    results: dict = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} CPUs", "threads": args.threads, "load_at_start": os.getloadavg()[0],
                     "ours": [], "seed": []}
    with tempfile.TemporaryDirectory(prefix="bench_seed_") as tmp:
        for i in range(args.repeats):
            order = ["ours", "seed"] if i % 2 == 0 else ["seed", "ours"]
            for who in order:
                run_dir = Path(tmp) / f"{who}_{i}"
                if who == "ours":
                    cmd = [sys.executable, "-m", "gancollapse.train", f"hydra.run.dir={run_dir}", *args.overrides]
                elif have_seed:
                    cmd = [sys.executable, str(seed_main), *SEED_ARGS]
                else:
                    continue
                r = timed(cmd, run_dir, env)
                results[who].append(r)
                print(f"run {i + 1}/{args.repeats} {who:5s}: wall {r['wall_s']:7.1f} s, CPU {r['cpu_s']:7.1f} s",
                      flush=True)
    results["load_at_end"] = os.getloadavg()[0]
    print(f"\nthreads {args.threads}; load average {results['load_at_start']:.2f} at the start, "
          f"{results['load_at_end']:.2f} at the end")
    print("| process | wall s (median) | CPU s (median) |")
    print("|---|---|---|")
    for who, label in (("ours", "gancollapse (python -m gancollapse.train)"),
                       ("seed", "seed (main.py " + " ".join(SEED_ARGS) + ")")):
        runs = results[who]
        if runs:
            results[f"{who}_median"] = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s")}
            m = results[f"{who}_median"]
            print(f"| {label} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} |")
        else:
            print(f"| {label} | not measured | not measured |")
    if have_seed and results["ours"]:
        # per repeat: the two runs of one repeat ran back to back under the same load
        per = {k: [s[k] / o[k] for o, s in zip(results["ours"], results["seed"], strict=True)]
               for k in ("wall_s", "cpu_s")}
        results["speedup"] = {k: results["seed_median"][k] / results["ours_median"][k] for k in ("wall_s", "cpu_s")}
        results["speedup_per_repeat"] = per
        # the figure to quote from a loaded machine: the median of the back-to-back pairs' ratios
        results["speedup_median_paired"] = {k: statistics.median(v) for k, v in per.items()}
        mp = results["speedup_median_paired"]
        print(f"\nseed / gancollapse: median of {len(per['wall_s'])} paired ratios: wall {mp['wall_s']:.3f}x, "
              f"CPU {mp['cpu_s']:.3f}x; ratio of medians: wall {results['speedup']['wall_s']:.3f}x, "
              f"CPU {results['speedup']['cpu_s']:.3f}x")
        print("per pair, wall: " + ", ".join(f"{x:.3f}" for x in per["wall_s"])
              + "; CPU: " + ", ".join(f"{x:.3f}" for x in per["cpu_s"]))
    else:
        where = args.seed_path or "(no --seed-path given)"
        print(f"\nseed / gancollapse: not measured: no seed main.py at {where}. Clone "
              "https://github.com/ChristophReich1996/Mode_Collapse (its requirements: torch, numpy, matplotlib, "
              "tqdm) and pass its folder with --seed-path, or set GANCOLLAPSE_SEED_PATH")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
