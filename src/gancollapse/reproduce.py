"""Every paper-table reproduction with its paper's number of runs: ``make reproduce`` / ``python -m gancollapse.reproduce``.

The tables are the files of ``conf/experiment/repro/`` (docs/REPRODUCTION_PROTOCOLS.md); each file's ``repro:``
block names the paper, the table, its number of runs (``runs``, or ``runs_chosen`` where the paper states none),
its error measure, which summary metric each published column is (``metrics``), the ``short`` CPU schedule and
the cells (rows) with their overrides and published numbers. A cell may carry its own ``short`` (it replaces the
table's) and ``cpu_ms: {run, batched}`` (CPU-ms per G step of one run, and of the cell's runs batched in one
process, measured by ``scripts/bench_repro.py``): what ``--plan`` estimates with, never what a run reads.

* :func:`load_cells` — the cells of the chosen tables under a schedule (``short`` by default, the paper's with
  ``--full``).
* :func:`plan_jobs` / :func:`run_jobs` — the training: per cell K seeds (0..K-1) as one ``ensemble=K`` process
  where :func:`gancollapse.models.ensemble.check_config` accepts the cell, else K single runs; two processes at a
  time, longest first (:func:`gancollapse.sweep.run_commands`). Runs live in
  ``<out>/<schedule>/<table>/<cell>/seed_<s>/``; a rerun skips finished seeds and resumes the others (the train
  entry point resumes a run directory). An ensemble that fails before training (its ``ensemble.json`` never
  written) is retried as single runs.
* :func:`write_document` — docs/REPRODUCTION.md from the run records (``seed_<s>/summary.json`` and
  ``config.yaml``): per cell and metric the paper's number, ours (mean, the paper's error measure, n, 95%
  bootstrap interval) and a verdict (:func:`verdict`), with the rule in the document's header.

    python -m gancollapse.reproduce [--tables gdpp_ring,...] [--cells gan,...] [--full] [--jobs 2]
        [--out multirun/reproduce] [--doc docs/REPRODUCTION.md] [--runs K] [--plan] [--no-train]
        [--override KEY=VALUE ...] [-- <hydra overrides for every run>]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from scipy import stats

from gancollapse.aggregate import ENSEMBLE_FILE, MIN_N, bootstrap_ci, flatten, mean_std, seed_free
from gancollapse.paths import CONF_DIR
from gancollapse.sweep import exit_when_stopped, run_commands

TABLE_DIR = Path(CONF_DIR) / "experiment" / "repro"
DEFAULT_OUT = Path("multirun/reproduce")
DEFAULT_DOC = Path("docs/REPRODUCTION.md")
SCHEDULES = ("short", "full")
#: the tables' ``repro.error`` values → the measure's short name (None: the table gives single numbers)
ERROR_MEASURES: dict[str, str | None] = {"standard error": "SE", "standard deviation": "SD", "none": None}
#: how the ledger names a table's error measure
MEASURE_NAMES = {"SE": "standard error of the mean (SE)", "SD": "standard deviation (SD)"}
CONFIDENCE = 0.95
#: the tolerance floor for mode counts (see :func:`tolerance`)
MODE_TOLERANCE = 0.5
#: run statuses that end a run for good: a rerun does not train it again
TERMINAL = ("finished", "diverged")
#: CPU minutes one training process spends outside its steps (imports, Hydra, the final evaluation), measured as
#: ~7 CPU-s for a 2-step run on the development machine
PROCESS_OVERHEAD_MIN = 0.15
VERDICTS = ("reproduced", "not reproduced", "protocol differs", "not measured")
#: config keys that change neither what is trained nor how it is scored (bookkeeping, logging, where it runs);
#: ``max_g_steps`` and ``run_length`` are left out because a run's length is read from its summary's g_steps
IGNORED = ("max_g_steps", "run_length", "ensemble", "repro", "resume", "ckpt_every_n_steps", "ckpt_every_minutes",
           "max_consecutive_skips", "log_every_n_steps", "objective", "choices", "callbacks", "logger", "compile",
           "channels_last", "report", "hydra", "dataset.root", "dataset.download", "dataset.num_workers",
           "dataset.on_device", "evaluator.every_n_steps", "evaluator.every_n_epochs", "evaluator.frames",
           "evaluator.n_plot", "evaluator.monitor", "evaluator.monitor_mode", "trainer.accelerator",
           "trainer.devices", "trainer.strategy", "trainer.num_nodes", "trainer.max_epochs", "trainer.max_steps",
           "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
           "trainer.num_sanity_val_steps", "trainer.limit_val_batches")


# ---------------------------------------------------------------------------- the cells
@dataclass(frozen=True)
class Cell:
    """One row of a paper's table under one schedule."""

    table: str                        #: the repro file's name (``gdpp_ring``)
    name: str                         #: the cell's name in ``repro.cells`` (``gan``)
    paper: str
    title: str                        #: the table (``repro.table``)
    overrides: tuple[str, ...]        #: the cell's overrides of the file (the paper's protocol)
    schedule: str                     #: ``short`` or ``full``
    schedule_overrides: tuple[str, ...]  #: the schedule's overrides (none for ``full``)
    runs: int                         #: seeds to train (0..runs-1): ``protocol_runs`` unless ``--runs`` says
    protocol_runs: int                #: the number of runs: the paper's, else ours (``runs_chosen``)
    runs_stated: bool                 #: whether the paper states ``runs``
    error: str | None                 #: SE, SD or None (the paper's error measure)
    metrics: tuple[tuple[str, str], ...]  #: (published column, summary key)
    published: Mapping[str, float]
    paper_steps: int                  #: the file's max_g_steps (the paper's budget)
    steps: int                        #: G steps per run under the schedule (and the passthrough overrides)
    note: str = ""
    cpu_ms: Mapping[str, float] = field(default_factory=dict)
    #: ``<table>:<cell>`` of an earlier cell whose runs are this one's (the same config: trained once)
    shares: str | None = None
    #: the composed run config (schedule and extra overrides applied), when loaded by :func:`load_cells`
    config: DictConfig | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.table}:{self.name}"

    def base_overrides(self) -> list[str]:
        """The paper's protocol for this cell: the file and the cell's overrides."""
        return [f"experiment=repro/{self.table}", *self.overrides]


