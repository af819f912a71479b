"""Hydra callbacks registered in ``conf/train.yaml`` (``hydra.callbacks``).

:class:`SweepReport`: when a multirun (``-m``) ends, print where its runs are and the command that compares
them; with ``report=true`` write that report (``leaderboard.md``, ``.csv``, ``scatter_grid.png``) right away.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepReport(Callback):
    """Point at a finished sweep's directory and its report; ``report=true`` (top-level key) writes it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        print(f"\nSweep directory: {sweep_dir}\n  report: python -m gancollapse.report {sweep_dir}", flush=True)
        if not config.get("report", False):
            return
        from gancollapse.report import write_report  # plotting imports only when the report is asked for

        try:
            md = write_report(sweep_dir)
        # the runs are done and on disk: a report that cannot be written must not turn the sweep into a failure
        except Exception as err:
            print(f"error: the sweep report failed ({' '.join(str(err).split())}) — run "
                  f"`python -m gancollapse.report {sweep_dir}` to see why", file=sys.stderr, flush=True)
            return
        print(f"  wrote {md}, {md.with_suffix('.csv')} and {md.parent / 'scatter_grid.png'}", flush=True)
