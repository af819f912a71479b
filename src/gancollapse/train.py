"""Entry point: ``python -m gancollapse.train [overrides]`` (Hydra main, ``conf/train.yaml``).

Rerunning with the same run directory (``hydra.run.dir=<dir>``) resumes from ``checkpoints/last.ckpt`` where
the run stopped, bit-identically on one CPU; what a run survives (kills, signals, bad input) and what it
does not is docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import signal
import socket
import sys
import urllib.error
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gancollapse.aggregate import flatten, objective_value
from gancollapse.build import build_datamodule, build_module
from gancollapse.build import instantiate_checked as instantiate
from gancollapse.callbacks import (
    MaxGSteps,
    RunGuard,
    RunSummary,
    StopTraining,
    can_handle_signals,
    stop_before_training,
)
from gancollapse.paths import CONF_DIR
from gancollapse.runio import (
    LAST,
    PREV,
    AtomicCheckpointIO,
    RunError,
    RunLock,
    atomic_write_text,
    check_writable,
    clean_stale_temps,
    one_line,
    one_line_errors,
    truncate_metrics,
)

log = logging.getLogger("gancollapse")
#: the run's record in <run dir>/train.log only (conf/train.yaml's hydra.job_logging): its start and the closing
#: printout, which stdout already shows
record = logging.getLogger("gancollapse.run")

# Lightning warnings that are expected in this setup and would only confuse: losses are logged by the module
# (not through Trainer.log_every_n_steps), checkpoints are resumed explicitly, and the tips are adverts.
for _pattern in (".*smaller than the logging interval.*", ".*no last checkpoint available.*", ".*LeafSpec.*",
                 ".*was called without a model.*", ".*does not have many workers.*", ".*weights_only.*",
                 ".*Using ModelCheckpoint with manual optimization.*",
                 # best.ckpt's monitor is logged at evaluations only (the AAE's FID: at the top lod only)
                 ".*could not find the monitored key.*",
                 # EMA copies of F and G (MBRCE-AAE / ALAE) stay in eval mode by design
                 ".*module\\(s\\) in eval mode at the start of training.*",
                 # a resumed run saves into its own checkpoints/ again
                 ".*Checkpoint directory .* exists and is not empty.*"):
    warnings.filterwarnings("ignore", message=_pattern)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


#: keys a resumed run may change without ``resume=force``: its length, bookkeeping, evaluation, and where and
#: how fast it runs. Any other difference from the saved config.yaml refuses the resume, listing the keys.
RESUME_MAY_CHANGE = ("max_g_steps", "resume", "ckpt_every_n_steps", "ckpt_every_minutes", "max_consecutive_skips",
                     "log_every_n_steps", "objective", "choices", "callbacks", "logger", "evaluator", "compile",
                     "channels_last", "trainer.max_epochs", "trainer.accelerator", "trainer.devices",
                     "trainer.strategy", "trainer.num_nodes", "trainer.enable_progress_bar", "dataset.root",
                     "dataset.download", "dataset.num_workers", "dataset.on_device", "run_length", "report")
#: where torchvision looks for a data set's files, below ``dataset.root`` (for the messages of a missing set)
DATA_FILES = {
    "mnist": "MNIST/raw/ (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz)",
    "cifar10": "cifar-10-python.tar.gz (or its unpacked folder cifar-10-batches-py/)",
    "celeba": "celeba/ (img_align_celeba/ and list_eval_partition.txt, list_attr_celeba.txt, identity_CelebA.txt, "
              "list_bbox_celeba.txt, list_landmarks_align_celeba.txt)",
}
DATA_FILES["stacked_mnist"] = DATA_FILES["mnist"]
EXIT_DIVERGED = 3


def validate(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on values no run can use. Component constructors check their own."""
    for key in ("n_critic", "z_dim", "log_every_n_steps", "ckpt_every_n_steps"):
        val = cfg.get(key)
        if val is not None and int(val) < 1:
            raise ValueError(f"{key} must be >= 1, got {val}")
    for key in ("ckpt_every_minutes", "max_consecutive_skips"):
        val = cfg.get(key)
        if val is not None and not float(val) > 0:
            raise ValueError(f"{key} must be > 0 or null (off), got {val}")
    if cfg.get("resume", True) not in (True, False, "force"):
        raise ValueError(f"resume must be true, false or force, got {cfg.resume!r}")
    if cfg.get("max_g_steps") is not None and int(cfg.max_g_steps) < 1:
        raise ValueError(f"max_g_steps must be >= 1 or null, got {cfg.max_g_steps}")
    if cfg.get("max_g_steps") is None and cfg.trainer.get("max_epochs", -1) in (None, -1) and cfg.trainer.get("max_steps", -1) in (None, -1):
        raise ValueError("the run has no length: set max_g_steps=<G steps> or trainer.max_epochs=<epochs>")
    target = str(OmegaConf.select(cfg, "model.generator._target_", default="") or "")
    size = OmegaConf.select(cfg, "dataset.img_size", default=None)
    if target.endswith("DCGAN32Generator") and size is not None and int(size) not in (28, 32):
        choice = (cfg.get("choices") or {}).get("model") or "dcgan32"
        raise RunError(f"dataset.img_size={size} but model={choice} is DCGAN-32, which makes 28 or 32 px images",
                       "set dataset.img_size=32, or model=dcgan64 (64 px)")
    # Lightning's own refusal is a long traceback far from the key that caused it
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        choice = (cfg.get("choices") or {}).get("trainer")
        asked = f"trainer={choice}" if choice else f"trainer.accelerator={accelerator}"
        raise RunError(f"{asked} asks for GPUs but this machine has none",
                       "add trainer.accelerator=cpu (DDP on CPU processes: trainer=ddp trainer.accelerator=cpu "
                       "trainer.devices=2)")