def table_names() -> list[str]:
    return sorted(p.stem for p in TABLE_DIR.glob("*.yaml"))


def compose(overrides: Sequence[str]) -> DictConfig:
    """The training config ``python -m gancollapse.train <overrides>`` composes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def _error_measure(table: str, value: Any) -> str | None:
    if str(value) not in ERROR_MEASURES:
        raise ValueError(f"repro.error={value}: unknown error measure in conf/experiment/repro/{table}.yaml; use "
                         f"one of {list(ERROR_MEASURES)}")
    return ERROR_MEASURES[str(value)]


def load_cells(schedule: str = "short", extra: Sequence[str] = (), runs: int | None = None) -> list[Cell]:
    """Every table's cells under ``schedule``, with ``extra`` overrides on every run and ``runs`` seeds instead
    of the table's (None: the table's ``runs``, else ``runs_chosen``). A cell whose run config equals an earlier
    cell's (in name order: GDPP's grid Unrolled GAN is VEEGAN's) ``shares`` that cell's runs. One-line ValueError
    on a bad ``repro`` block."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule}: unknown; use one of {list(SCHEDULES)}")
    if runs is not None and int(runs) < 1:
        raise ValueError(f"--runs={runs}: must be >= 1 (seeds 0..runs-1 per cell)")
    out: list[Cell] = []
    configs: list[dict[str, Any]] = []  # every cell's run config, to train equal ones once
    for table in table_names():
        meta_cfg = compose([f"experiment=repro/{table}"])
        meta = OmegaConf.to_container(meta_cfg.repro, resolve=True)
        stated = meta.get("runs")
        protocol_runs = int(stated or meta.get("runs_chosen") or 0)
        if protocol_runs < 1:
            raise ValueError(f"repro.runs=null: conf/experiment/repro/{table}.yaml states no number of runs; set "
                             "repro.runs_chosen")
        k = int(runs) if runs is not None else protocol_runs
        error = _error_measure(table, meta.get("error"))
        for name, spec in meta["cells"].items():
            sched = tuple(spec.get("short", meta.get("short") or [])) if schedule == "short" else ()
            cfg = compose([f"experiment=repro/{table}", *spec.get("overrides", []), *sched, *extra])
            flat = flatten(OmegaConf.to_container(cfg, resolve=True))
            twin = next((c.key for c, f in zip(out, configs, strict=True) if c.steps == int(cfg.max_g_steps)
                         and c.runs == k and c.shares is None and not setting_differences(f, flat)), None)
            out.append(Cell(table=table, name=name, paper=str(meta["paper"]), title=str(meta["table"]),
                            overrides=tuple(spec.get("overrides", [])), schedule=schedule,
                            schedule_overrides=sched, runs=k, protocol_runs=protocol_runs,
                            runs_stated=stated is not None, error=error,
                            metrics=tuple((str(a), str(b)) for a, b in meta["metrics"].items()),
                            published=dict(spec.get("published", {})), paper_steps=int(meta_cfg.max_g_steps),
                            steps=int(cfg.max_g_steps), note=str(spec.get("note", "")),
                            cpu_ms=dict(spec.get("cpu_ms") or {}), shares=twin, config=cfg))
            configs.append(flat)
    return out


