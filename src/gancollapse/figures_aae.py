"""CLI: the four figures of an MBRCE-AAE / ALAE run into ``<run>/figures/``.

``python -m gancollapse.figures_aae <run dir> [--what samples|recon|interp|stylemix|all] [--which last|best|lod<k>]``.
The drawing lives in :mod:`gancollapse.metrics.aae_figures`; this module only loads a run (through
:func:`gancollapse.api.load`), which is why it sits at the top of the layers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from gancollapse.api import load
from gancollapse.data.progressive import ProgressiveTFRecordDataModule
from gancollapse.metrics.aae_figures import FIGURES, write_figures
from gancollapse.models.mbrce_aae import MBRCEAAEModule

log = logging.getLogger("gancollapse")

def load_run(run_dir: str | Path, which: str = "last",
             map_location: str = "cpu") -> tuple[MBRCEAAEModule, ProgressiveTFRecordDataModule]:
    """(module, datamodule) of a run directory; ``which``: ``last``, ``best`` or ``lod<k>`` (checkpoints/lod<k>.ckpt)."""
    run_dir = Path(run_dir)
    target = run_dir / "checkpoints" / f"{which}.ckpt" if which.startswith("lod") else run_dir
    if which.startswith("lod") and not target.is_file():
        raise FileNotFoundError(f"{target} not found: the run has not finished lod {which[3:]}")
    handle = load(target, which="best" if which == "best" else "last", map_location=map_location)
    if handle.checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet: train first (make mbrce-train RUN={run_dir})")
    datamodule = handle.datamodule()
    datamodule.setup()
    return handle.module, datamodule


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description="Figures of an MBRCE-AAE / ALAE run (into <run>/figures/).")
    parser.add_argument("run_dir")
    parser.add_argument("--what", default="all", help=f"one of {FIGURES} or all (comma-separated list allowed)")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or lod<k>")
    parser.add_argument("--out", default=None, help="output folder (default <run>/figures)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    what = FIGURES if args.what == "all" else tuple(w.strip() for w in args.what.split(","))
    module, dm = load_run(args.run_dir, args.which)
    paths = write_figures(module, dm, args.out or Path(args.run_dir) / "figures", what, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
