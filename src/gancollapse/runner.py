"""One training run: check the config, build the run's parts, train, and record what was done.

:func:`run` is the whole life of a run directory: the start checks (:func:`validate`: keys, types, values, every
choice applied or refused; :func:`resume_checkpoint`: the saved config) and the components' own checks all pass
before any file of the run exists; then the run lock, the data, training (:func:`fit_run`), the final checkpoint
and ``summary.json``. The Hydra entry point (:mod:`gancollapse.train`) and the many-seeds path
(:mod:`gancollapse.ensemble`) both go through it. What a run survives (kills, signals, bad input) is
docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import signal
import socket
import urllib.error
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gancollapse.aggregate import flatten
from gancollapse.build import build_module, sampler_config, with_run_prior
from gancollapse.callbacks import (
    MaxGSteps,
    RunGuard,
    RunSummary,
    StopTraining,
    can_handle_signals,
    stop_before_training,
)
from gancollapse.data.downloads import DATA_FILES
from gancollapse.instantiate import build_datamodule
from gancollapse.instantiate import instantiate_checked as instantiate
from gancollapse.models.contract import check_config, refuse_missing_capabilities
from gancollapse.models.ensemble import check_config as check_ensemble
from gancollapse.runio import (
    LAST,
    PREV,
    AtomicCheckpointIO,
    DiskFullError,
    RunError,
    RunLock,
    atomic_write_text,
    check_writable,
    clean_stale_temps,
    one_line,
    truncate_metrics,
)
from gancollapse.schema import check_types

log = logging.getLogger("gancollapse")

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


#: keys added to the config tree after runs were saved, each with the value that trains as those runs did: a saved
#: config without the key resumes when the current value is that one
ADDED_KEYS = {"ensemble": 1, "updates": "alternating", "dataset.angles": "uniform", "dataset.axes": "cos_sin",
              "dataset.fresh": False}


EXIT_DIVERGED = 3


def validate(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on values no run can use and on choices the model would not apply
    (:func:`gancollapse.models.contract.check_config`); keys and types first (:func:`gancollapse.schema.check_types`).
    Component constructors check their own values."""
    check_types(cfg)
    for key in ("n_critic", "z_dim", "log_every_n_steps", "ckpt_every_n_steps"):
        val = cfg.get(key)
        if val is not None and int(val) < 1:
            raise ValueError(f"{key} must be >= 1, got {val}")
    for key in ("ckpt_every_minutes", "max_consecutive_skips"):
        val = cfg.get(key)
        if val is not None and not float(val) > 0:
            raise ValueError(f"{key} must be > 0 or null (off), got {val}")
    check_ensemble(cfg)  # ensemble: a whole number >= 1; for K > 1, what K seeds in one process can batch
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
    check_config(cfg)


def without_orphans(cfg: DictConfig) -> DictConfig:
    """``cfg`` without the settings an experiment gave a component that was then switched off: with
    ``evaluator=none`` (or ``callbacks.<name>=null`` / ``~callbacks.<name>``) the experiment's ``evaluator:``
    (``callbacks.<name>:``) keys survive composition as a node without ``_target_``, which is nothing to build
    and nothing the run did, so it is dropped before it reaches Lightning or the run's config.yaml."""
    orphans = []
    if cfg.get("evaluator") and "_target_" not in cfg.evaluator:
        orphans.append(("evaluator", None))
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and "_target_" not in node:
            orphans.append((f"callbacks.{name}", None))
    if not orphans:
        return cfg
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key, value in orphans:
            OmegaConf.update(out, key, value, merge=False)
    return out