def select_cells(cells: Sequence[Cell], tables: Sequence[str] | None = None, names: Sequence[str] = ()) -> list[Cell]:
    """The cells of ``tables`` (None: all) named in ``names`` (``gan`` or ``gdpp_ring:gan``; empty: all);
    one-line ValueError on a name that matches nothing."""
    known = sorted({c.table for c in cells})
    bad = [t for t in tables or () if t not in known]
    if bad:
        raise ValueError(f"--tables {','.join(bad)}: no conf/experiment/repro/<name>.yaml; choose from {known}")
    out = [c for c in cells if (not tables or c.table in tables) and (not names or c.name in names or c.key in names)]
    missing = [n for n in names if not any(n in (c.name, c.key) for c in out)]
    if missing:
        raise ValueError(f"--cells {','.join(missing)}: no such cell in {list(tables or known)}; use a cell name of "
                         "repro.cells (gan) or <table>:<cell>")
    return out


# ---------------------------------------------------------------------------- statistics and the verdict
def percent_scale(name: str) -> float:
    """The factor from a summary metric to the published column ``name``: the papers print ``% HQ`` where the
    summary holds a fraction (``hq_percent`` = 100 × ``toy/hq_fraction``)."""
    return 100.0 if name.endswith("_percent") else 1.0


def decimals(x: float) -> int:
    """Digits after the decimal point of ``x`` as the table file writes it (``99.3`` → 1, ``16.0`` → 1, ``16`` →
    0, ``0.07`` → 2): a YAML float keeps one trailing zero, an integer none."""
    text = repr(x)
    if "e" in text.lower():
        mantissa, exp = text.lower().split("e")
        return max(0, (len(mantissa.split(".")[1]) if "." in mantissa else 0) - int(exp))
    return len(text.split(".")[1]) if "." in text else 0


def tolerance(metric: str, value: float, error: float | None = None, measure: str | None = None,
              n_paper: int | None = None) -> float:
    """How far the paper's ``value`` may lie outside our interval and still count as reproduced: the largest of

    * half a unit in the last digit the paper prints (its rounding: ``99.3`` → 0.05; the error's digits count
      too, ``0.70 ± 0.07`` → 0.005);
    * the paper's own 95% half-width of its mean, t₀.₉₇₅,ₙ₋₁ × SE (``measure`` SE) or × SD / √n (SD), with
      n = ``n_paper`` runs (1.96 when n is unknown): the two intervals overlap exactly when the paper's value lies
      within our interval widened by it;
    * for mode counts (``metric`` ``modes``), :data:`MODE_TOLERANCE` = half a mode: each run counts whole modes,
      so seeds that all find the same count give a zero-width interval, and a paper's mean of 7.6 is 0.4 from our
      8.0 although one run's one mode is the whole difference.
    """
    rounding = 0.5 * 10.0 ** -max(decimals(value), decimals(error) if error is not None else 0)
    spread = 0.0
    if error is not None and measure in ("SE", "SD"):
        q = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n_paper - 1)) if n_paper and n_paper > 1 else 1.96
        spread = q * float(error) * (1.0 if measure == "SE" else 1.0 / math.sqrt(n_paper or 1))
    floor = MODE_TOLERANCE if metric == "modes" else 0.0
    return max(rounding, spread, floor)


@dataclass(frozen=True)
class Summary:
    """Our values of one metric over a cell's runs."""

    values: tuple[float, ...]
    mean: float | None
    sd: float | None
    n: int
    interval: tuple[float, float] | None  #: the 95% bootstrap interval of the mean (n ≥ MIN_N)

    @property
    def se(self) -> float | None:
        """The standard error of the mean, SD / √n."""
        return None if self.sd is None else self.sd / math.sqrt(self.n)

    def error(self, measure: str | None) -> float | None:
        """Our spread in the paper's measure (SE or SD; SD where the paper gives none)."""
        return self.se if measure == "SE" else self.sd


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean, sample SD and n (:func:`gancollapse.aggregate.mean_std`; None and NaN skipped) and the
    :data:`CONFIDENCE` percentile bootstrap interval of the mean (:func:`gancollapse.aggregate.bootstrap_ci`) when
    at least :data:`gancollapse.aggregate.MIN_N` values are finite."""
    xs = tuple(float(v) for v in values if v is not None and not math.isnan(float(v)))
    mean, sd, n = mean_std(list(xs))
    interval = bootstrap_ci(xs, CONFIDENCE) if n >= MIN_N and all(map(math.isfinite, xs)) else None
    return Summary(xs, mean, sd, n, interval)


def agrees(published: float, interval: tuple[float, float] | None, tol: float) -> bool | None:
    """Whether the paper's value lies in our interval widened by ``tol`` on both sides (None: no interval)."""
    if interval is None:
        return None
    lo, hi = interval
    return lo - tol <= published <= hi + tol


