"""``ensemble=K``: K seeds of one toy configuration trained in one process and recorded as K runs.

``python -m gancollapse.train ensemble=10 seed=0 ...`` trains seeds 0..9 as one batched model
(:class:`gancollapse.models.ensemble.EnsembleGAN`) and writes, below its run directory,

* ``seed_<s>/`` for every member: ``config.yaml`` (the member's resolved config: ``seed: s``), ``metrics.csv``,
  ``checkpoints/last.ckpt`` (and ``best.ckpt`` with an evaluator monitor; weights only, loadable with
  :func:`gancollapse.load`), ``plots/`` and ``summary.json``: a run directory as a single run writes it, which
  ``python -m gancollapse.report`` counts as one seed;
* ``ensemble.json`` (the members and the ensemble's status; the report skips this directory as a run),
  ``config.yaml`` and ``checkpoints/last.ckpt`` (the stacked state: rerunning the command resumes every member
  where it stopped, as a single run resumes).

Only what can be batched exactly is accepted; :func:`gancollapse.models.ensemble.check_config` refuses the rest
in one line, before anything is written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gancollapse.aggregate import ENSEMBLE_FILE, aggregate_group, mean_std, objective_value
from gancollapse.build import build_module
from gancollapse.callbacks import RunGuard, RunSummary
from gancollapse.data.ensemble import EnsembleDataModule
from gancollapse.instantiate import build_datamodule
from gancollapse.instantiate import instantiate_checked as instantiate
from gancollapse.metrics.evaluator import Evaluator
from gancollapse.models.ensemble import EnsembleGAN, check_config, ensemble_size
from gancollapse.runio import (
    LAST,
    AtomicCheckpointIO,
    RunError,
    RunLock,
    atomic_write,
    atomic_write_text,
    check_writable,
    clean_stale_temps,
    one_line,
    truncate_metrics,
)
from gancollapse.runner import (
    build_callbacks,
    fit_run,
    resume_checkpoint,
    setup_data,
    validate,
    with_run_length,
)


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """Member ``seed``'s config: the ensemble's with ``seed`` set (interpolations such as
    ``dataset.seed: ${seed}`` follow)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.seed = int(seed)
    return out


def _member_checkpoint(module: EnsembleGAN, k: int) -> dict[str, Any]:
    """Member k as a run's checkpoint: ``state_dict`` and the counters :func:`gancollapse.load` reads."""
    m = module.sync_member(k)
    state: dict[str, Any] = {}
    m.on_save_checkpoint(state)
    counters = module.member_counters(k)
    return {"state_dict": {n: t.detach().cpu() for n, t in m.state_dict().items()}, **state,
            "epoch": int(counters["epoch"]), "ensemble": {"size": module.k, "member": k, "seeds": list(module.seeds)}}


