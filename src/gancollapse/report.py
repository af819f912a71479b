"""Sweep report: ``python -m gancollapse.report <multirun dir>``.

Reads only each run's ``summary.json`` and ``config.yaml`` (plus the sampler sub-runs that
``python -m gancollapse.sample`` writes, ``<run>/samples_<sampler>[_<tag>]/summary.json``, so pointing it at one
run dir compares samplers on that run) and writes ``leaderboard.md``, ``leaderboard.csv`` and
``scatter_grid.png`` (each run's final scatter or sample grid) into the sweep directory. Runs that stopped without
a summary.json are listed too, with their status: ``killed`` (a checkpoint to resume from), ``failed`` (none),
``running (pid N)`` (the run's lock is held).
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

from gancollapse.aggregate import ENSEMBLE_FILE, aggregate_seeds, run_overrides, run_signature, seed_spread
from gancollapse.callbacks import describe_run
from gancollapse.plots import image_grid
from gancollapse.runio import LAST, LOCK_NAME, lock_holder

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
    ("g_steps", "G steps", "{}"),
    ("wall_seconds", "wall s", "{:.1f}"),
    ("status", "status", "{}"),
]
PICTURES = ("plots/final.png", "samples/final.png", "scatter.png", "samples.png")


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


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    cols = [(k, h, f) for k, h, f in COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), f) + seed_spread(r, k, f) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(root: Path | str, out: Path | str | None = None) -> Path:
    """Write leaderboard.md/.csv and scatter_grid.png for every run below ``root``; returns the .md path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass a multirun directory, e.g. multirun/2026-11-23/12-00-00")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no runs below {root} (no summary.json or run directory): this is not a sweep dir")
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    # One row per configuration: runs that differ only in seed are averaged (mean ± std, n).
    rows = sort_rows(aggregate_seeds([load_row(r, root) for r in runs], [run_signature(r) for r in runs],
                                     [run_overrides(r) for r in runs]))
    md = out / "leaderboard.md"
    md.write_text(f"# Leaderboard: {root}\n\n{len(runs)} runs in {len(rows)} configurations (mean ± std over seeds, n runs each), best first: {sort_description(rows)}.\n\n" + leaderboard_markdown(rows))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    pictures, titles = [], []
    for r in rows:
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
    args = parser.parse_args(argv)
    md = write_report(args.sweep, args.out)
    print(md.read_text())
    print(f"Wrote {md}, {md.with_suffix('.csv')} and {md.parent / 'scatter_grid.png'}")


if __name__ == "__main__":
    main()