def protocol_differences(steps_done: Sequence[int], paper_steps: int, schedule: str, n_finished: int, runs: int,
                         runs_stated: bool, settings: Sequence[str] = (), not_finished: Sequence[str] = ()) -> list[str]:
    """How the runs behind a cell differ from the paper's protocol, one phrase each: their length (the G steps
    the finished runs did, from their summaries, against the file's budget; the ``short`` schedule named), how
    many finished against the paper's number of runs (or ours where the paper gives none), the runs that did not
    finish, and the settings that differ from the protocol's config (:func:`setting_differences`). Empty: the
    runs are the paper's protocol."""
    out = []
    done = sorted(set(int(s) for s in steps_done))
    if done and done != [int(paper_steps)]:
        steps = "/".join(f"{s:,}" for s in done)
        label = "short schedule" if schedule == "short" else "schedule"
        out.append(f"{label}: {steps} G steps of the paper's {int(paper_steps):,}")
    if n_finished != runs:
        out.append(f"{n_finished} runs, the paper's {runs}" if runs_stated else f"{n_finished} runs, {runs} chosen "
                   "(the paper states none)")
    if not_finished:
        out.append("not finished: " + ", ".join(not_finished))
    out.extend(settings)
    return out


def verdict(n: int, differences: Sequence[str], agreement: bool | None) -> tuple[str, str]:
    """(verdict, why) of one published number: ``not measured`` without a finished run (no verdict); ``protocol
    differs`` when the runs differ from the paper's protocol (:func:`protocol_differences`, named in why, with
    whether the value would agree); else ``reproduced`` when the paper's value lies within our interval widened
    by the tolerance (:func:`agrees`), ``not reproduced`` when it does not."""
    if n == 0:
        return "not measured", "no finished run"
    seen = {True: "the value agrees", False: "the value does not agree", None: "no interval"}[agreement]
    if differences:
        return "protocol differs", "; ".join(differences) + f" ({seen})"
    if agreement is None:  # only with fewer than MIN_N runs, which a table's run count already rules out
        return "protocol differs", f"{n} runs: too few for an interval"
    if agreement:
        return "reproduced", "the paper's value lies within our interval ± tolerance"
    return "not reproduced", "the paper's value lies outside our interval ± tolerance, with the paper's settings"


# ---------------------------------------------------------------------------- run records
def cell_dir(out: Path, cell: Cell) -> Path:
    """``<out>/<schedule>/<table>/<cell>``: the cell's runs (those of the cell it shares them with)."""
    table, name = (cell.shares or cell.key).split(":")
    return Path(out) / cell.schedule / table / name


def seed_dirs(directory: Path) -> list[Path]:
    """The cell's run directories ``seed_<s>/`` in seed order."""
    found = [d for d in Path(directory).glob("seed_*") if d.is_dir() and d.name[5:].isdigit()]
    return sorted(found, key=lambda d: int(d.name[5:]))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(summary: Mapping[str, Any] | None, steps: int) -> bool:
    """Whether a run needs no more training: it diverged, or it finished at least ``steps`` G steps."""
    if not summary:
        return False
    status = str(summary.get("status", ""))
    return status == "diverged" or (status == "finished" and int(summary.get("g_steps") or 0) >= int(steps))


def setting_differences(paper: Mapping[str, Any], run: Mapping[str, Any], ignored: Sequence[str] = IGNORED) -> list[str]:
    """``key: paper → ours`` for each flattened config key whose value differs between the protocol's config
    and a run's (the seed and the ``*.seed`` keys that follow it removed, :func:`gancollapse.aggregate.seed_free`),
    except ``ignored`` keys and their children."""
    a, b = seed_free(paper, resolved=True), seed_free(run, resolved=True)
    prefixes = tuple(f"{k}." for k in ignored)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignored or key.startswith(prefixes):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')} → {b.get(key, '<absent>')}")
    return out


@dataclass
class CellRecord:
    """What the runs of one cell did."""

    cell: Cell
    summaries: list[dict[str, Any]]   #: the finished runs' summaries
    steps_done: list[int]
    not_finished: list[str]           #: ``seed_<s> (<status>)`` of runs that did not finish
    settings: list[str]               #: setting differences from the protocol (:func:`setting_differences`)


def read_cell(out: Path, cell: Cell, paper_config: Mapping[str, Any] | None = None) -> CellRecord:
    """The cell's run records under ``out``; ``paper_config`` (flattened, resolved) is the protocol's config the
    runs' ``config.yaml`` are compared with (default: composed from the cell's file and overrides)."""
    summaries, steps, not_finished, settings = [], [], [], []
    dirs = seed_dirs(cell_dir(out, cell))
    if dirs and paper_config is None:
        paper_config = flatten(OmegaConf.to_container(compose(cell.base_overrides()), resolve=True))
    for d in dirs:
        summary = read_summary(d)
        status = str(summary.get("status")) if summary else "no summary"
        if status != "finished":
            not_finished.append(f"{d.name} ({status})")
            continue
        summaries.append(summary)
        steps.append(int(summary.get("g_steps") or 0))
        if (d / "config.yaml").is_file():
            run_cfg = flatten(OmegaConf.to_container(OmegaConf.load(d / "config.yaml"), resolve=True))
            settings.extend(s for s in setting_differences(paper_config, run_cfg) if s not in settings)
        else:
            settings.append(f"{d.name}: no config.yaml")
    return CellRecord(cell, summaries, steps, not_finished, settings)


