"""CLI: evaluate an MBRCE-AAE / ALAE run's checkpoint as the end of training does.

``python -m gancollapse.evaluate_aae <run dir> [--which last|best|lod<k>] [--no-figures]``: the metrics of
:class:`gancollapse.metrics.aae.AAEEvaluator` merged into the run's ``summary.json``, figures rewritten.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from gancollapse.figures_aae import load_run
from gancollapse.metrics.aae import AAEEvaluator
from gancollapse.metrics.aae_figures import write_figures
from gancollapse.metrics.image_callback import upgrade_saved_evaluator

log = logging.getLogger("gancollapse")


def evaluate_run(run_dir: str | Path, which: str = "last", figures: bool = True) -> dict[str, float]:
    """Evaluate a run directory's checkpoint as the end of training does; merges the metrics into its
    ``summary.json`` and (``figures``) rewrites ``<run>/figures/``."""
    run_dir = Path(run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if not cfg.get("evaluator"):
        raise ValueError(f"{run_dir}/config.yaml has no evaluator (trained with evaluator=none): nothing says which "
                         "features to use; rerun training with evaluator=aae")
    module, dm = load_run(run_dir, which)
    # a run saved before evaluator.metrics, or before the evaluator moved, still evaluates
    evaluator = instantiate(upgrade_saved_evaluator(cfg.evaluator))
    if not isinstance(evaluator, AAEEvaluator):
        raise ValueError(f"{run_dir}: evaluator {cfg.evaluator.get('_target_')} is not an AAEEvaluator; train with "
                         "evaluator=aae")
    evaluator.attach(module, dm, run_dir)
    metrics: dict[str, float] = {}
    if evaluator.at_top(module):
        with evaluator.isolated_rng(module.device):
            metrics.update(evaluator.compute(module))
    else:
        log.warning("checkpoint %s is at lod %d < top lod %d: FID/KID/PRDC skipped", which, module.lod, module.max_lod)
    metrics.update(evaluator.final_metrics(module))
    metrics = {k: float(v) for k, v in metrics.items()}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update(metrics)
    summary_path.write_text(json.dumps(summary, indent=2))
    if figures:
        write_figures(module, dm, run_dir / "figures", seed=evaluator.figure_seed)
    return metrics


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Evaluate an MBRCE-AAE / ALAE run (metrics into summary.json).")
    parser.add_argument("run_dir")
    parser.add_argument("--which", default="last", help="checkpoint: last, best or lod<k>")
    parser.add_argument("--no-figures", action="store_true", help="metrics only")
    args = parser.parse_args(argv)
    metrics = evaluate_run(args.run_dir, args.which, figures=not args.no_figures)
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
