"""The Python half of ``scripts/bench_gpu.sh``: FID timing, the seeds' own training loops, and the report.

Subcommands (each writes one JSON result; ``bench_gpu.sh`` runs them and then ``report``):

* ``fid``: end-to-end FID of N generated images through the platform's evaluator
  (:class:`gancollapse.metrics.image_callback.ImageEvaluator` ``compute``: generation by a full-width DCGAN-32
  G, Inception-V3 pool3 features at 299², Fréchet distance). The real statistics (the 1,797 embedded digits)
  are computed first and not timed: runs cache them on disk, as this does (default cache folder).
* ``seed-maem``: the MaEM seed's own ``train.py`` training loop (github.com/HaozheLiu-ST/MEE), run unchanged
  through ``runpy`` with the flags of its README (batch B, code 64, 16 outcomes, G every 3rd D step).
  CIFAR-10 is replaced by random uint8 images served exactly as torchvision's ``CIFAR10`` serves them (PIL
  image + the seed's transforms), so no download is needed. Timed through the loop's own ``tqdm`` iterator:
  images/s = B × D steps / s after warm-up. On a CPU, ``.cuda()`` is made a no-op so the loop can run.
* ``seed-toy``: the loss-zoo seed's ``main.py`` (github.com/ChristophReich1996/Mode_Collapse), unchanged, with
  its defaults (ring-8, batch 500, RMSprop, standard loss); G steps/s timed through its per-epoch ``tqdm``
  (20 G steps per epoch), plotting off.
* ``report``: collect the JSON files of a results folder into the markdown table (:func:`markdown_report`).

    python scripts/bench_gpu.py fid --device cuda --n 50000 --json fid.json
    python scripts/bench_gpu.py seed-maem --repo /tmp/MEE --device cuda --batch 64 --steps 300 --json s.json
    python scripts/bench_gpu.py seed-toy --repo /tmp/Mode_Collapse --device cuda --steps 2000 --json t.json
    python scripts/bench_gpu.py report --dir results/ --out bench.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import runpy
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torchvision
import tqdm
from PIL import Image

from gancollapse.data.digits import DigitsDataModule
from gancollapse.losses import HingeLoss
from gancollapse.metrics.fid import FID
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.models.gan import GANModule
from gancollapse.nets.dcgan import DCGAN32Discriminator, DCGAN32Generator


# ---------------------------------------------------------------------------------------------- report (pure)
@dataclass(frozen=True)
class Spec:
    """One row of the report: the issue's target and, where the issue names one, the seed to compare with."""

    key: str
    label: str
    unit: str
    target: float
    higher_is_better: bool
    fmt: str
    has_seed: bool = True


SPECS = (
    Spec("maem_step_b64", "MaEM-GAN full step, DCGAN-32, batch 64", "img/s", 6000, True, "{:,.0f}"),
    Spec("maem_step_b256", "MaEM-GAN full step, DCGAN-32, batch 256", "img/s", 30000, True, "{:,.0f}"),
    Spec("entropy", "MaEM entropy term (fwd + bwd + buffer update), B = 64, d = 64", "ms", 1.0, False, "{:.3g}"),
    Spec("entropy_memory", "MaEM entropy term, peak memory", "GiB", 1.5, False, "{:.3g}"),
    Spec("fid", "FID of generated images, Inception 299², end to end", "s", 15.0, False, "{:.1f}", has_seed=False),
    Spec("toy", "toy ring-8 (batch 500, 4×256 MLPs), G steps", "steps/s", 500, True, "{:,.0f}"),
)


def speedup(ours: float | None, seed: float | None, higher_is_better: bool) -> float | None:
    """How many times better ours is than the seed (time ratios inverted for lower-is-better figures)."""
    if ours is None or seed is None or ours <= 0 or seed <= 0:
        return None
    return ours / seed if higher_is_better else seed / ours


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "–"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "missed"


def _cell(entry: dict | None, fmt: str) -> str:
    if not entry:
        return "not measured (no result)"
    if "value" not in entry:
        return f"not measured ({entry.get('error', 'no result')})"
    return fmt.format(entry["value"])