class QuietProfiler(PassThroughProfiler):
    """Lightning's default profiler (it records nothing) with a cheaper ``profile``: one shared null context
    instead of a generator-based context manager per call; the Trainer opens ~50 a batch. ``trainer.profiler``
    in the config replaces it."""

    _null = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._null


def build_callbacks(cfg: DictConfig, run_dir: Path, module: L.LightningModule) -> list[L.Callback]:
    """The run's callbacks: ``callbacks.*``, the ``evaluator`` group's evaluator (``evaluator=none``: none),
    ``best.ckpt`` on the evaluator's ``monitor``, the G-step limit and the :class:`RunGuard` (``last.ckpt``,
    stop signals, divergence, RNG state), which Lightning runs last."""
    if cfg.dataset.get("evaluator") is not None or cfg.dataset.get("monitor") is not None:
        raise ValueError("dataset.evaluator / dataset.monitor are no longer read: evaluation is the `evaluator` "
                         "config group (conf/evaluator/). Move the overrides to evaluator.<key> (e.g. "
                         "evaluator.every_n_steps=500, evaluator.monitor=null); evaluator=none turns it off")
    callbacks: list[L.Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    evaluator = cfg.get("evaluator") or None  # evaluator=none composes to an empty node
    if evaluator is not None:
        callbacks.append(instantiate(evaluator))
    ckpt_dir = run_dir / "checkpoints"
    monitor = evaluator.get("monitor") if evaluator is not None else None
    if monitor:  # nothing to monitor without the evaluator that logs it
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor,
                                         mode=evaluator.get("monitor_mode", "min"), save_top_k=1,
                                         # for loading and sampling only: resuming is last.ckpt's job, and
                                         # optimizer states would double the file
                                         save_weights_only=True,
                                         auto_insert_metric_name=False, enable_version_counter=False))
    if cfg.get("max_g_steps"):
        callbacks.append(MaxGSteps(cfg.max_g_steps))
    callbacks.append(RunGuard(ckpt_dir, every_n_steps=cfg.get("ckpt_every_n_steps"),
                              every_minutes=cfg.get("ckpt_every_minutes"),
                              max_consecutive_skips=cfg.get("max_consecutive_skips") if cfg.get("skip_nonfinite", True) else None,
                              check_every=int(cfg.get("log_every_n_steps") or 50)))
    return callbacks


