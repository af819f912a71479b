"""Sweep report: ``python -m gancollapse.report <multirun dir>``.

Reads only each run's ``summary.json`` and ``config.yaml`` (plus the sampler sub-runs that
``python -m gancollapse.sample`` writes, ``<run>/samples_<sampler>[_<tag>]/summary.json``, so pointing it at one
run dir compares samplers on that run) and writes ``leaderboard.md``, ``leaderboard.csv`` and
``scatter_grid.png`` (each run's final scatter or sample grid) into the sweep directory. Runs that stopped without
a summary.json are listed too, with their status: ``killed`` (a checkpoint to resume from), ``failed`` (none),
``running (pid N)`` (the run's lock is held).

The columns are :data:`COLUMNS` (the run's identity, the long-standing metrics, steps, time, status) and every
metric column a run's evaluator declared (``summary.json``'s ``metric_columns``: a metric added to
``evaluator.metrics`` shows up without a change here). Runs that differ only in seed are one row: mean ± std over
n seeds and, for the metric columns (:data:`STAT_KEYS` and the declared ones) of rows with n ≥ 3, a 95%
percentile-bootstrap interval of the mean; with
``--baseline <row>`` each row is also compared with that row by Welch's t-test (Holm-adjusted across the rows
by default, ``--correction none`` for raw p), ``*`` marking p < 0.05 (``--alpha``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gancollapse.aggregate import (
    CI_METHODS,
    CORRECTIONS,
    ENSEMBLE_FILE,
    MIN_N,
    aggregate_seeds,
    confidence_columns,
    config_identity,
    run_overrides,
    run_signature,
    seed_spread,
    seed_values,
)
from gancollapse.callbacks import describe_run
from gancollapse.plots import image_grid
from gancollapse.runio import LAST, LOCK_NAME, MissingError, lock_holder, one_line_errors

# Columns shown when present, with how to format them; order is the leaderboard's.
COLUMNS: list[tuple[str, str, str]] = [
    ("run", "run", "{}"),
    ("overrides", "overrides", "{}"),
    ("dataset", "dataset", "{}"),
    ("loss", "loss", "{}"),
    ("regularizers", "regularizers", "{}"),
    ("sampler", "sampler", "{}"),
    ("seed", "seed", "{}"),
    ("n", "n", "{}"),
    ("runs", "runs", "{}"),  # the group's run dirs when n > 1 (`run` is the first: its picture is shown)
    ("sample_seed", "sample seed", "{}"),
    ("toy/modes", "modes", "{:.0f}"),
    ("toy/hq_fraction", "HQ %", "{:.1%}"),
    ("toy/reverse_kl", "reverse KL", "{:.3f}"),
    ("modes", "modes", "{:.0f}"),
    ("kl_uniform", "KL", "{:.3f}"),
    ("fid", "FID", "{:.2f}"),
    ("best/fid", "best FID", "{:.2f}"),
    ("kid", "KID", "{:.4f}"),
    ("is", "IS", "{:.2f}"),
    ("g_steps", "G steps", "{:.0f}"),
    ("wall_seconds", "wall s", "{:.1f}"),
    ("status", "status", "{}"),
    ("source", "source", "{}"),  # only in a report that includes earlier leaderboards (--include)
]
#: the metric columns that get an interval and a test (when a row has ≥ 3 runs); the rest show mean ± std
STAT_KEYS: tuple[str, ...] = ("toy/modes", "toy/hq_fraction", "toy/reverse_kl", "modes", "kl_uniform", "fid",
                              "best/fid", "kid", "is")
#: summary.json's record of the leaderboard columns its evaluator's metrics declared (key -> [label, format];
#: :mod:`gancollapse.metrics.metric_set`): shown after the columns above that are metrics, with intervals and tests
DECLARED = "metric_columns"


def declared_columns(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """The columns the runs' metrics declared (:data:`DECLARED`, first declaration of a key wins), taken out of
    the rows (they are not values to average)."""
    out: dict[str, tuple[str, str]] = {}
    for r in rows:
        declared = r.pop(DECLARED, None)
        if isinstance(declared, dict):
            for key, spec in declared.items():
                if isinstance(spec, (list, tuple)) and len(spec) == 2:
                    out.setdefault(str(key), (str(spec[0]), str(spec[1])))
    return out


def report_columns(declared: dict[str, tuple[str, str]]) -> tuple[list[tuple[str, str, str]], tuple[str, ...]]:
    """(the leaderboard's columns, its metric keys): :data:`COLUMNS` with each declared key it lacks inserted
    after the built-in metric columns (before ``g_steps``), and :data:`STAT_KEYS` plus those keys."""
    known = {k for k, _, _ in COLUMNS}
    extra = [(k, label, fmt) for k, (label, fmt) in declared.items() if k not in known]
    at = next(i for i, (k, _, _) in enumerate(COLUMNS) if k == "g_steps")
    return COLUMNS[:at] + extra + COLUMNS[at:], STAT_KEYS + tuple(k for k, _, _ in extra if k not in STAT_KEYS)
#: bootstrap resamples per interval, and the seed of their generator (the report is reproducible)
N_RESAMPLES, BOOTSTRAP_SEED = 9999, 0
PICTURES = ("plots/final.png", "samples/final.png", "scatter.png", "samples.png")
#: what an included leaderboard's row loses: the statistics of its own report, recomputed in the merged one
RECOMPUTED_SUFFIXES = ("/lo", "/hi", "/p", "/p_holm", "/significant")
#: the ``source`` of the rows measured from the run directories, in a report that includes earlier leaderboards
THIS_SWEEP = "this sweep"


def find_runs(root: Path) -> list[Path]:
    """Directories below ``root`` (``root`` included) that hold a summary.json, and run directories without
    one (killed, failed or still running: :func:`is_run_dir`); hidden dirs (submitit's ``.submitit/``,
    ``.hydra/``) are skipped, and so is an ensemble's own directory (its member runs below it are found)."""
    root = Path(root)
    found = {p.parent for p in root.rglob("summary.json")}
    found |= {p.parent.parent if p.parent.name == ".hydra" else p.parent for p in root.rglob("config.yaml")}
    return sorted((d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts)
                   and not (d / ENSEMBLE_FILE).is_file()
                   and ((d / "summary.json").is_file() or is_run_dir(d))), key=_natural_key)