# ---------------------------------------------------------------------------- the runs
@dataclass
class Job:
    """One training process: a cell's pending seeds as one ensemble, or one seed."""

    cell: Cell
    seeds: tuple[int, ...]
    batched: bool
    command: list[str]
    minutes: float | None  #: estimated CPU minutes (None: the cell has no cost figures)


def batchable(cell: Cell, extra: Sequence[str] = ()) -> tuple[bool, str]:
    """Whether the cell's runs can train as one ``ensemble=K`` process, as the ensemble itself decides
    (:func:`gancollapse.models.ensemble.check_config`), and why not."""
    from gancollapse.models.ensemble import check_config

    if cell.runs < 2:
        return False, "one run"
    if cell.config is None:
        cfg = compose([*cell.base_overrides(), *cell.schedule_overrides, *extra])
    else:
        cfg = cell.config.copy()
    with open_dict(cfg):
        cfg.ensemble = cell.runs
    try:
        check_config(cfg)
    except ValueError as err:
        return False, str(err).split("=")[0].split(":")[0]  # the key the ensemble refuses
    return True, ""


def estimate_minutes(cell: Cell, n_seeds: int, batched: bool) -> float | None:
    """CPU minutes of ``n_seeds`` runs of the cell: G steps × the cell's ``cpu_ms`` (``batched`` for its runs in
    one process, else ``run`` per run) plus :data:`PROCESS_OVERHEAD_MIN` per process."""
    if batched and "batched" in cell.cpu_ms:
        return cell.steps * float(cell.cpu_ms["batched"]) * n_seeds / cell.runs / 60000 + PROCESS_OVERHEAD_MIN
    if "run" not in cell.cpu_ms:
        return None
    return n_seeds * (cell.steps * float(cell.cpu_ms["run"]) / 60000 + PROCESS_OVERHEAD_MIN)


def train_command(cell: Cell, directory: Path, seed: int, extra: Sequence[str], ensemble: int = 1,
                  python: str = sys.executable) -> list[str]:
    size = [f"ensemble={ensemble}"] if ensemble > 1 else []
    return [python, "-m", "gancollapse.train", *cell.base_overrides(), *cell.schedule_overrides, *extra, *size,
            f"seed={seed}", f"hydra.run.dir={directory}"]


def plan_jobs(cells: Sequence[Cell], out: Path, extra: Sequence[str] = (), python: str = sys.executable,
              sequential: bool = False, everything: Sequence[Cell] = ()) -> list[Job]:
    """The processes that finish every cell under ``out``, longest first. A cell whose seeds are all done
    (:func:`is_done`) has none; a cell that shares another's runs is trained as that one (found in ``cells`` or
    ``everything``), once. A cell trains as one ensemble when it is batchable (:func:`batchable`) and none of
    its seeds was started as a single run, or when an ensemble was started there before (its
    ``ensemble.json``); else each pending seed is one process."""
    by_key = {c.key: c for c in [*everything, *cells]}
    jobs, seen = [], set()
    for cell in cells:
        cell = by_key.get(cell.shares or "", cell)
        if cell.key in seen:
            continue
        seen.add(cell.key)
        directory = cell_dir(out, cell)
        seeds = tuple(range(cell.runs))
        pending = tuple(s for s in seeds if not is_done(read_summary(directory / f"seed_{s}"), cell.steps))
        if not pending:
            continue
        started = (directory / ENSEMBLE_FILE).is_file()
        batched = started or (not sequential and not seed_dirs(directory) and batchable(cell, extra)[0])
        if batched:
            jobs.append(Job(cell, seeds, True, train_command(cell, directory, 0, extra, cell.runs, python),
                            estimate_minutes(cell, len(pending), True)))
        else:
            jobs.extend(Job(cell, (s,), False, train_command(cell, directory / f"seed_{s}", s, extra, 1, python),
                            estimate_minutes(cell, 1, False)) for s in pending)
    return sorted(jobs, key=lambda j: -(j.minutes or 0.0))


def makespan(minutes: Sequence[float], jobs: int) -> float:
    """Wall minutes of running the durations ``jobs`` at a time, each next one on the first free slot, in the
    given order (longest first: Graham's LPT schedule)."""
    slots = [0.0] * max(1, int(jobs))
    for m in minutes:
        heapq.heapreplace(slots, slots[0] + float(m))
    return max(slots)


