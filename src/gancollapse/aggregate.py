"""Reduce runs to numbers: a run's tuning objective, and a sweep's runs grouped over seeds.

* :func:`objective_value` — the float the Hydra main returns for tuning sweepers (``hydra/sweeper=optuna``).
* :func:`run_signature` / :func:`run_overrides` — what identifies a run's configuration apart from its seed,
  read from the run dir; any launcher's output works (basic, joblib, submitit: the same multirun layout).
* :func:`aggregate_seeds` — one row per configuration: mean, sample standard deviation and n over the runs
  that differ only in seed (``gancollapse.report`` writes them to leaderboard.md/.csv).
* :func:`bootstrap_ci`, :func:`welch`, :func:`holm` — the statistics of a comparison over seeds (a bootstrap
  interval of the mean, Welch's unequal-variance t-test, Holm's step-down adjustment);
  :func:`confidence_columns` puts them on the rows: ``<metric>/lo|hi|p|p_holm|significant``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Collection, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

# Keys that name a seed: the training seed and the latent sampler's seed (``gancollapse.sample``).
SEED_KEYS: tuple[str, ...] = ("seed", "sample_seed")
#: the record of an ``ensemble=K`` run (gancollapse.ensemble): its directory holds K member runs, ``seed_<s>/``,
#: and is not a run itself
ENSEMBLE_FILE = "ensemble.json"
# ``objective: null`` and no evaluator monitor: the first of these the run reports (images, then toys).
DEFAULT_OBJECTIVES: tuple[str, ...] = ("fid", "toy/reverse_kl")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def objective_value(summary: Mapping[str, Any], objective: str | None = None, monitor: str | None = None,
                    maximize: bool = False) -> float | None:
    """The run's final value of the metric a tuning sweeper optimises.

    The metric is ``objective`` (config key ``objective``), else the evaluator's ``monitor``, else the first of
    :data:`DEFAULT_OBJECTIVES` in the summary (FID for images, reverse KL for toys); ``None`` when the run has
    no metric at all (``evaluator=none``). A metric the run could not compute (NaN, stored as null: e.g. reverse
    KL with no high-quality sample) is the worst value, +inf (-inf when ``maximize``), so the sweeper ranks
    that trial last instead of failing it.

    Raises:
        ValueError: an explicit ``objective`` that the run's summary does not hold (a typo would otherwise
            make every trial equally bad).
    """
    name = objective or monitor or next((k for k in DEFAULT_OBJECTIVES if k in summary), None)
    if name is None:
        return None
    if objective and objective not in summary:
        metrics = sorted(k for k, v in summary.items() if _is_number(v) or v is None)
        raise ValueError(f"objective={objective!r} is not in the run's summary.json; set objective to one of "
                         f"{metrics} (or null: the evaluator's monitor, else {' / '.join(DEFAULT_OBJECTIVES)})")
    value = summary.get(name)
    if not _is_number(value) or math.isnan(value):
        return -math.inf if maximize else math.inf
    return float(value)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [2, {"d": 3}]}`` → ``{"a.b": 1, "c.0": 2, "c.1.d": 3}`` (empty containers kept)."""
    if isinstance(tree, Mapping) and tree:
        items = tree.items()
    elif isinstance(tree, (list, tuple)) and tree:
        items = enumerate(tree)
    else:
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def seed_free(flat: Mapping[str, Any], resolved: bool) -> dict[str, Any]:
    """A flattened config without the run's seed. In a resolved config (``<run>/config.yaml``) the seed has
    been copied into every ``*.seed: ${seed}`` key, so those leaves go too when they equal it."""
    seed = flat.get("seed")
    return {k: v for k, v in flat.items()
            if k not in SEED_KEYS and not (resolved and k.rsplit(".", 1)[-1] == "seed" and v == seed)}


def _load_tree(path: Path) -> Any:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def sampling_record(run_dir: Path) -> dict[str, Any] | None:
    """A sampler sub-run's sampler, its overrides and sample count (from its summary.json): what tells two
    sampler rows on the same checkpoints apart; None for a directory that is no sampler sub-run."""
    if not ((run_dir / "sampler.yaml").is_file() and (run_dir / "summary.json").is_file()):
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: summary.get(k) for k in ("sampler", "sampler_overrides", "n")}