def is_run_dir(path: Path) -> bool:
    """A training run's directory: Hydra's ``.hydra/config.yaml``, or ``config.yaml`` beside what
    ``train.run`` writes (checkpoints/, metrics.csv, .lock); not a W&B ``files/`` dir."""
    return (path / ".hydra" / "config.yaml").is_file() or (
        (path / "config.yaml").is_file() and any((path / m).exists() for m in ("checkpoints", "metrics.csv", LOCK_NAME)))


def run_status(run_dir: Path) -> str:
    """The status of a run without summary.json: running (its lock is held), killed (a checkpoint to resume
    from), or failed (stopped before its first checkpoint)."""
    pid = lock_holder(run_dir)
    if pid is not None:
        return f"running (pid {pid})"
    if (run_dir / "checkpoints" / LAST).is_file():
        return "killed (no summary; rerun to resume)"
    return "failed (no summary, no checkpoint)"


def _run_config(run_dir: Path) -> Any:
    """The run's resolved config.yaml, else Hydra's composed one with its config-group choices."""
    if (run_dir / "config.yaml").is_file():
        return OmegaConf.load(run_dir / "config.yaml")
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    choices = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.choices") if hydra_yaml.is_file() else None
    if choices is not None:
        cfg.choices = {k: v for k, v in choices.items() if not str(k).startswith("hydra")}
    return cfg


def _natural_key(p: Path) -> list[Any]:

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def load_row(run_dir: Path, root: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"run": str(run_dir.relative_to(root)) if run_dir != root else "."}
    if not (run_dir / "summary.json").is_file():  # killed, failed or running: listed with its status
        with contextlib.suppress(Exception):  # an unreadable config still leaves the row and its status
            row.update(describe_run(_run_config(run_dir)))
        row["status"] = run_status(run_dir)
        return row
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file() and "loss" not in summary:


        row.update(describe_run(OmegaConf.load(cfg_path)))
    row.update(summary)
    return row


#: leaderboard.csv columns that name things: read back as text even where they look like numbers (run dir 0_1)
TEXT_COLUMNS = frozenset({"run", "runs", "overrides", "config_id", "seed", "sample_seed", "sampler",
                          "sampler_overrides", "status", "dataset", "model", "loss", "regularizers", "applied",
                          "source"})
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)")


