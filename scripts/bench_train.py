"""Benchmark: images/s of a DCGAN-32 training step through the platform's Lightning path.

Two presets, both on 32×32 RGB images (sklearn digits resized and tiled, so no download), evaluator off:

* ``hinge``: hinge loss, Adam, one D step + one G step per batch (full-width DCGAN-32: G 512/256/128 with BN,
  D 128/256/512, z 128).
* ``maem``: the full MaEM-GAN step of ``experiment=maem_cifar10`` (MaF + DLLE + DIsoMap + RB-MaEM entropy on
  both sides at full σ, stochastic spectral-norm D with a 16-d code, n_critic 3 with G reusing D's z, z 64).

``GANModule`` runs under the Lightning ``Trainer`` as ``python -m gancollapse.train`` runs it. On a GPU the
set is held on the device (``dataset.on_device``) and Adam is fused; ``--compile`` (mode ``reduce-overhead``
unless given: CUDA graphs), ``--channels-last`` and ``--precision bf16-mixed`` are the platform's switches.
images/s = real images consumed per second = batch × D steps / s, timed after warm-up steps.
``--profile FILE`` writes a torch.profiler table of the timed steps.

    python scripts/bench_train.py [--device cpu|cuda|all] [--preset hinge|maem] [--batches 64 256]
        [--steps 30] [--warmup 3] [--compile [MODE]] [--channels-last] [--precision bf16-mixed]
        [--profile prof.txt] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from gancollapse.build import build_module
from gancollapse.callbacks import MaxGSteps
from gancollapse.instantiate import build_datamodule
from gancollapse.paths import CONF_DIR

PRESETS = {
    "hinge": ["dataset=digits", "model=dcgan32", "loss=hinge", "optim=adam", "z_dim=128"],
    # experiment=maem_cifar10 on the embedded digits; σ at full weight so the entropy term's cost is measured
    "maem": ["experiment=maem_cifar10", "dataset=digits", "~dataset.train_test", "regularizer.maem.ramp_epochs=0"],
}


def overrides_for(preset: str, device: str, batch: int, channels_last: bool = False,
                  compile_mode: str | None = None) -> list[str]:
    """Hydra overrides of one benchmark configuration."""
    cuda = device == "cuda"
    out = [*PRESETS[preset], "dataset.channels=3", "dataset.img_size=32", "++dataset.repeat=20",
           f"dataset.batch_size={batch}", f"dataset.on_device={cuda}", "evaluator=none", "logger=none",
           "callbacks.progress_bar=null", "log_every_n_steps=1000000", f"trainer={'gpu' if cuda else 'cpu'}",
           # fused Adam skips non-finite steps on the device and never reads its step counter back
           "++optim.generator.fused=true", "++optim.discriminator.fused=true", f"channels_last={channels_last}"]
    if compile_mode:
        out.append(f"compile={compile_mode}")
    return out


class StepTimer(L.Callback):
    """Wall time of D steps after ``warmup`` steps, with a device sync at both ends; optionally profiles them."""

    def __init__(self, warmup: int, profile_to: Path | None = None) -> None:
        self.warmup, self.t0, self.t1, self.steps = warmup, None, None, 0
        self.profile_to, self._prof = profile_to, None

    def _sync(self, pl_module) -> None:  # noqa: ANN001
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.d_steps == self.warmup:
            self._sync(pl_module)
            if self.profile_to is not None:
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pl_module.device.type == "cuda" else [])
                self._prof = profile(activities=acts, record_shapes=False)
                self._prof.__enter__()
            self.t0 = time.perf_counter()
        elif pl_module.d_steps > self.warmup:
            self.steps = pl_module.d_steps - self.warmup

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._sync(pl_module)
        self.t1 = time.perf_counter()
        if self._prof is not None:
            self._prof.__exit__(None, None, None)
            key = "self_cuda_time_total" if pl_module.device.type == "cuda" else "self_cpu_time_total"
            self.profile_to.write_text(self._prof.key_averages().table(sort_by=key, row_limit=30))


def bench(device: str, batch: int, steps: int, warmup: int, preset: str = "hinge", compile_mode: str | None = None,
          channels_last: bool = False, precision: str = "32-true", profile_to: Path | None = None) -> dict:
    cuda = device == "cuda"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides_for(preset, device, batch, channels_last, compile_mode))
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    timer = StepTimer(warmup, profile_to)
    g_steps = math.ceil((warmup + steps) / int(cfg.n_critic))
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=100_000, logger=False,
                        precision=precision, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[timer, MaxGSteps(g_steps)])
    trainer.fit(module, datamodule=dm)
    seconds = timer.t1 - timer.t0
    return {"preset": preset, "device": device if not cuda else torch.cuda.get_device_name(), "batch": batch,
            "compile": compile_mode or False, "channels_last": channels_last, "precision": precision,
            "steps": timer.steps, "seconds": round(seconds, 3), "images_per_s": round(timer.steps * batch / seconds, 1),
            "d_steps_per_s": round(timer.steps / seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--preset", choices=sorted(PRESETS), default="hinge")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=None, help="timed D steps (default: 20 on CPU, 300 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed D steps first (default: 3 CPU, 30 GPU)")
    p.add_argument("--compile", nargs="?", const="reduce-overhead", default=None, metavar="MODE",
                   help="also time both nets under torch.compile (GPU; default mode reduce-overhead)")
    p.add_argument("--only-compiled", action="store_true", help="with --compile: skip the eager rows")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    p.add_argument("--profile", type=Path, default=None, help="torch.profiler table of the last configuration")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA not available: GPU benchmark skipped")
        devices.remove("cuda")
    rows = []
    for device in devices:
        gpu = device == "cuda"
        steps = args.steps or (300 if gpu else 20)
        warmup = args.warmup or (30 if gpu else 3)
        modes = [None] if not args.compile else ([args.compile] if args.only_compiled else [None, args.compile])
        for mode in modes:
            for batch in args.batches:
                row = bench(device, batch, steps, warmup, args.preset, mode, args.channels_last, args.precision,
                            args.profile)
                rows.append(row)
                print(json.dumps(row), flush=True)
    info = {"date": date.today().isoformat(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "results": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