def config_changes(saved: DictConfig, current: DictConfig, may_change: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[str]:
    """``key (saved → now)`` for every resolved key that differs, except ``may_change`` keys and their children."""
    old = flatten(OmegaConf.to_container(saved, resolve=True))
    new = flatten(OmegaConf.to_container(current, resolve=True))
    free = tuple(may_change)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in free or key.startswith(tuple(f"{k}." for k in free)):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            changes.append(f"{key} ({old.get(key, '<absent>')} → {new.get(key, '<absent>')})")
    return changes


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this attempt continues from (None: start from step 0), after checking that the config
    is the saved one (unless ``resume=force``)."""
    mode = cfg.get("resume", True)
    ckpt = run_dir / "checkpoints" / LAST
    previous = ckpt.with_name(PREV)
    if mode is False:
        return None
    if not ckpt.is_file():
        if previous.is_file():
            raise RunError(f"{ckpt} is missing but {previous.name} is there",
                           f"resume from it with `mv {previous} {ckpt}`, or start over with resume=false")
        return None
    saved = run_dir / "config.yaml"
    if mode != "force" and saved.is_file():
        changes = config_changes(OmegaConf.load(saved), cfg)
        if changes:
            raise RunError(f"the config differs from the one {run_dir} was trained with: {'; '.join(changes)}",
                           "resume with the saved values, add resume=force to go on with the new ones, or choose "
                           "another hydra.run.dir", code=2)
    return ckpt


def setup_data(cfg: DictConfig, datamodule: L.LightningDataModule) -> None:
    """Set the data up before training (Lightning's later ``setup`` finds it done), so a missing data set or a
    failed download is a one-line error before any training."""
    name = getattr(datamodule, "name", None) or cfg.dataset.get("name", "?")
    root = Path(str(cfg.dataset.get("root", "data"))).resolve()
    files = DATA_FILES.get(name)
    try:
        datamodule.setup("fit")
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror) as err:
        raise RunError(f"downloading {name} failed ({' '.join(str(err).split())})",
                       f"without network put {files or 'its files'} in {root} (copied from a machine with internet) "
                       "and run again") from err
    except FileNotFoundError as err:
        if files is None:
            raise
        if cfg.dataset.get("download"):
            raise RunError(f"downloading {name} into {root} failed (no network?)",
                           f"put {files} in {root} (copied from a machine with internet) and run again with "
                           "dataset.download=true: files already there are checked and unpacked, not downloaded") from err
        raise RunError(f"{name} not found under {root}",
                       f"download it once with dataset.download=true (needs internet), or put {files} there, or set "
                       "dataset.root to the folder that holds it") from err


def is_global_zero_process() -> bool:
    """Whether this process is rank 0 (before the Trainer exists: the launcher's rank variables)."""
    return all(int(os.environ.get(k, 0) or 0) == 0 for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def run(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    """Train one run into ``run_dir``; returns the summary dict. Usable without Hydra's main (tests).

    Holds ``<run_dir>/.lock`` throughout. A stop signal or divergence ends the run early with its status in
    the summary (``interrupted: SIGTERM``, ``diverged``; :attr:`RunGuard.stopped` has the exit code); a stop
    before the first step raises :class:`StopTraining`. Known failures raise :class:`RunError` (or ValueError /
    FileNotFoundError naming the key) before anything on disk is replaced.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir, run_dir / "checkpoints")
    rank0 = is_global_zero_process()
    with RunLock(run_dir) if rank0 else contextlib.nullcontext(), signals_stop_at_once():
        if rank0:
            clean_stale_temps(run_dir, run_dir / "checkpoints")
        try:
            return _run(cfg, run_dir, rank0)
        except (RunError, ValueError, FileNotFoundError) as err:
            if rank0 and not (run_dir / "summary.json").is_file():  # a fresh run that failed: the report lists it
                with contextlib.suppress(Exception):
                    RunSummary(run_dir, cfg).write(None, f"failed: {one_line(err)}")
            raise


@contextlib.contextmanager
def signals_stop_at_once() -> Iterator[None]:
    """SIGTERM and SIGINT stop the run at once (:func:`stop_before_training`) until :class:`RunGuard` takes them
    over for training; the handlers before are restored at the end."""
    sigs = (signal.SIGTERM, signal.SIGINT) if can_handle_signals() else ()
    previous = {sig: signal.signal(sig, stop_before_training) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(cfg: DictConfig, run_dir: Path, rank0: bool) -> dict[str, Any]:
    validate(cfg)
    resume = resume_checkpoint(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    setup_data(cfg, datamodule)
    config = (run_dir / "config.yaml", OmegaConf.to_yaml(with_run_length(cfg), resolve=True))
    if rank0 and resume is None:
        atomic_write_text(*config)  # a resumed run's is written once its checkpoint is restored (RunGuard)
    checkpoint_io = AtomicCheckpointIO()
    if resume is not None:
        state = checkpoint_io.preload(resume)  # a corrupt file fails here, before anything else is touched
        restored = state.get("gancollapse", {}).get("steps", {})
        if rank0:  # rows logged after the checkpoint are logged again: no step appears twice
            truncate_metrics(run_dir / "metrics.csv", int(restored.get(module.log_phase, 0)))
        log.info("Resuming from %s (G step %d)", resume, int(restored.get("g", 0)))
    elif rank0 and cfg.get("resume", True) is False:
        truncate_metrics(run_dir / "metrics.csv", -1)  # starting over: the old rows belong to another run
    loggers = [instantiate(lg, save_dir=str(run_dir)) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    # max_g_steps, when set, is the run's length: the epoch limit must not cut it short (with n_critic=5 an
    # epoch holds a fifth as many G steps).
    length = {"max_epochs": -1} if cfg.get("max_g_steps") else {}
    callbacks = build_callbacks(cfg, run_dir, module)
    guard = next(c for c in callbacks if isinstance(c, RunGuard))
    guard.write_on_start = config if resume is not None else None
    quiet = {} if cfg.trainer.get("profiler") is not None else {"profiler": QuietProfiler()}
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), **length, **quiet, callbacks=callbacks,
                                     logger=loggers or False,
                                     # trainer.plugins (trainer=slurm: SLURMEnvironment) join ours, not replaced
                                     plugins=[*(instantiate(p) for p in cfg.trainer.get("plugins") or []), checkpoint_io])
    if trainer.world_size == 1:
        guard.install_signal_handlers()
    elif can_handle_signals():  # under DDP Lightning's own SIGTERM handling is in charge
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    status = "finished"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except StopTraining as stop:
        if not stop.saved:
            raise
        status = stop.status
    except (RuntimeError, ValueError, KeyError) as err:
        if guard.started or resume is None or "state" not in str(err).lower() or "dict" not in str(err).lower():
            raise
        found = re.search(r"(size mismatch for [^:]+|Missing key\(s\)[^:]*|Unexpected key\(s\)[^:]*)", str(err))
        raise RunError(f"{resume} does not fit the model this config builds ({found.group(1) if found else one_line(err)[:160]})",
                       "resume with the config it was trained with (without resume=force), or start over with "
                       "resume=false") from err
    except SIGTERMException:  # DDP: Lightning stopped on SIGTERM; the last periodic checkpoint stands
        guard.stopped = StopTraining("interrupted: SIGTERM", 143, "stopped by SIGTERM", saved=False)
        status = guard.stopped.status
    finally:
        guard.restore_signal_handlers()
    if status == "finished":
        # The periodic checkpoint may lag the end of training; the final state must always be resumable/loadable.
        trainer.save_checkpoint(run_dir / "checkpoints" / LAST, weights_only=False)
    stop = guard.stopped
    extra = {"reason": stop.message, "saved": stop.saved} if stop is not None else {}
    return RunSummary(run_dir, cfg).write(module, status, **extra) if trainer.is_global_zero else {}


def with_run_length(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with ``run_length: {g_steps, epochs}``, the limit the trainer actually runs under: the
    saved config.yaml otherwise shows ``trainer.max_epochs`` also when ``max_g_steps`` overrides it (epochs
    unbounded)."""
    g_steps = cfg.get("max_g_steps")
    epochs = None if g_steps else cfg.trainer.get("max_epochs")
    out = copy.deepcopy(cfg)  # DictConfig.copy is shallow: its nodes would still hang off cfg
    with open_dict(out):
        out.run_length = {"g_steps": int(g_steps) if g_steps else None,
                          "epochs": int(epochs) if epochs not in (None, -1) else None}
    return out


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
    shown = {k: v for k, v in summary.items() if "/" in k}
    if shown:
        lines.append("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    lines.append(f"  {status}: g_steps={summary.get('g_steps')}, nonfinite_skips={summary.get('nonfinite_skips')}")
    return lines


def resolve_default_choice(group: str, choice: str | None) -> str | None:
    """``model=default/<dataset>`` is an alias file; report the option it selects (``dcgan32``)."""
    if not choice or not choice.startswith("default/"):
        return choice
    alias = Path(CONF_DIR) / group / f"{choice}.yaml"
    for entry in OmegaConf.load(alias).get("defaults", []) if alias.is_file() else []:
        if isinstance(entry, str) and entry.startswith(f"/{group}/"):
            return entry[len(group) + 2 :].split("@")[0]
    return choice


def check_output_dir_args(argv: list[str]) -> None:
    """Create and probe the ``hydra.run.dir`` / ``hydra.sweep.dir`` given on the command line, so an unwritable
    one is a one-line error (Hydra would fail creating it with a traceback, before any of our code runs)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for arg in argv:
        name, _, value = arg.lstrip("+").partition("=")
        if name == key and value and "${" not in value:
            check_writable(Path(value))


def main() -> float | None:
    """``python -m gancollapse.train [overrides]``: checks the output directory, then :func:`hydra_main`."""
    with one_line_errors():
        check_output_dir_args(sys.argv[1:])
    return hydra_main()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    # A job started in the background inherits SIGINT=ignored; Ctrl-C / kill -INT must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {k: resolve_default_choice(k, v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    run_dir = Path(hc.runtime.output_dir)
    if is_global_zero_process():
        record.info("run %s: %s", run_dir, " ".join(hc.overrides.task) or "(no overrides)")
    with one_line_errors():
        try:
            summary = run(cfg, run_dir)
        except StopTraining as stop:  # a stop that saved nothing: the checkpoint on disk is the newest state
            print(f"{stop.message[:1].upper()}{stop.message[1:]}. Rerun with hydra.run.dir={run_dir} to resume.",
                  file=sys.stderr, flush=True)
            sys.exit(stop.exit_code)
    status = summary.get("status", "finished")
    if summary:
        lines = closing_lines(run_dir, summary)
        print("\n" + "\n".join(lines), flush=True)
        record.info("\n".join(lines))
    maximize = "max" in str(hc.sweeper.get("direction", "minimize"))
    if status == "diverged":
        print(f"error: {summary.get('reason', 'the run diverged')} — lower the learning rate (optim.*.lr) or add a "
              "regularizer, and start a new run (another hydra.run.dir, or resume=false); last.ckpt holds the last "
              "finite weights", file=sys.stderr, flush=True)
        if hc.mode != RunMode.MULTIRUN:
            sys.exit(EXIT_DIVERGED)
        return -math.inf if maximize else math.inf  # a sweep goes on; its tuner ranks this trial last
    if status.startswith("interrupted"):
        code = 130 if status.endswith("SIGINT") else 143
        reason = str(summary.get("reason", status))
        print(f"{reason[:1].upper()}{reason[1:]} after G step {summary.get('g_steps')}; last.ckpt holds the "
              f"{'state at the stop' if summary.get('saved', True) else 'last periodic save'}. Rerun with "
              f"hydra.run.dir={run_dir} to resume.", file=sys.stderr, flush=True)
        sys.exit(code)
    if not summary:  # DDP ranks other than 0 have none; the job's return value is rank 0's
        return None
    # What tuning sweepers (hydra/sweeper=optuna) optimise; a NaN metric is the worst value for their direction.
    return objective_value(summary, cfg.get("objective"), OmegaConf.select(cfg, "evaluator.monitor"), maximize)


def cli() -> None:
    """The ``gancollapse-train`` console script: :func:`main` returns a sweep objective, which a console script
    would pass to ``sys.exit`` (a float there exits 1); the exit status comes from the run's own ``sys.exit``."""
    main()


if __name__ == "__main__":
    main()
