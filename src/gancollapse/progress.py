"""One run-level progress bar in generator steps, and one line per evaluation.

Lightning's own bars count batches within an epoch (``Epoch 124/-2`` for a run bounded by ``max_g_steps``).
:class:`RunProgress` counts the run instead:

* runs bounded by ``max_g_steps`` (the :class:`~gancollapse.callbacks.MaxGSteps` callback): G steps of
  ``max_g_steps``;
* epoch-length runs (``trainer.max_epochs``, e.g. MBRCE-AAE): batches of ``max_epochs × batches per epoch``
  (re-estimated at each epoch start, since progressive runs change the batch size per lod), with the
  current epoch and, when the module has one, its ``lod``.

On a terminal it draws a rich bar with rate, elapsed time and ETA; when stdout is not a terminal (a log
redirected to a file, a Slurm job) it prints plain lines without ANSI codes every ``print_every_s`` seconds.
After each evaluation (:meth:`gancollapse.metrics.evaluator.Evaluator.evaluate` calls :meth:`on_evaluation`)
it prints one line with the headline metrics: modes, HQ, KL or FID, KID.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gancollapse.callbacks import MaxGSteps
from gancollapse.models.contract import Generative, Progressive
from gancollapse.runio import LAST

MODES = ("auto", "rich", "plain")


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    return str(dt.timedelta(seconds=round(seconds)))


def _num(v: float, digits: int = 3) -> str:
    return "nan" if math.isnan(v) else f"{v:.{digits}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def format_eval(metrics: Mapping[str, float], monitor: str | None = None) -> str:
    """The headline metrics of one evaluation, e.g. ``modes 8/8 · HQ 91.2% · KL 0.012`` (toys) or
    ``FID 23.4 · KID 0.0123 ± 0.0011 · modes 987 · KL 0.31`` (images); other evaluators (e.g. reconstruction
    FID) show their first few metrics. ``monitor`` adds the best value so far (``best fid 20.1 @ 800``)."""
    m = {k: float(v) for k, v in metrics.items()}
    parts: list[str] = []
    if "fid" in m:
        parts.append(f"FID {_num(m['fid'], 2)}")
    if "kid" in m:
        parts.append(f"KID {_num(m['kid'], 4)}" + (f" ± {_num(m['kid_std'], 2)}" if "kid_std" in m else ""))
    if "is" in m:
        parts.append(f"IS {_num(m['is'], 2)}")
    for prefix in ("toy/", ""):
        if f"{prefix}modes" in m:
            total = m.get(f"{prefix}n_modes")
            parts.append(f"modes {m[f'{prefix}modes']:.0f}" + (f"/{total:.0f}" if total is not None else ""))
            break
    if "toy/hq_fraction" in m:
        parts.append(f"HQ {100 * m['toy/hq_fraction']:.1f}%")
    for key in ("toy/reverse_kl", "kl_uniform"):
        if key in m:
            parts.append(f"KL {_num(m[key])}")
            break
    if not parts:  # an evaluator with other metrics (e.g. recon/fid): its first few, bookkeeping aside
        rest = [k for k in m if not k.endswith(("/g_step", "/seconds")) and not k.startswith("best/")]
        parts = [f"{k} {_num(m[k])}" for k in rest[:4]]
    if monitor and f"best/{monitor}" in m:
        step = m.get(f"best/{monitor}_step")
        parts.append(f"best {monitor} {_num(m[f'best/{monitor}'], 3)}" + (f" @ {step:.0f}" if step is not None else ""))
    seconds = next((v for k, v in m.items() if k.endswith("/seconds")), None)
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    return " · ".join(parts)


class RunProgress(ProgressBar):
    """The run's progress in G steps (or batches of an epoch-length run), and a line per evaluation.

    Args:
        refresh_rate: redraw the terminal bar every N batches.
        print_every_s: when stdout is not a terminal, a plain progress line at most every this many seconds
            (0: every ``refresh_rate`` batches); the first and the last step are always printed.
        mode: ``auto`` (rich bar on a terminal or notebook, plain lines otherwise), ``rich`` or ``plain``.
    """

    def __init__(self, refresh_rate: int = 10, print_every_s: float = 30.0, mode: str = "auto") -> None:
        super().__init__()
        if int(refresh_rate) < 1:
            raise ValueError(f"callbacks.progress_bar.refresh_rate must be >= 1, got {refresh_rate}")
        if float(print_every_s) < 0:
            raise ValueError(f"callbacks.progress_bar.print_every_s must be >= 0, got {print_every_s}")
        if mode not in MODES:
            raise ValueError(f"callbacks.progress_bar.mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.refresh_rate, self.print_every_s, self.mode = int(refresh_rate), float(print_every_s), mode
        self._enabled = True
        self._progress: Progress | None = None
        self._task: Any = None
        self._total: int | None = None
        self._unit = "G step"
        self._start: tuple[float, int] | None = None  # (time, count) when this attempt started
        self._last_print = -math.inf
        self._batches = 0

    # ------------------------------------------------------------------ ProgressBar API
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs, flush=True)

    # ------------------------------------------------------------------ counting
    def use_rich(self) -> bool:
        if self.mode != "auto":
            return self.mode == "rich"
        console = Console(file=sys.stdout)
        return console.is_terminal or console.is_jupyter

    def _max_g_steps(self, trainer: L.Trainer) -> int | None:
        return next((cb.max_g_steps for cb in trainer.callbacks if isinstance(cb, MaxGSteps)), None)

    def count(self, trainer: L.Trainer, pl_module: L.LightningModule) -> int:
        """G steps done (G-step runs) or batches done over the whole run (epoch-length runs)."""
        if self._unit == "G step":
            return int(getattr(pl_module, "g_steps", 0))
        return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)

    def _estimate_total(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch_start: bool = False) -> int | None:
        max_g = self._max_g_steps(trainer)
        if max_g is not None or not isinstance(pl_module, Generative):
            self._unit = "G step"
            return max_g
        self._unit = "batch"
        per_epoch = trainer.num_training_batches
        if not trainer.max_epochs or trainer.max_epochs < 0 or not math.isfinite(per_epoch):
            return None
        # batches already done plus the remaining epochs at this epoch's length; at an epoch start the
        # in-epoch counter still holds the previous epoch's, so it only counts at the (resumed) train start
        done_before = self.count(trainer, pl_module)
        if not epoch_start:
            done_before -= trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return int(done_before + (trainer.max_epochs - trainer.current_epoch) * per_epoch)

    def context(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """Epoch and lod of epoch-length runs, and the latest losses on the bar."""
        parts = []
        if self._unit == "batch":
            parts.append(f"epoch {min(trainer.current_epoch + 1, trainer.max_epochs)}/{trainer.max_epochs}")
            if isinstance(pl_module, Progressive):
                parts.append(f"lod {int(pl_module.lod)}")
        for k, v in trainer.progress_bar_metrics.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                parts.append(f"{k} {v:.3f}")
        return " · ".join(parts)

    @property
    def units(self) -> str:
        return "batches" if self._unit == "batch" else "G steps"

    def rate(self, count: int) -> float | None:
        """Units per second since this attempt started (a resumed run does not count restored steps)."""
        if self._start is None:
            return None
        t0, c0 = self._start
        elapsed = time.monotonic() - t0
        return (count - c0) / elapsed if elapsed > 0 and count > c0 else None

    def line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """The plain progress line: ``G step 120/2500 (4.8%) · 35.1 G steps/s · elapsed 0:00:03 · ETA 0:01:07``."""
        n = self.count(trainer, pl_module)
        rate = self.rate(n)
        head = f"{self._unit} {n}/{self._total} ({100 * n / self._total:.1f}%)" if self._total else f"{self._unit} {n}"
        eta = (self._total - n) / rate if rate and self._total else None
        elapsed = time.monotonic() - self._start[0] if self._start else 0.0
        parts = [head, f"{rate:.2f} {self.units}/s" if rate else f"-- {self.units}/s",
                 f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
        ctx = self.context(trainer, pl_module)
        return " · ".join(parts + ([ctx] if ctx else []))

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        self._total = self._estimate_total(trainer, pl_module)
        n = self.count(trainer, pl_module)
        self._start, self._last_print, self._batches = (time.monotonic(), n), -math.inf, 0
        if self.use_rich():
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[ctx]}"), console=Console(file=sys.stdout), auto_refresh=False,
                transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self._unit, total=self._total, completed=n, rate="", ctx="")
        else:
            self.print(self.line(trainer, pl_module))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled and self._unit == "batch" and self._start is not None and self._batches:
            self._total = self._estimate_total(trainer, pl_module, epoch_start=True)
            if self._progress is not None:
                self._progress.update(self._task, total=self._total)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if not self._enabled or self._start is None:
            return
        self._batches += 1
        if self._batches % self.refresh_rate:
            return
        self._show(trainer, pl_module)

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule, final: bool = False) -> None:
        n = self.count(trainer, pl_module)
        if self._progress is not None:
            rate = self.rate(n)
            self._progress.update(self._task, completed=n, rate=f"{rate:.1f} {self.units}/s" if rate else "",
                                  ctx=self.context(trainer, pl_module))
            self._progress.refresh()
            return
        now = time.monotonic()
        if final or now - self._last_print >= self.print_every_s:
            self._last_print = now
            self.print(self.line(trainer, pl_module))

    def on_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: Mapping[str, float],
                      monitor: str | None = None) -> None:
        """One line per evaluation (called by the evaluators after they publish their metrics)."""
        if not self._enabled or not trainer.is_global_zero:
            return
        n = int(getattr(pl_module, "g_steps", 0))
        where = f"G step {n}/{self._total}" if self._unit == "G step" and self._total else f"G step {n}"
        self.print(f"eval @ {where}: {format_eval(metrics, monitor)}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or self._start is None:
            return
        self._show(trainer, pl_module, final=True)
        self._stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# ---------------------------------------------------------------------------- the closing printout
#: the metrics a run's closing printout shows first (image and mode-counted runs), then the namespaced ones
HEADLINE_METRICS = ("fid", "kid", "modes", "kl_uniform", "is", "precision", "recall", "density", "coverage")


#: namespaced metrics that are bookkeeping, not results
_BOOKKEEPING = ("/seconds", "/g_step", "_step", "/lod")


def is_headline_metric(key: str, value: Any) -> bool:
    """A result worth the closing printout: a headline image metric (FID, KID, modes, KL, ...; any suffixed
    per-sampler variant) or a namespaced metric (toy/modes, recon/psnr, best/fid), not a timing or step."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    base = key.split("@", 1)[0]
    if base in HEADLINE_METRICS or base.rsplit("_", 1)[0] in HEADLINE_METRICS:
        return True
    return "/" in key and not key.endswith(_BOOKKEEPING)


def closing_lines(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """What a finished (or stopped) run prints: where its outputs are and its headline numbers."""
    status = summary.get("status", "finished")
    lines = [f"Run directory: {run_dir}", f"  {'summary:':<12} {run_dir / 'summary.json'}",
             f"  {'metrics:':<12} {run_dir / 'metrics.csv'}"]
    ckpts = [name for name in (LAST, "best.ckpt") if (run_dir / "checkpoints" / name).is_file()]
    if ckpts:
        lines.append(f"  {'checkpoints:':<12} {run_dir / 'checkpoints'} ({', '.join(ckpts)})")
    if (run_dir / "plots").is_dir():
        lines.append(f"  {'plots:':<12} {run_dir / 'plots'} (training.gif, final.png)")
    if (run_dir / "samples").is_dir():
        lines.append(f"  {'samples:':<12} {run_dir / 'samples'}")
    lines.append(f"  {'report:':<12} python -m gancollapse.report {run_dir}")
    shown = {k: v for k, v in summary.items() if is_headline_metric(k, v)}
    if shown:
        lines.append("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    lines.append(f"  {status}: g_steps={summary.get('g_steps')}, nonfinite_skips={summary.get('nonfinite_skips')}")
    return lines

