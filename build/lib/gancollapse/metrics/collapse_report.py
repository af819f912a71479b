"""Report of the collapse study sweep: ``python -m gancollapse.metrics.collapse_report <multirun dir>``.

Groups the runs of ``experiment=collapse_mnist`` (or any sweep with the collapse observatory) by model and
latent size, and writes into the sweep directory:

* ``collapse_report.md`` / ``.csv`` — per (model, z_dim): number of seeds, mean ± std over seeds of the final
  IS (image evaluator ``is``, else the observatory's ``observatory/is``), classifier-counted modes of 10
  (``observatory/classes_covered``), the observatory's sample-spread ratio and G's top Hessian eigenvalue;
* ``collapse_eigenvalues.png`` — G's and D's top eigenvalue over training (one line per run, one colour per
  model, one panel per latent size), read from each run's ``metrics.csv``.

Each run is identified by its ``config.yaml`` (``model.module._target_`` + ``nudge``, ``z_dim``, ``seed``), so the
report does not depend on Hydra's override names.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gancollapse.plots import plt

METRICS = [("is", "IS"), ("observatory/classes_covered", "modes (of 10)"), ("observatory/spread_ratio", "spread ratio"),
           ("observatory/g_eig0", "G λ0"), ("observatory/d_eig0", "D λ0")]


def model_name(cfg: Any) -> str:
    """gan / distgan / nugan_distgan from a run's resolved config."""
    target = str(OmegaConf.select(cfg, "model.module._target_", default="gancollapse.models.gan.GANModule"))
    if target.endswith("DistGANModule"):
        nudged = OmegaConf.select(cfg, "model.module.nudge", default=None) or "NudgedAdam" in str(
            OmegaConf.select(cfg, "optim.generator._target_", default=""))
        return "nugan_distgan" if nudged else "distgan"
    return "gan"


def load_run(run_dir: Path) -> dict[str, Any]:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    row = {"run": str(run_dir), "model": model_name(cfg), "z_dim": int(cfg.z_dim), "seed": cfg.get("seed")}
    for key, _ in METRICS:
        val = summary.get(key)
        if key == "is" and val is None:
            val = summary.get("observatory/is")
        row[key] = float(val) if isinstance(val, (int, float)) else float("nan")
    row["curves"] = read_curves(run_dir / "metrics.csv")
    return row


def read_curves(path: Path, keys: tuple[str, ...] = ("observatory/g_eig0", "observatory/d_eig0")) -> dict[str, list[tuple[float, float]]]:
    """(G step, value) series of ``keys`` from a metrics.csv (rows where the key is set)."""
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    if not path.is_file():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("observatory/g_step") or row.get("step")
            for k in keys:
                if row.get(k) not in (None, "") and step not in (None, ""):
                    out[k].append((float(step), float(row[k])))
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["z_dim"])].append(r)
    order = {"gan": 0, "distgan": 1, "nugan_distgan": 2}
    table = []
    for (model, z), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9), kv[0][0])):
        entry: dict[str, Any] = {"model": model, "z_dim": z, "seeds": len(runs)}
        for key, _ in METRICS:
            entry[key] = _mean_std([r[key] for r in runs])
        table.append(entry)
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    head = "| model | z | seeds | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for e in table:
        # Two decimals for scores; three significant digits for ratios and eigenvalues spanning decades.
        cells = [("—" if math.isnan(m) else f"{m:.2f} ± {s:.2f}" if k in ("is", "observatory/classes_covered")
                  else f"{m:.3g} ± {s:.2g}") for k, (m, s) in ((k, e[k]) for k, _ in METRICS)]
        lines.append(f"| {e['model']} | {e['z_dim']} | {e['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path:
    zs = sorted({r["z_dim"] for r in rows})
    colors = {"gan": "tab:grey", "distgan": "tab:blue", "nugan_distgan": "tab:red"}
    fig, axes = plt.subplots(2, len(zs), figsize=(5 * len(zs), 7), dpi=90, squeeze=False)
    for j, z in enumerate(zs):
        for i, (key, label) in enumerate((("observatory/g_eig0", "G"), ("observatory/d_eig0", "D"))):
            ax = axes[i, j]
            seen = set()
            for r in rows:
                if r["z_dim"] != z or not r["curves"].get(key):
                    continue
                xs, ys = zip(*r["curves"][key], strict=True)
                ax.plot(xs, ys, color=colors.get(r["model"], "black"), alpha=0.8, lw=1,
                        label=r["model"] if r["model"] not in seen else None)
                seen.add(r["model"])
            ax.set_yscale("symlog")
            ax.set_title(f"z = {z}: top Hessian eigenvalue of the {label} loss", fontsize=9)
            ax.set_xlabel("G step")
            if seen:
                ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(root: Path | str) -> Path:
    """Write collapse_report.md/.csv and collapse_eigenvalues.png for every run below ``root``."""
    root = Path(root)
    runs = sorted(p.parent for p in root.rglob("summary.json") if (p.parent / "config.yaml").is_file())
    if not runs:
        raise FileNotFoundError(f"no runs (summary.json + config.yaml) below {root}")
    rows = [load_run(r) for r in runs]
    table = aggregate(rows)
    md = root / "collapse_report.md"
    md.write_text(f"# Collapse study: {len(rows)} runs below {root}\n\nmean ± std over seeds, final values\n\n"
                  + markdown(table))
    with open(md.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "z_dim", "seeds", *[x for k, _ in METRICS for x in (k, f"{k}_std")]])
        for e in table:
            w.writerow([e["model"], e["z_dim"], e["seeds"], *[x for k, _ in METRICS for x in e[k]]])
    plot_curves(rows, root / "collapse_eigenvalues.png")
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Collapse-study report of a sweep directory")
    ap.add_argument("sweep", help="multirun directory (or sweep=<dir>)")
    args = ap.parse_args(argv)
    root = args.sweep.split("=", 1)[1] if args.sweep.startswith("sweep=") else args.sweep
    md = write_report(root)
    print(md.read_text())
    print(f"Wrote {md}, {md.with_suffix('.csv')} and {md.parent / 'collapse_eigenvalues.png'}")


if __name__ == "__main__":
    main()