def run_jobs(jobs: Sequence[Job], out: Path, n_jobs: int = 2, extra: Sequence[str] = (),
             python: str = sys.executable) -> list[int]:
    """Train ``jobs`` ``n_jobs`` at a time (one torch thread each, logs under ``<out>/logs/<time>/``); an
    ensemble that failed before training (no ``ensemble.json``) is retried as single runs. Returns the exit
    codes."""
    logs = Path(out) / "logs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    for i, job in enumerate(jobs):
        print(f"  {i:03d} {job.cell.key} seeds {job.seeds[0]}..{job.seeds[-1]}"
              f"{' batched' if job.batched else ''}", flush=True)
    codes = run_commands([j.command for j in jobs], n_jobs, 1, logs)
    retry = []
    for i, (job, rc) in enumerate(zip(jobs, codes, strict=True)):
        directory = cell_dir(out, job.cell)
        if job.batched and rc != 0 and not (directory / ENSEMBLE_FILE).is_file():
            print(f"{job.cell.key}: the ensemble failed before training ({logs / f'{i:03d}.log'}); training its "
                  "seeds one at a time", flush=True)
            retry += [train_command(job.cell, directory / f"seed_{s}", s, extra, 1, python) for s in job.seeds
                      if not is_done(read_summary(directory / f"seed_{s}"), job.cell.steps)]
    if retry:
        codes += run_commands(retry, n_jobs, 1, logs / "single")
    return codes


# ---------------------------------------------------------------------------- the document
def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


@dataclass(frozen=True)
class Row:
    cell: Cell
    metric: str
    published: float
    published_error: float | None
    ours: Summary
    tol: float
    agreement: bool | None
    verdict: str
    why: str
    steps: str


def cell_rows(record: CellRecord) -> list[Row]:
    """One row per published metric of the cell: paper's number, ours, tolerance and verdict."""
    cell = record.cell
    differences = protocol_differences(record.steps_done, cell.paper_steps, cell.schedule, len(record.summaries),
                                       cell.protocol_runs, cell.runs_stated, record.settings, record.not_finished)
    steps = "/".join(f"{s:,}" for s in sorted(set(record.steps_done))) or "—"
    rows = []
    for name, key in cell.metrics:
        if name not in cell.published:
            continue
        value = float(cell.published[name])
        suffix = {"SE": "_se", "SD": "_sd"}.get(cell.error or "", None)
        err = cell.published.get(f"{name}{suffix}") if suffix else None
        scale = percent_scale(name)
        ours = summarize([None if s.get(key) is None else scale * float(s[key]) for s in record.summaries])
        tol = tolerance(name, value, None if err is None else float(err), cell.error,
                        cell.protocol_runs if cell.runs_stated else None)
        agreement = agrees(value, ours.interval, tol)
        label, why = verdict(ours.n, differences if ours.n else [], agreement)
        if record.not_finished and not ours.n:
            why += ": " + ", ".join(record.not_finished)
        rows.append(Row(cell, name, value, None if err is None else float(err), ours, tol, agreement, label, why,
                        steps))
    return rows


def _digits(name: str) -> int:
    return 1 if name in ("modes", "hq_percent") else 2


def _row_line(row: Row) -> str:
    d = _digits(row.metric)
    measure = row.cell.error or "SD"
    paper = f"{row.cell.published[row.metric]}" + (f" ± {row.cell.published[row.metric + '_' + row.cell.error.lower()]}"
                                                  f" ({row.cell.error})" if row.published_error is not None else "")
    o = row.ours
    ours = "not measured" if o.n == 0 else f"{_fmt(o.mean, d)} ± {_fmt(o.error(row.cell.error), d)} ({measure})"
    interval = "—" if o.interval is None else f"[{_fmt(o.interval[0], d)}, {_fmt(o.interval[1], d)}]"
    schedule = row.cell.schedule + (f" ({row.steps} G steps)" if row.steps != "—"
                                     else f" ({row.cell.steps:,} G steps planned)")
    return (f"| {row.cell.name} | {row.metric} | {paper} | {ours} | {o.n} | {interval} | {row.tol:.3g} | {schedule} "
            f"| **{row.verdict}** | {row.why} |")


def plan_lines(cells: Sequence[Cell], jobs: int, extra: Sequence[str] = ()) -> tuple[list[str], float, float]:
    """The plan as markdown table lines (cell, runs, steps, batched, estimated CPU minutes) with the total CPU
    minutes and the LPT wall minutes on ``jobs`` slots: estimates from the cells' ``cpu_ms``, not measurements."""
    lines = ["| cell | runs | G steps (paper) | batched | est. CPU-min |", "|---|---|---|---|---|"]
    durations = []
    for cell in cells:
        if cell.shares:
            lines.append(f"| {cell.key} | {cell.runs} | {cell.steps:,} ({cell.paper_steps:,}) | runs of "
                         f"{cell.shares} | 0 |")
            continue
        ok, why = batchable(cell, extra)
        total = estimate_minutes(cell, cell.runs, ok)
        if ok:
            durations.append(total or 0.0)
        else:
            durations.extend([estimate_minutes(cell, 1, False) or 0.0] * cell.runs)
        lines.append(f"| {cell.key} | {cell.runs} | {cell.steps:,} ({cell.paper_steps:,}) | "
                     f"{'yes' if ok else f'no ({why})'} | {_fmt(total, 1)} |")
    total = math.fsum(durations)
    return lines, total, makespan(sorted(durations, reverse=True), jobs)


