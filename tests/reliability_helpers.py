"""Helpers of the reliability tests (tests/test_reliability_*.py): command-line runs as real processes that
real signals stop, and comparisons of whole checkpoints.

Starting ``python -m gancollapse.train`` costs ~8 s of imports per process (more on a loaded machine), and the
kill tests start a dozen. So the processes fork from a multiprocessing *forkserver* that imported
gancollapse once: each child is a separate process (its own pid, signals, files, exit status) that runs the
module as ``python -m`` does (``runpy``, ``__main__``), with stdout and stderr to a log file.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import runpy
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

import gancollapse.train  # noqa: F401  (preloaded by the forkserver)
from tests.conftest import TINY

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

# Tiny toy runs: 10 batches per epoch (TOY_QUIET: no evaluator); TOY's evaluator scores 500 points every 100 G
# steps (metric rows to compare).
TOY_QUIET = [*TINY, "evaluator=none"]
TOY = [*TOY_QUIET[:-1], "evaluator.every_n_steps=100", "evaluator.n_samples=500", "evaluator.frames=false"]
# Tiny DCGAN-32 on the embedded digits (56 batches of 32 per epoch), no evaluator (cheaper; evaluations run on a
# fork of the RNG and would not change the comparison, docs/RELIABILITY.md 5b).
DIGITS = ["dataset=digits", "model.generator.base=8", "model.discriminator.base=8", "dataset.batch_size=32",
          "evaluator=none", "callbacks.progress_bar=null", "log_every_n_steps=5"]
# What differs between two identical runs: wall-clock time.
VOLATILE = ("train_seconds",)

_CTX: Any = None


def _context() -> Any:
    global _CTX
    if _CTX is None:
        _CTX = multiprocessing.get_context("forkserver")
        _CTX.set_forkserver_preload([__name__])
    return _CTX


def _child(module: str, argv: list[str], log: str, env: Mapping[str, str | None]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.set_num_threads(1)
    # `python -m` would import the module only now; here the forkserver has it already (harmless)
    warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)  # as `python -m <module>` (imports are cached)


class Job:
    """``python -m <module> <args>`` as a forked process; ``HYDRA_FULL_ERROR`` is unset unless ``env`` sets it."""

    def __init__(self, args: list[str], log: Path, module: str = "gancollapse.train",
                 env: Mapping[str, str | None] | None = None) -> None:
        self.log = Path(log)
        env = {"HYDRA_FULL_ERROR": None, **(env or {})}
        self.proc = _context().Process(target=_child, args=(module, [str(a) for a in args], str(self.log), env))
        self.proc.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 180) -> int:
        """The exit status (negative: killed by that signal)."""
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join()
            raise TimeoutError(f"{self.log} ran past {timeout} s:\n{self.output()[-3000:]}")
        return self.proc.exitcode

    def output(self) -> str:
        return self.log.read_text() if self.log.is_file() else ""


def cli(args: list[str], log: Path, module: str = "gancollapse.train", timeout: float = 180,
        env: Mapping[str, str | None] | None = None) -> tuple[int, str]:
    job = Job(args, log, module, env)
    code = job.wait(timeout)
    return code, job.output()


def wait_until(condition: Callable[[], bool], timeout: float = 120, job: Job | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and not job.proc.is_alive():
            raise AssertionError(f"the run ended before the condition held:\n{job.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout} s")
        time.sleep(0.01)


def mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.is_file() else 0


def checkpoint(run_dir: Path, name: str = "last.ckpt") -> dict[str, Any]:
    return torch.load(Path(run_dir) / "checkpoints" / name, map_location="cpu", weights_only=True)


def differences(a: Any, b: Any, key: str = "") -> list[str]:
    """Where two checkpoints (nested dicts/lists of tensors and values) differ; tensors must be bit-equal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k in VOLATILE:
                continue
            if k not in a or k not in b:
                out.append(f"{key}.{k}: only in one")
            else:
                out += differences(a[k], b[k], f"{key}.{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{key}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{key}[{i}]")]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [key]
    return [] if a == b else [f"{key}: {a!r} != {b!r}"]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its wall-clock columns (``*seconds``)."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in csv.DictReader(f)]