def evaluation_samplers(cfg: DictConfig) -> dict[str, Any]:
    """The samplers ``evaluator.samplers`` names, built with the run's prior; the one chosen with
    ``sampler=<name>`` takes the ``sampler.<key>`` overrides."""
    names = [str(n) for n in (OmegaConf.select(cfg, "evaluator.samplers") or []) if str(n) != "prior"]
    chosen = (cfg.get("choices") or {}).get("sampler")
    target = OmegaConf.select(cfg, "sampler._target_")
    out = {}
    for name in names:
        node = sampler_config(name, cfg)
        if name == chosen or (chosen is None and node.get("_target_") == target):
            node = OmegaConf.merge(node, with_run_prior(cfg.sampler, cfg))
        out[name] = instantiate(node)
    return out


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
    named = {f"callbacks.{k}": instantiate(c) for k, c in (cfg.get("callbacks") or {}).items() if c is not None}
    evaluator = cfg.get("evaluator") or None  # evaluator=none composes to an empty node (see without_orphans)
    if evaluator is not None:
        node = OmegaConf.masked_copy(evaluator, [k for k in evaluator if k != "samplers"])
        named["evaluator"] = instantiate(node, samplers=evaluation_samplers(cfg))
    refuse_missing_capabilities(module, named)  # e.g. the observatory on a model without a discriminator
    callbacks: list[L.Callback] = list(named.values())
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
    old = {**ADDED_KEYS, **flatten(OmegaConf.to_container(saved, resolve=True))}
    new = {**ADDED_KEYS, **flatten(OmegaConf.to_container(current, resolve=True))}
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