def run_signature(run_dir: Path | str) -> str:
    """The run's configuration except its seed, as a string: runs with equal signatures differ only in seed.

    Read from Hydra's ``.hydra/config.yaml`` (the composed config before interpolation: ``${seed}`` references
    are still references), else the run's resolved ``config.yaml``. A sampler sub-run
    (``<run>/samples_<sampler>[_<tag>]/``) is its parent run's signature plus the sampler, its overrides and
    sample count; its tag is ignored (tags usually name the seed). A dir with neither is unique (its path).
    """
    run_dir = Path(run_dir)
    hydra_cfg, cfg = run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"
    if hydra_cfg.is_file():
        flat = seed_free(flatten(_load_tree(hydra_cfg)), resolved=False)
    elif cfg.is_file():
        flat = seed_free(flatten(_load_tree(cfg)), resolved=True)
    elif (sampling := sampling_record(run_dir)) is not None:
        return run_signature(run_dir.parent) + "|" + json.dumps(sampling, sort_keys=True, default=str)
    else:
        return f"run:{run_dir.resolve()}"
    if flat.get("ensemble", 1) in (1, None):  # a single run, saved before or after the key existed
        flat.pop("ensemble", None)
    return json.dumps(flat, sort_keys=True, default=str)


def _override_key(token: str) -> str:
    return token.split("=", 1)[0].lstrip("+~")


def run_overrides(run_dir: Path | str) -> list[str]:
    """The job's command-line overrides without seeds (``.hydra/overrides.yaml``; a sampler sub-run or an
    ensemble's member run: its parent's); empty when the run was not started through Hydra's main."""
    run_dir = Path(run_dir)
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        child = (run_dir / "sampler.yaml").is_file() or (run_dir.parent / ENSEMBLE_FILE).is_file()
        return run_overrides(run_dir.parent) if child else []
    return [str(t) for t in OmegaConf.load(path) if _override_key(str(t)) not in SEED_KEYS]


def config_identity(run_dir: Path | str) -> str:
    """A configuration's name that holds across sittings, for matching a report's rows with an earlier
    report's (``gancollapse.report --include``): the run's sorted seed-free command-line overrides
    (:func:`run_overrides`), or, for a run started without any, ``signature:`` and a hash of its
    :func:`run_signature`; a sampler sub-run adds ``| sampler=<name> <its overrides> n=<samples>``. Unlike the
    leaderboard's ``overrides`` label it does not depend on which other configurations shared the sweep."""
    run_dir = Path(run_dir)
    sampling = ""
    if (record := sampling_record(run_dir)) is not None:
        sampling = " ".join(f"| sampler={record['sampler']} {record['sampler_overrides'] or ''} "
                            f"n={record['n']}".split())
        run_dir = run_dir.parent
    overrides = sorted(run_overrides(run_dir))
    name = " ".join(overrides) if overrides else (
        "signature:" + hashlib.sha1(run_signature(run_dir).encode()).hexdigest()[:12])
    return f"{name} {sampling}" if sampling else name


