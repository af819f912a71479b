"""Sweep report: ``python -m gancollapse.report <multirun dir>``.

Reads only each run's ``summary.json`` and ``config.yaml`` (plus the sampler sub-runs that
``python -m gancollapse.sample`` writes, ``<run>/samples_<sampler>[_<tag>]/summary.json``, so pointing it at one
run dir compares samplers on that run) and writes ``leaderboard.md``, ``leaderboard.csv`` and
``scatter_grid.png`` (each run's final scatter or sample grid) into the sweep directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gancollapse.callbacks import describe_run
from gancollapse.plots import image_grid

# Columns shown when present, with how to format them; order is the leaderboard's.
COLUMNS: list[tuple[str, str, str]] = [
    ("run", "run", "{}"),
    ("dataset", "dataset", "{}"),
    ("loss", "loss", "{}"),
    ("regularizers", "regularizers", "{}"),
    ("sampler", "sampler", "{}"),
    ("seed", "seed", "{}"),
    ("sample_seed", "sample seed", "{}"),
    ("toy/modes", "modes", "{:.0f}"),
    ("toy/hq_fraction", "HQ %", "{:.1%}"),
    ("toy/reverse_kl", "reverse KL", "{:.3f}"),
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
    """Directories below ``root`` (``root`` included) that hold a summary.json."""
    return sorted({p.parent for p in Path(root).rglob("summary.json")}, key=_natural_key)


def _natural_key(p: Path) -> list[Any]:

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def load_row(run_dir: Path, root: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    row: dict[str, Any] = {"run": str(run_dir.relative_to(root)) if run_dir != root else "."}
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


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: lowest FID when runs report one, else most modes, then highest HQ%, lowest KL."""

    def key(r: dict[str, Any]) -> tuple:
        def num(k: str, default: float) -> float:
            v = r.get(k)
            return default if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        return (num("best/fid", num("fid", math.inf)), -num("toy/modes", -1), -num("toy/hq_fraction", -1),
                num("toy/reverse_kl", math.inf))

    return sorted(rows, key=key)


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    cols = [(k, h, f) for k, h, f in COLUMNS if any(k in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(root: Path | str, out: Path | str | None = None) -> Path:
    """Write leaderboard.md/.csv and scatter_grid.png for every run below ``root``; returns the .md path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass a multirun directory, e.g. multirun/2026-11-23/12-00-00")
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no summary.json below {root}: the runs have not finished, or this is not a sweep dir")
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    rows = sort_rows([load_row(r, root) for r in runs])
    md = out / "leaderboard.md"
    md.write_text(f"# Leaderboard: {root}\n\n{len(rows)} runs, best first.\n\n" + leaderboard_markdown(rows))
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
