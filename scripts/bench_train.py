"""Benchmark: images/s of a DCGAN-32 hinge-loss training step (one D step + one G step per batch).

Times the platform path (``GANModule`` under the Lightning ``Trainer``, as ``python -m gancollapse.train``
runs it, evaluator off) on 32×32 RGB images (sklearn digits resized, so no download) at batch 64 and 256,
on CPU and, when CUDA is available, on GPU with the dataset held on the device (``dataset.on_device``),
fused Adam (``optim.*.fused=true``) and optionally ``torch.compile`` of both nets. images/s = real images
consumed per second (= batch × D steps / s; with n_critic=1 each D step is followed by a G step).

    python scripts/bench_train.py [--device cpu|cuda|all] [--batches 64 256] [--steps 30] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from gancollapse.build import build_datamodule, build_module
from gancollapse.callbacks import MaxGSteps
from gancollapse.train import CONF_DIR


class StepTimer(L.Callback):
    """Wall time of D steps after ``warmup`` steps, with a device sync at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1, self.steps = warmup, None, None, 0

    def _sync(self, pl_module) -> None:  # noqa: ANN001
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.d_steps == self.warmup:
            self._sync(pl_module)
            self.t0 = time.perf_counter()
        elif pl_module.d_steps > self.warmup:
            self.steps = pl_module.d_steps - self.warmup

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._sync(pl_module)
        self.t1 = time.perf_counter()


def bench(device: str, batch: int, steps: int, warmup: int, compile_nets: bool) -> dict:
    cuda = device == "cuda"
    overrides = [
        "dataset=digits", "dataset.channels=3", "++dataset.repeat=20", f"dataset.batch_size={batch}", f"dataset.on_device={cuda}",
        "dataset.evaluator=null", "dataset.monitor=null", "model=dcgan32", "loss=hinge", "optim=adam",
        "z_dim=128", "logger=none", "callbacks.progress_bar=null", "log_every_n_steps=1000000",
        f"trainer={'gpu' if cuda else 'cpu'}",
    ]
    if cuda:
        overrides += ["++optim.generator.fused=true", "++optim.discriminator.fused=true"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg)
    if compile_nets:
        module.generator = torch.compile(module.generator)
        module.discriminator = torch.compile(module.discriminator)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=10_000, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer, MaxGSteps(warmup + steps)])
    trainer.fit(module, datamodule=dm)
    seconds = timer.t1 - timer.t0
    return {"device": device, "batch": batch, "compile": compile_nets, "steps": timer.steps, "seconds": round(seconds, 3),
            "images_per_s": round(timer.steps * batch / seconds, 1), "steps_per_s": round(timer.steps / seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--steps", type=int, default=None, help="timed D steps (default: 20 on CPU, 300 on GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed D steps first (default: 3 CPU, 30 GPU)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd nets (GPU)")
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
        for compile_nets in ([False, True] if args.compile and gpu else [False]):
            for batch in args.batches:
                row = bench(device, batch, steps, warmup, compile_nets)
                rows.append(row)
                print(json.dumps(row))
    info = {"date": date.today().isoformat(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "results": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