class MemberRecords:
    """The members' run directories (``<run dir>/seed_<s>``): their locks, configs, loggers, checkpoints and
    summaries. Used as a context manager around training (holds every member's ``.lock``)."""

    def __init__(self, run_dir: Path, cfgs: Sequence[DictConfig], seeds: Sequence[int]) -> None:
        self.run_dir = Path(run_dir)
        self.cfgs, self.seeds = list(cfgs), [int(s) for s in seeds]
        self.dirs = [self.run_dir / f"seed_{s}" for s in self.seeds]
        self.loggers: list[list[Any]] = [[] for _ in self.seeds]
        #: member -> its final summary, once written by this process
        self.summaries: dict[int, dict[str, Any]] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> MemberRecords:
        check_writable(*self.dirs, *(d / "checkpoints" for d in self.dirs))
        for d in self.dirs:
            self._stack.enter_context(RunLock(d))
            clean_stale_temps(d, d / "checkpoints")
        return self

    def __exit__(self, *exc: object) -> None:
        for loggers in self.loggers:
            for lg in loggers:
                with contextlib.suppress(Exception):
                    lg.save()
        self._stack.close()

    def start(self, fresh: bool, restored_step: int | None, restart: bool) -> None:
        """Write the member configs (a fresh run), cut their metrics to the restored step (a resume) or clear
        them (``resume=false``), and open their loggers."""
        for cfg, d, k in zip(self.cfgs, self.dirs, range(len(self.dirs)), strict=True):
            if fresh:
                atomic_write_text(d / "config.yaml", OmegaConf.to_yaml(with_run_length(cfg), resolve=True))
            if restored_step is not None:
                truncate_metrics(d / "metrics.csv", restored_step)
            elif restart:
                truncate_metrics(d / "metrics.csv", -1)
            self.loggers[k] = [instantiate(lg, save_dir=str(d)) for lg in (cfg.get("logger") or {}).values()
                               if lg is not None]

    def log(self, k: int, metrics: dict[str, float], step: int) -> None:
        for lg in self.loggers[k]:
            lg.log_metrics(dict(metrics), step=step)

    def save(self, module: EnsembleGAN, k: int, name: str = LAST) -> None:
        """Member k's weights and counters to ``checkpoints/<name>`` (atomically)."""
        state = _member_checkpoint(module, k)
        atomic_write(self.dirs[k] / "checkpoints" / name, lambda f: torch.save(state, f))

    def checkpoint(self, module: EnsembleGAN) -> None:
        """With every ensemble checkpoint: each running member's ``last.ckpt``, and its logs on disk."""
        for k in range(len(self.dirs)):
            if module.active[k]:
                self.save(module, k)
            for lg in self.loggers[k]:
                lg.save()

    def finish(self, module: EnsembleGAN, k: int, status: str | None = None, **extra: Any) -> dict[str, Any]:
        """Member k's final record: ``last.ckpt`` and ``summary.json`` (its own status if it stopped early)."""
        stop = module.stopped.get(k)
        if stop is not None:
            status, extra = stop["status"], {"reason": stop["reason"], "saved": stop["saved"]}
        self.save(module, k)
        for lg in self.loggers[k]:
            lg.save()
        member = module.sync_member(k)
        epoch = int(module.member_counters(k)["epoch"])
        summary = RunSummary(self.dirs[k], self.cfgs[k]).write(member, status or "finished", epoch=epoch,
                                                               ensemble=module.k, **extra)
        self.summaries[k] = summary
        return summary

    def fail(self, err: BaseException) -> None:
        """A run that failed before training: each member directory says so (the report lists them)."""
        for d, cfg in zip(self.dirs, self.cfgs, strict=True):
            if not (d / "summary.json").is_file():
                with contextlib.suppress(Exception):
                    RunSummary(d, cfg).write(None, f"failed: {one_line(err)}")