def mean_std(values: Sequence[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation with n − 1, n) of the values that are numbers and not NaN (null
    metrics are skipped and not counted). The std is ``None`` below two values or when one is infinite."""
    xs = [float(v) for v in values if _is_number(v) and not math.isnan(v)]
    if not xs:
        return None, None, 0
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2 or not all(math.isfinite(x) for x in xs):
        return mean, None, len(xs)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)), len(xs)


def _join_unique(values: Sequence[Any]) -> Any:
    # records (applied, metric_columns) are dicts: compared by their JSON text, a run still training has none
    unique = list({json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v: v
                   for v in values}.values())
    if len(unique) == 1:
        return unique[0]
    if all(_is_number(v) for v in unique):
        unique = sorted(unique)
    return ",".join(str(v) for v in unique)


def aggregate_group(rows: Sequence[Mapping[str, Any]], values_of: Collection[str] = ()) -> dict[str, Any]:
    """One row for runs of one configuration (several seeds).

    ``run`` is the first run (its picture represents the group), ``runs`` lists them all and ``n`` counts them.
    Seed keys list their values (``"0,1,2"``). A value every run shares is kept as it is (strings, counters,
    config values); other numbers become their mean, with ``<key>/std`` (sample std) and, when some runs have
    no value (null / NaN), ``<key>/n`` (how many had one). Differing strings are listed (``"finished,…"``).
    For the numeric keys in ``values_of`` (several runs), ``<key>/values`` keeps the per-run values in ``runs``
    order (``None`` where a run had none): what :func:`confidence_columns` computes intervals and tests from.
    """
    if not rows:
        raise ValueError("aggregate_group needs at least one row")
    n = len(rows)
    out: dict[str, Any] = {"run": rows[0].get("run")}
    if n > 1:
        out["runs"] = ",".join(str(r.get("run")) for r in rows)
    out["n"] = n
    for key in dict.fromkeys(k for r in rows for k in r):
        if key in ("run", "runs", "n"):
            continue
        values = [r.get(key) for r in rows]
        numeric = all(_is_number(v) or v is None for v in values)
        if key in values_of and n > 1 and numeric:
            out[f"{key}/values"] = [None if v is None or math.isnan(v) else float(v) for v in values]
        if key in SEED_KEYS:
            out[key] = _join_unique(values)
        elif n == 1 or (all(type(v) is type(values[0]) for v in values) and all(v == values[0] for v in values)
                        and not isinstance(values[0], float)):
            out[key] = values[0]
        elif numeric:
            mean, std, count = mean_std(values)
            out[key] = mean
            out[f"{key}/std"] = std
            if count < n:
                out[f"{key}/n"] = count
        else:
            out[key] = _join_unique([v for v in values if v is not None])
    return out


def distinguishing(labels: Sequence[Sequence[str]]) -> list[str]:
    """For each group's override list, the overrides not shared by every group, space-separated."""
    shared = set(labels[0]).intersection(*map(set, labels[1:])) if labels else set()
    return [" ".join(t for t in lab if t not in shared) for lab in labels]


def aggregate_seeds(rows: Sequence[Mapping[str, Any]], signatures: Sequence[Hashable],
                    overrides: Sequence[Sequence[str]] | None = None,
                    values_of: Collection[str] = ()) -> list[dict[str, Any]]:
    """Group ``rows`` (one per run) by ``signatures`` (equal: same configuration but for the seed, see
    :func:`run_signature`) and reduce each group with :func:`aggregate_group` (which keeps the per-run values
    of the keys in ``values_of``), in first-seen order.

    With ``overrides`` (one list per run, :func:`run_overrides`), each row also gets ``overrides``: the group's
    Hydra overrides that tell it apart from the other groups (omitted when nothing does).
    """
    if len(rows) != len(signatures) or (overrides is not None and len(overrides) != len(rows)):
        raise ValueError(f"one signature (and override list) per row: {len(rows)} rows, {len(signatures)} "
                         f"signatures, {len(overrides) if overrides is not None else 'no'} override lists")
    groups: dict[Hashable, list[int]] = {}
    for i, sig in enumerate(signatures):
        groups.setdefault(sig, []).append(i)
    out = [aggregate_group([rows[i] for i in idx], values_of) for idx in groups.values()]
    if overrides is not None:
        for row, label in zip(out, distinguishing([overrides[idx[0]] for idx in groups.values()]), strict=True):
            if label:
                row["overrides"] = label
    return out


def seed_spread(row: Mapping[str, Any], key: str, fmt: str) -> str:
    """The leaderboard cell's suffix for an aggregated value: ``" ± <std>"`` in the value's own format, and
    ``" (k/n)"`` when only k of the group's n runs had a value; ``""`` for single runs."""
    std, count = row.get(f"{key}/std"), row.get(f"{key}/n")
    out = ""
    if _is_number(std) and not math.isnan(std):
        try:
            out = " ± " + fmt.format(std)
        except (ValueError, TypeError):
            out = f" ± {std:.3g}"
    if count is not None:
        out += f" ({count}/{row.get('n')})"
    return out


# ---------------------------------------------------------------------------- statistics over seeds
#: fewest runs (with a value) a row needs for an interval or a test: two points give an interval and a test
#: that mean nothing (a std from one degree of freedom)
MIN_N = 3
CI_METHODS: tuple[str, ...] = ("percentile", "BCa")
CORRECTIONS: tuple[str, ...] = ("holm", "none")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, method: str = "percentile",
                 n_resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """The ``confidence`` bootstrap interval of the mean of ``values`` (Efron & Tibshirani 1993, *An
    Introduction to the Bootstrap*: percentile interval ch. 13, BCa ch. 14), by :func:`scipy.stats.bootstrap`
    with ``n_resamples`` resamples drawn from ``numpy.random.default_rng(seed)``: the same values and seed give
    the same interval.

    ``percentile`` (the default) takes the α/2 and 1 − α/2 quantiles of the resampled means, so it always lies
    within [min, max] of the values. BCa corrects those quantiles for bias and skew estimated from the
    resamples and a jackknife of the n values; with the 3–5 seeds of a sweep that estimate is noise and BCa
    covers no better (scripts/bootstrap_coverage.py measures both). Either way a bootstrap interval from few
    values is too narrow: it resamples only the spread the seeds happened to show.

    All values equal: ``(v, v)`` (nothing to resample; BCa would divide by zero).

    Raises:
        ValueError: fewer than 2 values, a non-finite value, or an unknown ``method``.
    """
    if method not in CI_METHODS:
        raise ValueError(f"method={method!r}: unknown bootstrap interval; use one of {list(CI_METHODS)}")
    xs = np.asarray(values, dtype=float)
    if xs.ndim != 1 or xs.size < 2 or not np.all(np.isfinite(xs)):
        raise ValueError(f"values={list(values)}: a bootstrap interval needs at least 2 finite values")
    if np.all(xs == xs[0]):
        return float(xs[0]), float(xs[0])
    res = stats.bootstrap((xs,), np.mean, confidence_level=confidence, method=method, n_resamples=n_resamples,
                          vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


class WelchResult(NamedTuple):
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's two-sample t-test of equal means without assuming equal variances (Welch 1947, Biometrika
    34:28–35): t = (ā − b̄) / √(s²ₐ/nₐ + s²ᵦ/nᵦ) with sample variances s², against Student's t with the
    Welch–Satterthwaite degrees of freedom df = (s²ₐ/nₐ + s²ᵦ/nᵦ)² / ((s²ₐ/nₐ)²/(nₐ−1) + (s²ᵦ/nᵦ)²/(nᵦ−1));
    two-sided p = 2·P(T_df > |t|). Computed by ``scipy.stats.ttest_ind(a, b, equal_var=False)``.

    Both samples without spread (e.g. 8 modes in every seed of both rows): the test is undefined, all NaN.

    Raises:
        ValueError: a sample with fewer than 2 values.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"welch needs at least 2 values per sample, got {xa.size} and {xb.size}")
    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        return WelchResult(math.nan, math.nan, math.nan)
    with warnings.catch_warnings():  # a sample without spread is exact, not the "catastrophic cancellation" warned of
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(xa, xb, equal_var=False)
    return WelchResult(float(res.statistic), float(res.df), float(res.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65–70): with the m p-values sorted
    ascending, p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎). Calling p̃ < α significant keeps the chance of any
    false "significant" among the m comparisons at most α, whatever their dependence, and rejects everything
    Bonferroni (m·p) rejects. Returned in the input order; NaN entries (no test) stay NaN and are not counted
    in m."""
    order = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def seed_values(row: Mapping[str, Any], key: str) -> list[float]:
    """The per-run values behind a row's ``key`` (``<key>/values`` of an aggregated row, else the single run's
    value), runs without one left out."""
    if f"{key}/values" in row:
        return [float(v) for v in row[f"{key}/values"] if v is not None]
    v = row.get(key)
    return [float(v)] if row.get("n", 1) == 1 and _is_number(v) and not math.isnan(v) else []


def confidence_columns(rows: Sequence[dict[str, Any]], keys: Sequence[str], baseline: int | None = None,
                       alpha: float = 0.05, correction: str = "holm", method: str = "percentile",
                       n_resamples: int = 9999, seed: int = 0,
                       compared: Sequence[bool] | None = None) -> dict[str, int]:
    """Add, in place, to every row with at least :data:`MIN_N` finite values of ``key`` (:func:`seed_values`):
    ``<key>/lo`` and ``<key>/hi``, the (1 − ``alpha``) :func:`bootstrap_ci` of its mean. With a ``baseline``
    (an index into ``rows``, itself with ≥ MIN_N values) each other row that has them and is ``compared``
    (default: all) gets ``<key>/p``, the two-sided :func:`welch` p against the baseline (NaN: no spread in
    either), with ``correction="holm"`` ``<key>/p_holm`` (:func:`holm` across the rows compared on that key;
    each metric is its own family), and ``<key>/significant``: the (adjusted) p < ``alpha``. The baseline row
    gets ``baseline: True``. Returns, per key, how many rows were tested against the baseline (Holm's m).

    Raises:
        ValueError: an unknown ``correction`` or ``method``, or ``alpha`` outside (0, 1).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction={correction!r}: unknown multiple-comparison correction; use one of "
                         f"{list(CORRECTIONS)}")
    if method not in CI_METHODS:
        raise ValueError(f"method={method!r}: unknown bootstrap interval; use one of {list(CI_METHODS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha}: must lie in (0, 1); 0.05 gives 95% intervals and p < 0.05")
    compared = [True] * len(rows) if compared is None else list(compared)
    if baseline is not None:
        rows[baseline]["baseline"] = True
    families: dict[str, int] = {}
    for key in keys:
        values = [seed_values(r, key) for r in rows]
        usable = [len(v) >= MIN_N and all(math.isfinite(x) for x in v) for v in values]
        for r, v, ok in zip(rows, values, usable, strict=True):
            if ok:
                r[f"{key}/lo"], r[f"{key}/hi"] = bootstrap_ci(v, 1.0 - alpha, method, n_resamples, seed)
        if baseline is None or not usable[baseline]:
            continue
        tested = [i for i in range(len(rows)) if i != baseline and usable[i] and compared[i]]
        if not tested:
            continue
        ps = [welch(values[i], values[baseline]).p for i in tested]
        families[key] = sum(not math.isnan(p) for p in ps)
        adjusted = holm(ps) if correction == "holm" else ps
        for i, p, q in zip(tested, ps, adjusted, strict=True):
            rows[i][f"{key}/p"] = p
            if correction == "holm":
                rows[i][f"{key}/p_holm"] = q
            rows[i][f"{key}/significant"] = bool(q < alpha)  # NaN (no spread): False
    return families