def _csv_cell(key: str, text: str) -> Any:
    """A leaderboard.csv cell read back: per-run value lists from JSON, numbers as int (whole) or float, names
    (:data:`TEXT_COLUMNS`), seed lists, dict records and labels as the text."""
    if key.endswith("/values"):
        return json.loads(text)
    if key in TEXT_COLUMNS or not _NUMBER.fullmatch(text):
        return text
    return int(text) if text.lstrip("+-").isdigit() else float(text)


def load_leaderboard(path: Path | str) -> list[dict[str, Any]]:
    """The rows of an earlier report's ``leaderboard.csv``, for a report over several sittings
    (``--include``): each keeps its means, spreads and per-run values (``<metric>/values``, what the intervals
    and tests are computed from) and its ``source`` (the file, unless the file itself merged earlier ones);
    its old intervals, p-values and baseline flag are dropped, to be recomputed with the other rows (Holm's m
    counts them all).

    Raises:
        MissingError: the file is missing, is not a leaderboard.csv (no ``run`` and ``n`` columns), or has a row
            of n ≥ 3 runs with a metric's mean but not its per-run values (a report older than those columns:
            its rows could not be tested).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingError(f"--include {path}: no such file", "pass the leaderboard.csv an earlier report wrote")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames or []
    if not {"run", "n"} <= set(fields) or not rows:
        raise MissingError(f"--include {path}: not a leaderboard (no rows, or no run and n columns)",
                           "pass the leaderboard.csv that python -m gancollapse.report wrote")
    out = []
    for r in rows:
        try:
            row = {k: _csv_cell(k, v) for k, v in r.items()
                   if v not in ("", None) and k != "baseline" and not k.endswith(RECOMPUTED_SUFFIXES)}
        except json.JSONDecodeError as e:
            raise MissingError(f"--include {path}: row {r.get('run')!r} has a per-run value list that is not JSON "
                               f"({e})", "pass the leaderboard.csv as the report wrote it") from e
        missing = [k for k in STAT_KEYS if k in row and f"{k}/values" not in row]
        if int(row.get("n", 1)) >= MIN_N and missing:
            raise MissingError(f"--include {path}: row {r.get('run')!r} (n = {row['n']}) has no per-run values of "
                               f"{missing}, so it cannot be tested", "rerun python -m gancollapse.report on its "
                               "sweep (reports since the confidence columns write <metric>/values)")
        if row.get("source") in (None, THIS_SWEEP):
            row["source"] = str(path)
        out.append(row)
    return out


def _identity(row: dict[str, Any]) -> str:
    return str(row.get("config_id") or row_label(row))


def _enough_runs(here: dict[str, Any], earlier: dict[str, Any]) -> bool:
    """Whether this sweep's row has, for every metric the earlier row was tested on, as many runs with a value
    as a test needs (:data:`MIN_N`, or the earlier row's count when that was smaller)."""
    keys = [k.removesuffix("/values") for k in earlier if k.endswith("/values")]
    return all(len(seed_values(here, k)) >= min(MIN_N, len(seed_values(earlier, k))) for k in keys)


def merge_included(rows: list[dict[str, Any]],
                   included: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """This sweep's ``rows`` (``source`` = :data:`THIS_SWEEP`) merged with the ``included`` rows of earlier
    leaderboards. A configuration is the same when its ``config_id`` (:func:`gancollapse.aggregate.
    config_identity`) is, or, for an included file written before that column, its label (:func:`row_label`).
    Measured in both: this sweep's row stands if it has the runs to be tested (:func:`_enough_runs`), else the
    included row stands and this sweep's is left out. Returns (rows, the labels replaced by this sweep, the
    labels of this sweep's rows left out for too few finished runs).

    Raises:
        ValueError: one configuration in two included rows (which would stand is a guess), or a label match
            whose datasets differ (an old file's label cannot tell configurations of two datasets apart).
    """
    here = {}
    for r in rows:
        here[str(r["config_id"])] = r
        here.setdefault(row_label(r), r)
    seen: dict[str, str] = {}
    kept, superseded, short = [], [], []
    dropped: set[int] = set()
    for r in included:
        key = _identity(r)
        if key in seen:
            where = "twice in " + seen[key] if seen[key] == r["source"] else f"in both {seen[key]} and {r['source']}"
            raise ValueError(f"--include: the configuration {key!r} is a row {where}; include it once")
        seen[key] = str(r["source"])
        match = here.get(key)
        if match is None:
            kept.append(r)
            continue
        if r.get("dataset") not in (None, match.get("dataset")):
            raise ValueError(f"--include: {key!r} names a {r.get('dataset')} row in {r['source']} and a "
                             f"{match.get('dataset')} row here; compare one dataset per report")
        if _enough_runs(match, r):
            superseded.append(row_label(r))
        else:
            kept.append(r)
            short.append(row_label(match))
            dropped.add(id(match))
    mine = [{**r, "source": THIS_SWEEP} for r in rows if id(r) not in dropped]
    return mine + kept, superseded, short


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


#: mode-counted image sweeps (Stacked MNIST / Stacked Digits): the collapse benchmark's headline first
MODE_COUNT_ORDER: tuple[tuple[str, str, int], ...] = (("modes", "modes", -1), ("kl_uniform", "KL to uniform", 1))
#: toy sweeps
TOY_ORDER: tuple[tuple[str, str, int], ...] = (("toy/modes", "modes", -1), ("toy/hq_fraction", "HQ %", -1),
                                               ("toy/reverse_kl", "reverse KL", 1))


def _present(row: dict[str, Any], key: str) -> bool:
    v = row.get(key)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _order(rows: list[dict[str, Any]]) -> tuple[tuple[str, str, int], ...]:
    """The (key, label, sign) columns rows are compared on, in turn; sign -1: larger is better. FID (best/fid,
    else the final fid) comes after the mode counts when the sweep counts modes, else first."""
    fid = (("fid", "FID", 1),)
    if any(_present(r, "modes") for r in rows):
        return MODE_COUNT_ORDER + fid
    return fid + TOY_ORDER


def _fid(r: dict[str, Any]) -> float | None:
    return next((float(r[k]) for k in ("best/fid", "fid") if _present(r, k)), None)


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first (:func:`sort_description` says how): for mode-counted sweeps most modes, then lowest KL to
    uniform, then lowest FID; otherwise lowest FID (best/fid when tracked) when runs report one, then most modes,
    highest HQ %, lowest reverse KL. Missing values sort last."""
    order = _order(rows)

    def key(r: dict[str, Any]) -> tuple:
        out = []
        for k, _, sign in order:
            v = _fid(r) if k == "fid" else (float(r[k]) if _present(r, k) else None)
            out.append(math.inf if v is None else sign * v)
        return tuple(out)

    return sorted(rows, key=key)


def sort_description(rows: list[dict[str, Any]]) -> str:
    """The order :func:`sort_rows` gives ``rows``, in words: the columns it compares that the rows have, and in
    which direction (``sorted by modes (most first), then HQ % (highest first), then reverse KL (lowest first)``)."""
    keys = []
    for k, label, sign in _order(rows):
        if k == "fid":
            with_fid = [r for r in rows if _fid(r) is not None]
            if not with_fid:
                continue
            if any(_present(r, "best/fid") for r in with_fid):
                # a row without best/fid is placed by its final FID
                label = "best FID" + ("" if all(_present(r, "best/fid") for r in with_fid) else ", else FID")
        elif not any(_present(r, k) for r in rows):
            continue
        direction = ("most" if "modes" in k else "highest") if sign < 0 else "lowest"
        keys.append(f"{label} ({direction} first)")
    return "sorted by " + ", then ".join(keys) if keys else "no metric to sort by: in run order"


# ---------------------------------------------------------------------------- the baseline row
def is_sampling_row(row: dict[str, Any]) -> bool:
    """A row of sampler sub-runs (``python -m gancollapse.sample``): scored on its own sample count, so it is
    compared only with a sampling baseline (and a training row only with a training baseline)."""
    return row.get("sample_seed") not in (None, "")


def row_label(row: dict[str, Any]) -> str:
    """How the report names a row: its distinguishing overrides (else its first run dir), plus
    ``sampler=<name>`` for a sampling row."""
    label = str(row.get("overrides") or row.get("run"))
    return label + (f" sampler={row.get('sampler')}" if is_sampling_row(row) else "")


def _row_words(row: dict[str, Any]) -> list[str]:
    runs = str(row.get("runs") or row.get("run") or "").split(",")
    return [*str(row.get("overrides") or "").split(), *runs] + (
        [f"sampler={row.get('sampler')}"] if is_sampling_row(row) else [])


def _word_matches(word: str, token: str) -> bool:
    value = token.split("=", 1)[1] if "=" in token else None
    return word == token or (value is not None and word in (value, value.rsplit("/", 1)[-1]))


def find_baseline(rows: list[dict[str, Any]], name: str) -> int:
    """The index of the row ``--baseline <name>`` names. A row is named by (first) its whole label
    (:func:`row_label`, as in the ``overrides`` column), its ``config_id`` or one of its run dirs (``ns_s0``,
    ``ns_s0/samples_prior``); else by words that each match one of its overrides, either whole
    (``loss=hinge``), by value (``hinge``) or by the value's last path part (``ns`` for
    ``experiment=benchmark/ns``), or its sampler (``ns prior``). When such words fit a training row and the
    sampling rows drawn from its checkpoints, the training row is meant.

    Raises:
        ValueError: no row, or more than one, fits ``name`` (the message lists the rows' labels).
    """
    words = name.split()
    exact = [i for i, r in enumerate(rows) if name in (row_label(r), r.get("config_id"))
             or name in str(r.get("runs") or r.get("run")).split(",")]
    fits = exact or [i for i, r in enumerate(rows)
                     if words and all(any(_word_matches(w, t) for t in _row_words(r)) for w in words)]
    if len(fits) > 1:
        training = [i for i in fits if not is_sampling_row(rows[i])]
        fits = training if len(training) == 1 else fits
    if len(fits) == 1:
        return fits[0]
    labels = [row_label(rows[i]) for i in (fits or range(len(rows)))]
    raise ValueError(f"--baseline={name!r}: {'fits several rows' if fits else 'fits no row'} of the leaderboard; "
                     f"name one row by its label or a run dir, e.g. one of {labels}")


# ---------------------------------------------------------------------------- the table
def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ci_cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """The interval column's cell: ``[lo, hi]`` in the value's format, ``n<3: no interval`` for a row with
    fewer runs (that have a value), ``–`` when there is no value (or an infinite one)."""
    if f"{key}/lo" in row:
        return f"[{_fmt(row[f'{key}/lo'], fmt)}, {_fmt(row[f'{key}/hi'], fmt)}]"
    if not _present(row, key):
        return "–"
    return f"n<{MIN_N}: no interval" if len(seed_values(row, key)) < MIN_N else "–"


def p_cell(row: dict[str, Any], key: str, base: dict[str, Any] | None) -> str:
    """The test column's cell: the (Holm-adjusted, when computed) p of Welch's test against the baseline, with
    `` *`` when significant; else why there is none."""
    if row.get("baseline"):
        return "baseline"
    if f"{key}/p" in row:
        p = row.get(f"{key}/p_holm", row[f"{key}/p"])
        if math.isnan(p):
            return "no spread: no test"
        return _fmt_p(p) + (" *" if row.get(f"{key}/significant") else "")
    if not _present(row, key):
        return "–"
    if len(seed_values(row, key)) < MIN_N:
        return f"n<{MIN_N}: no test"
    if base is not None and len(seed_values(base, key)) < MIN_N:
        return f"baseline n<{MIN_N}: no test"
    return "not compared"


def leaderboard_markdown(rows: list[dict[str, Any]], stats: bool = False, baseline: int | None = None,
                         correction: str = "holm", alpha: float = 0.05,
                         columns: list[tuple[str, str, str]] | None = None,
                         stat_keys: tuple[str, ...] | None = None) -> str:
    """The leaderboard table of ``columns`` (default :data:`COLUMNS`). With ``stats``, each metric of
    ``stat_keys`` (default :data:`STAT_KEYS`) is followed by its interval column (``<label> 95% CI``) and, with a
    ``baseline`` row, its test column (``<label> p (Holm)`` / ``<label> p``)."""
    base = rows[baseline] if baseline is not None else None
    level = f"{100 * (1 - alpha):g}% CI"
    columns, stat_keys = columns or COLUMNS, STAT_KEYS if stat_keys is None else stat_keys
    cols: list[tuple[str, Any]] = []
    for k, h, f in columns:
        if not any(k in r for r in rows):
            continue
        cols.append((h, lambda r, k=k, f=f: _fmt(r.get(k), f) + seed_spread(r, k, f)))
        if stats and k in stat_keys:
            cols.append((f"{h} {level}", lambda r, k=k, f=f: ci_cell(r, k, f)))
            if base is not None:
                cols.append((f"{h} p" + (" (Holm)" if correction == "holm" else ""),
                             lambda r, k=k: p_cell(r, k, base)))
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(cell(r) for _, cell in cols) + " |")
    return "\n".join(lines) + "\n"


def statistics_description(rows: list[dict[str, Any]], baseline: int | None, families: dict[str, int],
                           alpha: float, correction: str, method: str) -> str:
    """The leaderboard's paragraph on its statistics: n, the interval method, the test, alpha, the baseline."""
    ns = sorted({int(r.get("n", 1)) for r in rows})
    n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    interval = ("percentile bootstrap" if method == "percentile" else "BCa bootstrap")
    out = (f"Statistics: n = {n_text} runs per row. Each metric: mean ± sample std over the row's runs; "
           f"{100 * (1 - alpha):g}% CI = {interval} interval of the mean (scipy.stats.bootstrap, {N_RESAMPLES} "
           f"resamples, generator seed {BOOTSTRAP_SEED}), only for rows with n ≥ {MIN_N}. From few seeds such an "
           f"interval is too narrow: a 95% one covers the true mean of normal data about 75% of the time at "
           f"n = 3 and 83% at n = 5 (scripts/bootstrap_coverage.py); judge differences by the test, not by "
           f"overlapping intervals.")
    if baseline is None:
        return out + " No test: pass --baseline <row> to compare the rows with one of them."
    base = rows[baseline]
    tested = max(families.values(), default=0)
    adjust = (f"p adjusted by Holm's method across the rows tested on each metric (up to {tested})"
              if correction == "holm" else "raw p, no multiple-comparison correction")
    kind = "sampling" if is_sampling_row(base) else "training"
    return out + (f" Test: Welch's two-sample t-test (unequal variances, two-sided) of each row with n ≥ {MIN_N} "
                  f"against the baseline `{row_label(base)}` (n = {base.get('n', 1)}), {kind} rows only; {adjust}; "
                  f"`*`: p < {alpha:g}.")


def write_report(root: Path | str, out: Path | str | None = None, baseline: str | None = None,
                 alpha: float = 0.05, correction: str = "holm", ci_method: str = "percentile",
                 include: list[Path | str] | tuple[Path | str, ...] = ()) -> Path:
    """Write leaderboard.md/.csv and scatter_grid.png for every run below ``root``; returns the .md path.

    Rows with n ≥ 3 runs get (1 − ``alpha``) bootstrap intervals (``ci_method``) of their metrics' means; with
    a ``baseline`` (a row name, :func:`find_baseline`) the rows are tested against it (Welch, ``correction``).
    ``include``: earlier reports' leaderboard.csv files whose rows join the table (:func:`load_leaderboard`,
    :func:`merge_included`: a configuration measured here again replaces its included row), each row naming
    its ``source``, so configurations run in different sittings are tested in one family.
    A bad option or a baseline that names no row (or several) raises before any file is written."""
    if correction not in CORRECTIONS:
        raise ValueError(f"--correction={correction}: unknown; use one of {list(CORRECTIONS)}")
    if ci_method not in CI_METHODS:
        raise ValueError(f"--ci-method={ci_method}: unknown; use one of {list(CI_METHODS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"--alpha={alpha}: must lie in (0, 1); 0.05 gives 95% intervals and p < 0.05")
    root = Path(root)
    if not root.is_dir():
        raise MissingError(f"{root} is not a directory", "pass a multirun directory, e.g. multirun/2026-11-23/12-00-00")
    runs = find_runs(root)
    if not runs:
        raise MissingError(f"no runs below {root} (no summary.json or run directory): this is not a sweep dir",
                           "pass the directory a sweep (-m) or a run wrote, e.g. multirun/<date>/<time>")
    included = [row for path in include for row in load_leaderboard(path)]
    loaded = [load_row(r, root) for r in runs]
    columns, stat_keys = report_columns(declared_columns(loaded))  # built-in columns + the metrics' own
    # One row per configuration: runs that differ only in seed are averaged (mean ± std, n).
    rows = aggregate_seeds(loaded, [run_signature(r) for r in runs], [run_overrides(r) for r in runs],
                           values_of=stat_keys)
    for r in rows:  # the configuration's name across sittings (a later report's --include matches on it)
        r["config_id"] = config_identity(root / str(r["run"]))
    superseded: list[str] = []
    short: list[str] = []
    if include:
        rows, superseded, short = merge_included(rows, included)
        included_keys = [k.removesuffix("/values") for r in rows if r["source"] != THIS_SWEEP for k in r
                         if k.endswith("/values")]
        extra = [k for k in dict.fromkeys(included_keys) if k not in stat_keys]  # metrics only they declared
        columns, stat_keys = columns + [(k, k, "{:.4g}") for k in extra], stat_keys + tuple(extra)
    rows = sort_rows(rows)
    base = find_baseline(rows, baseline) if baseline else None
    stats = any(int(r.get("n", 1)) > 1 for r in rows)  # no repeated seeds: nothing to put an interval on
    families: dict[str, int] = {}
    if stats:
        families = confidence_columns(
            rows, stat_keys, base, alpha, correction, ci_method, N_RESAMPLES, BOOTSTRAP_SEED,
            compared=[base is not None and is_sampling_row(r) == is_sampling_row(rows[base]) for r in rows])
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    md = out / "leaderboard.md"
    about = (statistics_description(rows, base, families, alpha, correction, ci_method) if stats else
             "One run per configuration: no intervals or tests (repeat seeds, e.g. seed=0,1,2, to get them).")
    if include:
        about += (f"\n\nRows from earlier leaderboards (the `source` column): "
                  f"{sum(r['source'] != THIS_SWEEP for r in rows)} of {len(rows)}, from {', '.join(map(str, include))}; "
                  f"their per-run values are as those reports recorded them, their intervals and tests are "
                  f"recomputed here." + (f" Measured again in this sweep, so taken from its runs: "
                                         f"{', '.join(f'`{s}`' for s in superseded)}." if superseded else "")
                  + (f" Measured again here with too few finished runs to test, so the earlier row stands: "
                     f"{', '.join(f'`{s}`' for s in short)}." if short else ""))
    md.write_text(f"# Leaderboard: {root}\n\n{len(runs)} runs{' here' if include else ''} in {len(rows)} configurations (mean ± std over seeds, n runs each), best first: {sort_description(rows)}.\n\n{about}\n\n" + leaderboard_markdown(rows, stats, base, correction, alpha, columns, stat_keys))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        # per-run values (``<metric>/values``, in ``runs`` order) as JSON lists: the data the tests used
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows)
    pictures, titles = [], []
    for r in rows:
        if r.get("source", THIS_SWEEP) != THIS_SWEEP:
            continue  # its pictures stayed with its own sweep
        run_dir = root / r["run"]
        pic = next((run_dir / p for p in PICTURES if (run_dir / p).is_file()), None)
        if pic is not None:
            pictures.append(pic)
            parts = [str(r.get(k)) for k in ("loss", "regularizers", "sampler") if r.get(k) not in (None, "prior")]
            stats = (f"{_fmt(r.get('toy/modes'), '{:.0f}')} modes, HQ {_fmt(r.get('toy/hq_fraction'), '{:.0%}')}"
                     if "toy/modes" in r else f"FID {_fmt(r.get('fid'), '{:.1f}')}")
            titles.append(f"{r['run']}: {' / '.join(parts)}\n{stats}")
    if pictures:

        image_grid(pictures, titles, out / "scatter_grid.png")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gancollapse.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="multirun directory (or any directory holding run dirs)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep dir)")
    parser.add_argument("--baseline", default=None,
                        help="row to test the others against (Welch's t-test): its overrides label (as in the "
                             "overrides column), one override (loss=hinge), its value (hinge, or ns for "
                             "experiment=benchmark/ns), or a run dir; default: intervals only, no tests")
    parser.add_argument("--correction", choices=CORRECTIONS, default="holm",
                        help="multiple-comparison correction across the rows tested on each metric (default holm)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level; intervals are at 1 - alpha (default 0.05: 95%%)")
    parser.add_argument("--ci-method", choices=CI_METHODS, default="percentile",
                        help="bootstrap interval of the mean (default percentile; see docs/SCALING.md)")
    parser.add_argument("--include", type=Path, action="append", default=[], metavar="LEADERBOARD_CSV",
                        help="an earlier report's leaderboard.csv whose rows join this one (repeatable): "
                             "configurations run in another sitting, tested with these in one family")
    args = parser.parse_args(argv)
    with one_line_errors():
        md = write_report(args.sweep, args.out, args.baseline, args.alpha, args.correction, args.ci_method,
                          args.include)
    print(md.read_text())
    print(f"Wrote {md}, {md.with_suffix('.csv')} and {md.parent / 'scatter_grid.png'}")


if __name__ == "__main__":
    main()