class EnsembleEvaluator(L.Callback):
    """One evaluator per member (the config's ``evaluator``, built K times), on the
    :class:`~gancollapse.metrics.evaluator.Evaluator` schedule: each member is scored on its own weights and
    its metrics go to its own loggers, summary and pictures (``<member>/plots``); ``best.ckpt`` per member with
    a ``monitor``. The progress bar gets the members' mean."""

    def __init__(self, evaluators: Sequence[Evaluator], records: MemberRecords, datamodules: Sequence[Any]) -> None:
        super().__init__()
        self.evaluators, self.records, self.datamodules = list(evaluators), records, list(datamodules)
        self.first = self.evaluators[0]
        self._last_eval = -1

    def _trainer(self, k: int) -> SimpleNamespace:
        """What an evaluator reads of the trainer, for member k."""
        return SimpleNamespace(default_root_dir=str(self.records.dirs[k]), datamodule=self.datamodules[k],
                               is_global_zero=True, callbacks=(), checkpoint_callbacks=(), callback_metrics={})

    def setup(self, trainer: L.Trainer, pl_module: EnsembleGAN, stage: str) -> None:
        for k, ev in enumerate(self.evaluators):
            ev.setup(self._trainer(k), pl_module.members[k], stage)  # type: ignore[arg-type]

    def evaluate(self, trainer: L.Trainer, pl_module: EnsembleGAN) -> list[dict[str, float]]:
        step, results = pl_module.g_steps, []
        self._last_eval = step
        for k, ev in enumerate(self.evaluators):
            if not pl_module.active[k]:
                continue
            member = pl_module.sync_member(k)
            before = dict(ev.best)
            metrics = ev.measure(member)
            ev.record(member, metrics)  # latest_eval and the metrics' leaderboard columns
            self.records.log(k, metrics, pl_module.steps.get(pl_module.log_phase, 0))
            if ev.monitor and ev.best != before:
                self.records.save(pl_module, k, "best.ckpt")
            ev.after_evaluate(self._trainer(k), member, metrics, step)  # type: ignore[arg-type]
            results.append(metrics)
        if results:  # the members' mean over the values they have (NaN: e.g. reverse KL without HQ samples)
            mean = {key: mean_std([r.get(key) for r in results])[0] for key in results[0]}
            mean = {key: float("nan") if v is None else v for key, v in mean.items()}
            for cb in trainer.callbacks:
                if callable(getattr(cb, "on_evaluation", None)):
                    cb.on_evaluation(trainer, pl_module, mean, self.first.monitor)
        return results

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step, every = pl_module.g_steps, self.first.every_n_steps
        if every and step > 0 and step % every == 0 and step != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: EnsembleGAN) -> None:
        epoch, every = trainer.current_epoch + 1, self.first.every_n_epochs
        if every and epoch % every == 0 and pl_module.g_steps != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: EnsembleGAN) -> None:
        key = f"{self.first.namespace}/g_step"
        stale = any(pl_module.active[k] and key not in m.latest_eval for k, m in enumerate(pl_module.members))
        if pl_module.g_steps > 0 and (pl_module.g_steps != self._last_eval or stale):
            self.evaluate(trainer, pl_module)
        for k, ev in enumerate(self.evaluators):
            ev.finish(self._trainer(k), pl_module.members[k])  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        return {"last_eval": self._last_eval, "members": [ev.state_dict() for ev in self.evaluators]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_eval = int(state_dict.get("last_eval", -1))
        for ev, state in zip(self.evaluators, state_dict.get("members", []), strict=False):
            ev.load_state_dict(state)


def _write_record(run_dir: Path, k: int, seeds: Sequence[int], status: str, members: Sequence[dict] = ()) -> None:
    record = {"ensemble": k, "seeds": list(seeds), "runs": [f"seed_{s}" for s in seeds], "status": status,
              "members": {f"seed_{s}": m.get("status") for s, m in zip(seeds, members, strict=False)}}
    atomic_write_text(run_dir / ENSEMBLE_FILE, json.dumps(record, indent=2))


@contextlib.contextmanager
def _failing(records: MemberRecords, fresh: bool) -> Iterator[None]:
    try:
        yield
    except (RunError, ValueError, FileNotFoundError) as err:
        if fresh:
            records.fail(err)
        raise


def run_ensemble(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg.ensemble`` seeds of ``cfg`` as one batched model into ``run_dir``; returns the ensemble's
    summary: the members' mean metrics (:func:`gancollapse.aggregate.aggregate_group`), their summaries under
    ``members`` and their directories under ``runs``. Called by :func:`gancollapse.train.run`, which holds the
    run directory's lock."""
    validate(cfg)
    check_config(cfg)
    k = ensemble_size(cfg)
    seeds = [int(cfg.seed) + i for i in range(k)]
    resume = resume_checkpoint(cfg, run_dir)
    cfgs = [member_config(cfg, s) for s in seeds]
    modules, datamodules, rng_states = [], [], []
    for seed, member_cfg in zip(seeds, cfgs, strict=True):  # each member exactly as its single run builds it
        L.seed_everything(seed, workers=True, verbose=False)
        datamodules.append(build_datamodule(member_cfg))
        modules.append(build_module(member_cfg))
        rng_states.append(torch.get_rng_state())
    module = EnsembleGAN(modules, seeds, rng_states)
    datamodule = EnsembleDataModule(datamodules)
    setup_data(cfg, datamodule)
    checkpoint_io = AtomicCheckpointIO()
    restored = None
    if resume is not None:
        state = checkpoint_io.preload(resume)
        restored = int(state.get("gancollapse", {}).get("steps", {}).get(module.log_phase, 0))
    records = MemberRecords(run_dir, cfgs, seeds)
    with records, _failing(records, resume is None):
        config = (run_dir / "config.yaml", OmegaConf.to_yaml(with_run_length(cfg), resolve=True))
        if resume is None:
            atomic_write_text(*config)
        _write_record(run_dir, k, seeds, "running")
        records.start(fresh=resume is None, restored_step=restored, restart=cfg.get("resume", True) is False)
        module.records = records
        evaluator = cfg.get("evaluator") or None
        plain = copy.deepcopy(cfg)
        with open_dict(plain):
            plain.evaluator = None  # the members' evaluators go in below, one per member
        callbacks = build_callbacks(plain, run_dir, module)
        if evaluator is not None:
            evaluators = [instantiate(evaluator) for _ in seeds]
            callbacks.insert(len([c for c in (cfg.get("callbacks") or {}).values() if c is not None]),
                             EnsembleEvaluator(evaluators, records, datamodules))
        guard = next(c for c in callbacks if isinstance(c, RunGuard))
        guard.write_on_start = config if resume is not None else None
        length = {"max_epochs": -1} if cfg.get("max_g_steps") else {}
        trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), **length, callbacks=callbacks,
                                         logger=False, plugins=[checkpoint_io])
        guard.install_signal_handlers()
        try:
            status = fit_run(trainer, module, datamodule, resume, guard)
        finally:
            guard.restore_signal_handlers()
        if status == "finished":
            trainer.save_checkpoint(run_dir / "checkpoints" / LAST, weights_only=False)
        stop = guard.stopped
        extra = {"reason": stop.message, "saved": stop.saved} if stop is not None else {}
        # a member that stopped early wrote its record then
        members = [records.summaries[i] if i in records.summaries else records.finish(module, i, status, **extra)
                   for i in range(k)]
    summary = ensemble_summary(members, status, run_dir)
    _write_record(run_dir, k, seeds, summary["status"], members)
    return summary