def document(records: Sequence[CellRecord], schedule: str, out: Path, plan: tuple[list[str], float, float] | None,
             jobs: int, extra: Sequence[str] = ()) -> str:
    """REPRODUCTION.md's text: the verdict rule, the plan, then one table per paper table."""
    rows = [r for rec in records for r in cell_rows(rec)]
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines = [
        "# Reproduction ledger: the papers' 2D-mixture tables",
        "",
        f"Written by `python -m gancollapse.reproduce` (`make reproduce`) from the run records under `{out}/{schedule}`"
        + (f", every run with the extra overrides `{' '.join(extra)}`" if extra else "")
        + ". Protocols, sources and the published numbers: docs/REPRODUCTION_PROTOCOLS.md; configs: "
        "`conf/experiment/repro/`.",
        "",
        f"Schedule: **{schedule}**"
        + (" — the CPU schedule of each table's `repro.short` (a cell's own `short` replaces it): rows trained for "
           "fewer G steps than the paper say *protocol differs* whatever their numbers; cells whose short schedule is "
           "the paper's budget get a verdict. `--full` runs the papers' budgets." if schedule == "short"
           else " — the papers' budgets (`max_g_steps` of each file)."),
        "",
        "## How to run it",
        "",
        "* `make reproduce-plan` (`python -m gancollapse.reproduce --plan`): every cell, its runs, whether its seeds "
        "train batched in one process, and the estimated CPU and wall minutes; trains nothing.",
        "* `make reproduce` (`python -m gancollapse.reproduce`): trains every cell's missing seeds two processes at a "
        "time under `multirun/reproduce/<short|full>/<table>/<cell>/seed_<s>/`, then rewrites this file. A rerun "
        "resumes: finished seeds are skipped, interrupted ones continue from their last checkpoint.",
        "* `make reproduce REPRO_ARGS=\"--tables gdpp_ring --cells gan\"`: some cells only; `REPRO_ARGS=--full`: "
        "the papers' budgets (days on a CPU); `REPRO_ARGS=--no-train`: only this file, from the runs on disk; "
        "`REPRO_ARGS=\"--runs 2 -- max_g_steps=2\"`: a tiny smoke run (its rows say *protocol differs*).",
        "",
        "## How a row is judged",
        "",
        "* **ours**: the cell's finished runs (seeds 0…K−1, K the paper's number of runs, or ours where it states "
        "none), each scored at the end of training on 2,500 samples as the paper scores them (`summary.json`; "
        "% HQ = 100 × `toy/hq_fraction`); mean ± the paper's error measure (SE = SD/√n; SD where the paper gives "
        "none), n, and the 95% percentile bootstrap interval of the mean (`gancollapse.aggregate.bootstrap_ci`, "
        "9,999 resamples; n ≥ 3). With 5–10 runs a bootstrap interval is narrower than its nominal 95% "
        "(scripts/bootstrap_coverage.py).",
        "* **tolerance τ** (per number, `gancollapse.reproduce.tolerance`): the largest of half a unit in the last "
        "digit the paper prints (its rounding); the paper's own 95% half-width, t(0.975, n−1) × its SE (or × SD/√n), "
        "where it states an error and n; and, for mode counts, half a mode — counts are whole numbers per run, so "
        "seeds that all find 8 modes give a zero-width interval although a paper mean of 7.6 differs from it by one "
        "run's single mode.",
        "* **reproduced**: the runs follow the paper's protocol (length, number of runs, every setting of the "
        "config; differences are read from each run's `summary.json` and `config.yaml`, not from what was asked) "
        "and the paper's value lies within [lo − τ, hi + τ] of our interval.",
        "* **not reproduced**: the same protocol, and the paper's value lies outside that band.",
        "* **protocol differs**: the runs differ from the protocol (a short schedule, fewer runs, a run that did "
        "not finish, a changed setting): the row says how, and whether its value would agree.",
        "* **not measured**: no finished run behind the cell: no verdict.",
        "",
        f"Verdicts: {', '.join(f'{v} {counts[v]}' for v in VERDICTS)}.",
        "",
    ]
    if plan is not None:
        plan_table, total, wall = plan
        lines += ["## Plan (planned, not measured)", "",
                  f"Estimated CPU minutes per cell from the cells' `cpu_ms` (CPU-ms per G step of one run and of the "
                  f"cell's runs batched, `scripts/bench_repro.py`, docs/BENCHMARKS.md) plus "
                  f"{PROCESS_OVERHEAD_MIN} CPU-min per process; batched where `ensemble.check_config` accepts the "
                  f"cell. Planned: {total:.0f} CPU-min, about {wall:.0f} min on {jobs} cores with {jobs} processes at "
                  "a time (longest first) on an otherwise idle machine.", "", *plan_table, ""]
    by_table: dict[str, list[CellRecord]] = {}
    for rec in records:
        by_table.setdefault(rec.cell.table, []).append(rec)
    for table, recs in by_table.items():
        c = recs[0].cell
        runs = f"{c.protocol_runs} runs" + ("" if c.runs_stated else " (chosen: the paper states none)")
        if c.runs != c.protocol_runs:
            runs += f"; {c.runs} asked for (--runs)"
        lines += [f"## {table}: {c.title}", "", f"{c.paper}. Error measure: {MEASURE_NAMES.get(c.error or '', 'none given')}; {runs}; "
                  f"paper budget {c.paper_steps:,} G steps.", "",
                  "| cell | metric | paper | ours | n | 95% interval | τ | schedule | verdict | why |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [_row_line(r) for rec in recs for r in cell_rows(rec)]
        notes = [f"`{rec.cell.name}`: {rec.cell.note}" for rec in recs if rec.cell.note]
        notes += [f"`{rec.cell.name}`: its runs are `{rec.cell.shares}`'s (the same config, trained once)"
                  for rec in recs if rec.cell.shares]
        lines += ([""] + [f"Note — {n}" for n in notes] if notes else []) + [""]
    return "\n".join(lines)


def write_document(cells: Sequence[Cell], out: Path, doc: Path, jobs: int = 2, extra: Sequence[str] = (),
                   with_plan: bool = True) -> Path:
    """docs/REPRODUCTION.md (``doc``) from the records of ``cells`` under ``out``."""
    schedule = cells[0].schedule if cells else "short"
    records = [read_cell(out, c) for c in cells]
    plan = plan_lines(cells, jobs, extra) if with_plan else None
    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(document(records, schedule, out, plan, jobs, extra))
    return doc


# ---------------------------------------------------------------------------- the command line
def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


@exit_when_stopped
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gancollapse.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=_csv, default=None, help=f"repro files to train (default: all of {table_names()})")
    parser.add_argument("--cells", type=_csv, default=[], help="cells to train (gan or <table>:<cell>; default: all)")
    parser.add_argument("--full", action="store_true", help="the papers' schedules (default: each table's short one)")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time (one torch thread each)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="runs go to <out>/<short|full>/<table>/<cell>/")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="the ledger to write")
    parser.add_argument("--runs", type=int, default=None, help="seeds per cell instead of the tables' (protocol differs)")
    parser.add_argument("--plan", action="store_true", help="print the cells, runs, cost and batching; train nothing")
    parser.add_argument("--no-train", action="store_true", help="only write the ledger from the runs on disk")
    parser.add_argument("--sequential", action="store_true", help="one process per seed, never an ensemble")
    parser.add_argument("--override", action="append", default=[], help="a Hydra override for every run (repeatable)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: must be >= 1")
    schedule = "full" if args.full else "short"
    extra = [*args.override, *args.overrides]
    try:
        # the ledger covers every table; the cells not asked for show what is on disk (or "not measured")
        ledger = load_cells(schedule, extra, args.runs)
        cells = select_cells(ledger, args.tables, args.cells)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    lines, total, wall = plan_lines(cells, args.jobs, extra)
    planned = (f"planned ({schedule} schedule, {len(cells)} cells): {total:.0f} CPU-min; about {wall:.0f} wall-min "
               f"with {args.jobs} processes at a time on {args.jobs} idle cores (estimates from the cells' cpu_ms, "
               "not measurements)")
    if args.plan:
        print("\n".join(lines))
        print(planned)
        print(f"train: make reproduce (runs under {args.out}/{schedule}/, ledger {args.doc}); a rerun resumes; "
              "--no-train writes only the ledger")
        return
    if not args.no_train:
        print(planned + "; --plan prints it per cell; Ctrl-C stops, a rerun resumes", flush=True)
    t0 = time.perf_counter()
    if not args.no_train:
        jobs = plan_jobs(cells, args.out, extra, sequential=args.sequential, everything=ledger)
        print(f"reproduce ({schedule}): {len(jobs)} training processes, {args.jobs} at a time", flush=True)
        if jobs:
            run_jobs(jobs, args.out, args.jobs, extra)
    doc = write_document(ledger, args.out, args.doc, args.jobs, extra)
    print(f"reproduce ({schedule}): {time.perf_counter() - t0:.0f} s; {doc}")


def cli() -> None:
    """The ``gancollapse-reproduce`` console script."""
    main()


if __name__ == "__main__":
    main()