def run(cfg: DictConfig, run_dir: Path | str, on_start: Callable[[], None] | None = None,
        ensemble: Callable[[DictConfig, Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train one run into ``run_dir``; returns the summary dict. Usable without Hydra's main (tests).

    ``ensemble`` trains ``ensemble=K > 1`` seeds in one process once the start checks pass and the lock is held
    (:func:`gancollapse.ensemble.run_ensemble`, which :func:`gancollapse.train.run` passes).

    A refused start writes nothing: the config checks (:func:`validate`, every choice applied or refused), the
    run lock and the resume check run before any file of the run is created or changed; ``on_start`` is called
    when training starts, after a resumed checkpoint was restored (Hydra's main writes ``.hydra/`` and the log's
    first line there), so a restart that fails leaves the run's record as it was. Holds ``<run_dir>/.lock``
    throughout. A stop signal or divergence ends the run early with its status in the summary
    (``interrupted: SIGTERM``, ``diverged``; :attr:`RunGuard.stopped` has the exit code); a stop before the first
    step raises :class:`StopTraining`. Later known failures raise :class:`RunError` (or ValueError /
    FileNotFoundError naming the key) before anything on disk is replaced.
    """
    cfg = without_orphans(cfg)
    validate(cfg)
    run_dir = Path(run_dir)
    resume = resume_checkpoint(cfg, run_dir)  # read-only: a refused resume touches nothing, not even the lock
    single = (cfg.get("ensemble") or 1) == 1
    # the components check their own values as they are built: still before any file of the run exists
    parts = build_parts(cfg, run_dir) if single else None
    check_writable(run_dir, run_dir / "checkpoints")
    rank0 = is_global_zero_process()
    with RunLock(run_dir) if rank0 else contextlib.nullcontext(), signals_stop_at_once():
        if rank0:
            clean_stale_temps(run_dir, run_dir / "checkpoints")
        if not single:  # K seeds in one process, K member runs below run_dir
            if ensemble is None:
                raise RunError(f"ensemble={cfg.ensemble}: this entry point trains single runs",
                               "train through gancollapse.train.run (python -m gancollapse.train)")
            return ensemble(cfg, run_dir)
        try:
            return _run(cfg, run_dir, rank0, resume, parts, on_start)
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


def build_parts(cfg: DictConfig, run_dir: Path) -> tuple[L.LightningDataModule, L.LightningModule, list[L.Callback]]:
    """The run's datamodule, module and callbacks, built from the seed (nothing is written)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    return datamodule, module, build_callbacks(cfg, run_dir, module)


def _run(cfg: DictConfig, run_dir: Path, rank0: bool, resume: Path | None,
         parts: tuple[L.LightningDataModule, L.LightningModule, list[L.Callback]],
         on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    datamodule, module, callbacks = parts
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
    guard = next(c for c in callbacks if isinstance(c, RunGuard))
    if resume is not None:
        guard.on_start_hooks.append(lambda: atomic_write_text(*config))
    if on_start is not None:
        guard.on_start_hooks.append(on_start)
    quiet = {} if cfg.trainer.get("profiler") is not None else {"profiler": QuietProfiler()}
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), **length, **quiet,
                                     callbacks=callbacks, logger=loggers or False,
                                     # trainer.plugins (trainer=slurm: SLURMEnvironment) join ours, not replaced
                                     plugins=[*(instantiate(p) for p in cfg.trainer.get("plugins") or []), checkpoint_io])
    if trainer.world_size == 1:
        guard.install_signal_handlers()
    elif can_handle_signals():  # under DDP Lightning's own SIGTERM handling is in charge
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = fit_run(trainer, module, datamodule, resume, guard)
        if status == "finished":
            # The periodic checkpoint may lag the end of training; the final state must always be resumable.
            trainer.save_checkpoint(run_dir / "checkpoints" / LAST, weights_only=False)
    except DiskFullError:
        if rank0:  # the status, when even a summary fits on the device
            with contextlib.suppress(OSError):
                RunSummary(run_dir, cfg).write(module, "failed: no space")
        raise
    finally:
        guard.restore_signal_handlers()
    stop = guard.stopped
    extra = {"reason": stop.message, "saved": stop.saved} if stop is not None else {}
    return RunSummary(run_dir, cfg).write(module, status, **extra) if trainer.is_global_zero else {}


def skip_failing_nvml_probe() -> bool:
    """Ask torch for CUDA's own device count where NVML cannot be loaded; True if it changed the setting.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import, so that availability checks count GPUs
    through NVML and do not initialise CUDA before DataLoader workers fork. torch's Adam and RMSprop run such
    a check on every step (``Optimizer._accelerator_graph_capture_health_check``), and where there is no NVIDIA
    driver each one tries to ``dlopen`` NVML, fails, and falls back to CUDA's count anyway: ~45 µs per
    optimizer step on a CPU-only machine for nothing. There the fallback is all that ever runs, so it is asked
    for directly; wherever NVML loads, nothing changes.
    """
    probe = getattr(torch.cuda, "_raw_device_count_nvml", None)
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or probe is None:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Can't initialize NVML": the case handled here
            nvml_count = probe()
    except OSError:  # NVML's library is not there (no NVIDIA driver): torch's own check treats it the same
        nvml_count = -1
    except Exception:  # anything else: leave Lightning's choice alone
        return False
    if nvml_count >= 0:
        return False
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    return True


def fit_run(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, resume: Path | None,
            guard: RunGuard) -> str:
    """``trainer.fit`` from ``resume`` (None: from scratch); returns the run's status (``finished``, or the stop
    that saved: ``interrupted: SIGTERM``, ``diverged``). A stop that saved nothing is raised; a checkpoint that
    does not fit the model becomes a one-line :class:`RunError`."""
    skip_failing_nvml_probe()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except StopTraining as stop:
        if not stop.saved:
            raise
        return stop.status
    except (RuntimeError, ValueError, KeyError) as err:
        if guard.started or resume is None or "state" not in str(err).lower() or "dict" not in str(err).lower():
            raise
        found = re.search(r"(size mismatch for [^:]+|Missing key\(s\)[^:]*|Unexpected key\(s\)[^:]*)", str(err))
        raise RunError(f"{resume} does not fit the model this config builds ({found.group(1) if found else one_line(err)[:160]})",
                       "resume with the config it was trained with (without resume=force), or start over with "
                       "resume=false") from err
    except SIGTERMException:  # DDP: Lightning stopped on SIGTERM; the last periodic checkpoint stands
        guard.stopped = StopTraining("interrupted: SIGTERM", 143, "stopped by SIGTERM", saved=False)
        return guard.stopped.status
    return "finished"


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