def ensemble_summary(members: Sequence[dict[str, Any]], status: str, run_dir: Path) -> dict[str, Any]:
    """The members' summaries reduced to one (mean and std of each metric, ``n`` members) with the
    ensemble's status: the run's own, or ``diverged`` when every member diverged."""
    # the metrics' leaderboard columns: the union (a member that stopped before evaluating has none)
    columns = {k: v for m in members for k, v in (m.get("metric_columns") or {}).items()}
    out = aggregate_group([{**{k: v for k, v in m.items() if k != "metric_columns"}, "run": f"seed_{m.get('seed')}"}
                           for m in members])
    if columns:
        out["metric_columns"] = columns
    if all(str(m.get("status")) == "diverged" for m in members):
        status = "diverged"
    out.update({"status": status, "ensemble": len(members), "runs": [str(Path(run_dir) / f"seed_{m.get('seed')}")
                                                                       for m in members],
                "members": list(members)})
    return out


def ensemble_objective(summary: dict[str, Any], objective: str | None, monitor: str | None, maximize: bool) -> float | None:
    """The mean over members of the tuning objective (:func:`gancollapse.aggregate.objective_value`): a member
    whose metric is NaN counts as the worst value (±inf), so the mean is too; None without any metric."""
    values = [objective_value(m, objective, monitor, maximize) for m in summary.get("members", [])]
    if not values or any(v is None for v in values):
        return None
    return math.fsum(values) / len(values)


def closing_lines(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """What an ensemble prints at its end: where the member runs are and their mean headline numbers."""
    members = summary.get("members", [])
    seeds = [m.get("seed") for m in members]
    statuses: dict[str, int] = {}
    for m in members:
        statuses[str(m.get("status"))] = statuses.get(str(m.get("status")), 0) + 1
    lines = [f"Ensemble directory: {run_dir} ({len(members)} runs, seeds {seeds[0]}..{seeds[-1]})",
             f"  {'runs:':<12} {run_dir}/seed_<seed>/ (summary.json, metrics.csv, checkpoints/)",
             f"  {'report:':<12} python -m gancollapse.report {run_dir}"]
    shown = {key: v for key, v in summary.items() if "/" in key and not key.endswith(("/std", "/n")) and v is not None}
    if shown:
        parts = []
        for key, v in shown.items():
            std = summary.get(f"{key}/std")
            parts.append(f"{key}={v:.4g}" + (f"±{std:.2g}" if isinstance(std, float) else "")
                         if isinstance(v, float) else f"{key}={v}")
        lines.append(f"  mean over {len(members)}: " + ", ".join(parts))
    lines.append(f"  {summary.get('status')}: g_steps={summary.get('g_steps')}, members "
                 + ", ".join(f"{n} {s}" for s, n in statuses.items()))
    return lines