def _times(r: float | None) -> str:
    if r is None:
        return "–"
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def markdown_report(env: dict[str, Any], results: dict[str, dict[str, dict]]) -> str:
    """The benchmark table: one row per :data:`SPECS` entry with target, ours, the seed, the speed-up over the
    seed and whether the target is met (judged only on a GPU in full mode: the targets are H100 figures).

    ``results[key]`` holds ``"ours"`` and ``"seed"`` entries, each ``{"value": float, ...}`` or
    ``{"error": reason}``; a missing entry reads "not measured (no result)".
    """
    judged = bool(env.get("cuda")) and env.get("mode") == "full"
    head = (f"Device: {env.get('device', '?')} · torch {env.get('torch', '?')} · CUDA {env.get('cuda') or 'none'} · "
            f"{env.get('date', '?')} · mode {env.get('mode', '?')}")
    lines = [head, ""]
    if env.get("machine"):
        lines += [f"Machine: {env['machine']}", ""]
    lines += ["| benchmark | target | gancollapse | seed | gancollapse vs seed | target met |",
              "|---|---|---|---|---|---|"]
    for spec in SPECS:
        res = results.get(spec.key, {})
        ours, seed = res.get("ours"), res.get("seed")
        label = spec.label + (f" ({res['note']})" if res.get("note") else "")
        target = f"{'≥' if spec.higher_is_better else '≤'} {spec.fmt.format(spec.target)} {spec.unit}"
        ours_v = ours.get("value") if ours else None
        seed_v = seed.get("value") if seed else None
        seed_cell = _cell(seed, spec.fmt) if spec.has_seed else "n/a"
        ratio = _times(speedup(ours_v, seed_v, spec.higher_is_better)) if spec.has_seed else "–"
        met = verdict(ours_v, spec.target, spec.higher_is_better) if judged else ("–" if ours_v is None else "n/a (not a GPU run)")
        lines.append(f"| {label} | {target} | {_cell(ours, spec.fmt)} | {seed_cell} | {ratio} | {met} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- collecting
def _load(path: Path) -> dict | None:
    if not path.is_file():
        err = path.with_suffix(".err")
        return {"error": err.read_text().strip().splitlines()[-1][:80] or "failed"} if err.is_file() else None
    return json.loads(path.read_text())


def _train_rows(data: dict | None, batch: int) -> dict | None:
    if data is None or "error" in data:
        return data
    rows = [r for r in data.get("results", []) if r["batch"] == batch]
    if not rows:
        return {"error": "no result"}
    best = max(rows, key=lambda r: r["images_per_s"])  # eager or compiled, whichever is faster
    return {"value": best["images_per_s"], "compile": best["compile"], "channels_last": best["channels_last"],
            "precision": best["precision"]}


def _first(*entries: dict | None) -> dict | None:
    """The first entry holding a value, else the first with an error."""
    valued = [e for e in entries if e and "value" in e]
    return valued[0] if valued else next((e for e in entries if e), None)


def collect(folder: Path) -> dict[str, dict]:
    """Read the JSON files ``bench_gpu.sh`` leaves in ``folder`` (``<name>.err`` holds why one is missing)."""
    out: dict[str, dict] = {}
    eager, compiled = _load(folder / "maem_step.json"), _load(folder / "maem_step_compiled.json")
    for batch in (64, 256):
        ours = _best(_train_rows(eager, batch), _train_rows(compiled, batch))
        seed = _load(folder / f"seed_maem_b{batch}.json")
        out[f"maem_step_b{batch}"] = {"ours": ours, "seed": _value(seed, "images_per_s")}
    ent = _load(folder / "entropy.json")
    if ent is not None and "error" not in ent:
        rows = {r["form"]: r for r in ent.get("entropy", []) if "median_ms" in r}
        size = next(iter(rows.values()), {}).get("S")

        def pick(form: str, key: str, scale: float = 1.0) -> dict:
            r = rows.get(form)
            return {"value": r[key] * scale} if r else {"error": "failed"}

        note = f"S = {size:,}" if size else None
        out["entropy"] = {"ours": pick("ours", "median_ms"), "seed": pick("broadcast", "median_ms"), "note": note}
        out["entropy_memory"] = {"ours": pick("ours", "peak_mib", 2**-10), "seed": pick("broadcast", "peak_mib", 2**-10),
                                 "note": note}
    else:
        out["entropy"] = out["entropy_memory"] = {"ours": ent, "seed": ent}
    fid = _load(folder / "fid.json")
    out["fid"] = {"ours": _value(fid, "seconds"), "note": f"N = {fid['n']:,}" if fid and "n" in fid else None}
    toy = _load(folder / "toy.json")
    if toy is not None and "error" not in toy:
        toy = {"value": max(r["lightning_steps_s"] for r in toy["rows"]), "steps": toy["rows"][0].get("steps")}
    seed_toy = _load(folder / "seed_toy.json")
    steps = (toy or {}).get("steps")
    out["toy"] = {"ours": toy, "seed": _value(seed_toy, "steps_per_s"),
                  "note": f"{steps:,} G steps" if steps else None}
    return out


def _best(*entries: dict | None) -> dict | None:
    valued = [e for e in entries if e and "value" in e]
    return max(valued, key=lambda e: e["value"]) if valued else _first(*entries)


def _value(data: dict | None, key: str) -> dict | None:
    if data is None or "error" in data:
        return data
    return {**data, "value": data[key]}


def environment(mode: str) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {"device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None, "date": date.today().isoformat(),
            "mode": mode, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}"}


# ---------------------------------------------------------------------------------------------- FID
def run_fid(device: str, n: int, n_real: int, batch_size: int) -> dict:
    """Seconds for ``ImageEvaluator.compute`` (generate n, Inception features, FID) after an untimed setup."""
    torch.manual_seed(0)
    module = GANModule(DCGAN32Generator(128), DCGAN32Discriminator(), HingeLoss(), z_dim=128).to(device)
    dm = DigitsDataModule(img_size=32, channels=3)
    with tempfile.TemporaryDirectory() as tmp:
        ev = ImageEvaluator(n_samples=n, n_real=n_real, feature="inception", grid_size=0, batch_size=batch_size,
                            metrics={"fid": FID()})
        ev.setup(SimpleNamespace(default_root_dir=tmp, datamodule=dm), module, "fit")
        ev._prepare(torch.device(device))  # extractor + real statistics: cached on disk in real runs
        with torch.no_grad():  # first-call costs (cuDNN plans, allocator) are not the metric's
            ev._extractor(module.generate(min(batch_size, n)))
        _sync(device)
        t0 = time.perf_counter()
        metrics = ev.compute(module)
        _sync(device)
        seconds = time.perf_counter() - t0
    return {"n": n, "n_real": n_real, "batch_size": batch_size, "seconds": seconds, "images_per_s": n / seconds,
            "fid": metrics["fid"], "device": _device_name(device)}


# ---------------------------------------------------------------------------------------------- seed loops
class _Done(Exception):
    """Raised from inside a seed's loop once enough steps were timed."""


class TimedProgress:
    """Stands in for ``tqdm.tqdm`` inside a seed script: a silent progress bar that timestamps either each
    item it yields (``every="item"``) or each ``update`` call (``every="update"``) and stops the script after
    ``warmup + steps`` of them."""

    def __init__(self, device: str, warmup: int, steps: int, every: str) -> None:
        self.device, self.warmup, self.steps, self.every = device, warmup, steps, every
        self.count, self.t0, self.t1 = 0, None, None

    def _tick(self) -> None:
        if self.count == self.warmup:
            _sync(self.device)
            self.t0 = time.perf_counter()
        elif self.count == self.warmup + self.steps:
            _sync(self.device)
            self.t1 = time.perf_counter()
            raise _Done
        self.count += 1

    def factory(self, iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        timer = self

        class Bar:
            def __iter__(self):
                for item in iterable:
                    if timer.every == "item":
                        timer._tick()
                    yield item

            def update(self, n: int = 1) -> None:
                if timer.every == "update":
                    timer._tick()

            def set_description(self, *a: Any, **k: Any) -> None:
                pass

            def set_postfix_str(self, *a: Any, **k: Any) -> None:
                pass

            def close(self) -> None:
                pass

        return Bar()


class FakeCIFAR10(torch.utils.data.Dataset):
    """Random uint8 images served as torchvision's CIFAR10 serves its array (``Image.fromarray`` + transform)."""

    size = 50_000

    def __init__(self, root: str, train: bool = True, download: bool = False, transform: Any = None, **_: Any) -> None:
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, (self.size, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, self.size).tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = Image.fromarray(self.data[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


def _run_seed_script(repo: Path, script: str, argv: list[str], timer: TimedProgress, device: str) -> None:
    if device == "cpu":  # the seeds call .cuda() unconditionally
        torch.Tensor.cuda = lambda self, *a, **k: self
        torch.nn.Module.cuda = lambda self, *a, **k: self
    tqdm.tqdm = timer.factory  # the scripts do `from tqdm import *` / `from tqdm import tqdm`
    sys.argv = [script, *argv]
    sys.path.insert(0, str(repo))
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        runpy.run_path(str(repo / script), run_name="__main__")
    except _Done:
        pass
    finally:
        os.chdir(cwd)
    if timer.t1 is None:
        raise RuntimeError(f"{script} ended after {timer.count} timed events, before warmup + steps")


def run_seed_maem(repo: Path, device: str, batch: int, steps: int, warmup: int) -> dict:
    FakeCIFAR10.size = max(1, math.ceil((warmup + steps + 2) * batch / 2))  # train + test are concatenated
    torchvision.datasets.CIFAR10 = FakeCIFAR10
    timer = TimedProgress(device, warmup, steps, "item")
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--lr", "1e-4", "--code_length", "64", "--outcomes", "16", "--epoch", "1800", "--batch_size", str(batch),
                "--G_split_num", "3", "--beta1", "0.0", "--beta2", "0.999", "--entropy_lr", "5e-4",
                "--model_dir", tmp, "--image_dir", tmp, "--data_path", tmp]
        _run_seed_script(repo, "train.py", argv, timer, device)
    seconds = timer.t1 - timer.t0
    return {"seed": "HaozheLiu-ST/MEE train.py", "batch": batch, "d_steps": steps, "seconds": seconds,
            "images_per_s": batch * steps / seconds, "device": _device_name(device)}


def run_seed_toy(repo: Path, device: str, steps: int, warmup_epochs: int = 2) -> dict:
    per_epoch = 10_000 // 500  # the seed's defaults: 10,000 samples, batch 500, one G step per batch
    epochs = max(1, math.ceil(steps / per_epoch))
    timer = TimedProgress(device, warmup_epochs, epochs, "update")
    argv = ["--device", device, "--epochs", str(warmup_epochs + epochs + 1), "--plot_frequency", "1000000000"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MPLCONFIGDIR", tmp)
        _run_seed_script(repo, "main.py", argv, timer, device)
    seconds = timer.t1 - timer.t0
    return {"seed": "ChristophReich1996/Mode_Collapse main.py", "g_steps": epochs * per_epoch, "seconds": seconds,
            "steps_per_s": epochs * per_epoch / seconds, "device": _device_name(device)}


# ---------------------------------------------------------------------------------------------- helpers & CLI
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    fid = sub.add_parser("fid")
    fid.add_argument("--n", type=int, default=50_000)
    fid.add_argument("--n-real", type=int, default=1797)
    fid.add_argument("--batch-size", type=int, default=500)
    sm = sub.add_parser("seed-maem")
    sm.add_argument("--batch", type=int, default=64)
    sm.add_argument("--steps", type=int, default=300)
    sm.add_argument("--warmup", type=int, default=30)
    st = sub.add_parser("seed-toy")
    st.add_argument("--steps", type=int, default=2000)
    for s in (sm, st):
        s.add_argument("--repo", type=Path, required=True, help="a clone of the seed repository")
    for s in (fid, sm, st):
        s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
        s.add_argument("--json", type=Path, required=True)
    rep = sub.add_parser("report")
    rep.add_argument("--dir", type=Path, required=True)
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--mode", default="full")
    args = p.parse_args()
    if args.what == "report":
        env, results = environment(args.mode), collect(args.dir)
        args.out.write_text(markdown_report(env, results))
        args.out.with_suffix(".json").write_text(json.dumps({"env": env, "results": results}, indent=2))
        print(args.out.read_text())
        return
    if args.what == "fid":
        row = run_fid(args.device, args.n, args.n_real, args.batch_size)
    elif args.what == "seed-maem":
        row = run_seed_maem(args.repo.resolve(), args.device, args.batch, args.steps, args.warmup)
    else:
        row = run_seed_toy(args.repo.resolve(), args.device, args.steps)
    args.json.write_text(json.dumps(row, indent=2))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
