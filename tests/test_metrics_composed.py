"""Evaluator metrics composed from ``evaluator.metrics`` (gancollapse.metrics.metric_set): a metric written here
and added by one config line is computed, lands in summary.json and in the leaderboard; inputs are computed once
per batch and shared; a metric's random draws change nobody else's numbers; every metric key is checked at start-up."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torchmetrics
from hydra.utils import instantiate
from omegaconf import OmegaConf

import gancollapse
from gancollapse.build import instantiate_checked
from gancollapse.data.images import DigitsDataModule
from gancollapse.data.toy import ToyDataModule
from gancollapse.metrics.fid import FID, fid_from_features
from gancollapse.metrics.image_callback import ImageEvaluator, upgrade_saved_evaluator
from gancollapse.metrics.kid import KID, kid_from_features
from gancollapse.metrics.metric_set import MetricSet
from gancollapse.metrics.prdc import PRDC, prdc
from gancollapse.metrics.toy import ToyModeStats, mode_stats
from gancollapse.metrics.toy_callback import TOY_INPUTS, ToyEvaluator
from gancollapse.report import write_report
from gancollapse.runio import RunError
from gancollapse.schema import check_types
from gancollapse.train import run
from tests.conftest import PriorStandIn, compose_cfg
from tests.test_metrics_evaluator import _NoisyG


class MeanRadius:
    """A new toy metric as a user would write it: mean distance of the generated points to the origin."""

    label, format = "mean radius", "{:.3f}"

    def reset(self) -> None:
        self.total, self.n = 0.0, 0

    def update(self, points: torch.Tensor) -> None:
        self.total += float(points.double().norm(dim=1).sum())
        self.n += points.shape[0]

    def compute(self) -> float:
        return self.total / self.n


class MeanNorm(torchmetrics.Metric):
    """The same as a torchmetrics.Metric subclass (states, reset and device moves by torchmetrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, points: torch.Tensor) -> None:
        self.total += points.double().norm(dim=1).sum()
        self.n += points.shape[0]

    def compute(self) -> torch.Tensor:
        return self.total / self.n


class Draws:
    """A metric that draws from the global RNG in update and compute (a stochastic estimator)."""

    def reset(self) -> None:
        self.value = 0.0

    def update(self, images: torch.Tensor) -> None:
        self.value += float(torch.rand(()))

    def compute(self) -> float:
        return self.value + float(torch.randn(()))


class _Points(PriorStandIn):
    """A "generator" whose output is its latent's first two coordinates, scaled."""

    z_dim = 2

    def generate(self, n: int, z: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
        return 1.5 * z


# ---------------------------------------------------------------------------- one config line, end to end
def test_a_metric_added_by_one_config_line_reaches_summary_and_leaderboard(tmp_path):
    cfg = compose_cfg(["max_g_steps=20", "evaluator.every_n_steps=10", "evaluator.n_samples=500",
                       "evaluator.frames=false",
                       "+evaluator.metrics.radius={_target_: tests.test_metrics_composed.MeanRadius}"])
    run_dir = tmp_path / "sweep" / "run"
    summary = run(cfg, run_dir)
    saved = json.loads((run_dir / "summary.json").read_text())
    # the value is the final generator's: recompute it from last.ckpt on the evaluator's latents
    module = gancollapse.load(run_dir, which="last", trusted=True).module
    gen = torch.Generator().manual_seed(cfg.evaluator.seed)
    module.sample_z(cfg.evaluator.n_plot, "cpu", gen)  # the frames' latents come first
    x = module.generate(500, z=module.sample_z(500, "cpu", gen))
    assert saved["radius"] == pytest.approx(float(x.double().norm(dim=1).mean()), rel=1e-6)
    assert summary["radius"] == saved["radius"]
    # the declared metrics are computed as before, and the record says which columns they declared
    dm = ToyDataModule()
    expected = mode_stats(x, dm.centers, dm.std).as_dict()
    assert saved["toy/modes"] == expected["toy/modes"]
    assert saved["toy/hq_fraction"] == pytest.approx(expected["toy/hq_fraction"])
    assert saved["metric_columns"]["radius"] == ["mean radius", "{:.3f}"]
    assert list(saved["metric_columns"]) == ["toy/modes", "toy/hq_fraction", "toy/reverse_kl", "radius"]
    md = write_report(tmp_path / "sweep").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    row = md.splitlines()[md.splitlines().index(header) + 2]
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")],
                     [c.strip() for c in row.strip("|").split("|")], strict=True))
    assert cells["mean radius"] == f"{saved['radius']:.3f}"
    assert list(cells).index("mean radius") < list(cells).index("G steps")


def test_metric_keys_are_checked_at_start_up_before_any_file(tmp_path):
    cfg = compose_cfg(["max_g_steps=2", "+evaluator.metrics.modes.treshold=3"])
    with pytest.raises(RunError, match=r"evaluator\.metrics\.modes\.treshold: ToyModeStats has no such key"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    bad = compose_cfg(["dataset=digits", "evaluator.metrics.kid.subsets=abc"], tiny=False)
    with pytest.raises(RunError, match=r"evaluator\.metrics\.kid\.subsets=abc"):
        check_types(bad)
    with pytest.raises(RunError, match=r"evaluator\.metrics\.kid\.subset_sise: KID has no such key \(did you mean"):
        check_types(compose_cfg(["dataset=digits", "+evaluator.metrics.kid.subset_sise=5"], tiny=False))


def test_a_metric_needing_an_input_the_evaluator_lacks_is_refused_when_built():
    cfg = compose_cfg(["+evaluator.metrics.mean={_target_: torchmetrics.MeanMetric}"])
    with pytest.raises(ValueError, match=r"evaluator\.metrics\.mean=MeanMetric: update\(\) takes 'value'.*points"):
        instantiate_checked(cfg.evaluator)
    with pytest.raises(ValueError, match=r"evaluator\.metrics\.fid=FID: update\(\) takes 'features'"):
        ToyEvaluator(metrics={"fid": FID()})
    with pytest.raises(ValueError, match=r"evaluator\.metrics\.foo: a node without _target_"):
        ToyEvaluator(metrics={"foo": {"subsets": 3}})


def test_null_switches_a_metric_off_and_dataset_defaults_add_theirs():
    digits = instantiate(compose_cfg(["dataset=digits", "evaluator.metrics.kid=null"], tiny=False).evaluator)
    assert list(digits.metrics) == ["fid", "prdc", "is", "i_variance"] and digits.metrics["prdc"].n == 1000
    stacked = instantiate(compose_cfg(["dataset=stacked_digits"], tiny=False).evaluator)
    assert list(stacked.metrics) == ["fid", "is", "i_variance", "modes"]
    assert list(ToyEvaluator().metrics) == ["modes"]  # Python default: conf/evaluator/toy.yaml's


# ---------------------------------------------------------------------------- the toy evaluator
def test_toy_metrics_take_the_points_and_a_torchmetrics_metric_works():
    dm = ToyDataModule()
    ev = ToyEvaluator(n_samples=400, metrics={"modes": ToyModeStats(), "radius": MeanRadius(), "norm": MeanNorm()})
    ev.datamodule = dm
    g = _Points()
    for seed in (0, 1):  # the second evaluation scores only its own points (each metric is reset)
        ev.eval_z = g.sample_z(400, "cpu", torch.Generator().manual_seed(seed)) * (1 + seed)
        x = g.generate(400, ev.eval_z)
        m = ev.compute(g)
        assert {k: m[k] for k in m if k.startswith("toy/")} == pytest.approx(
            mode_stats(x, dm.centers, dm.std).as_dict(), nan_ok=True)
        assert m["radius"] == pytest.approx(float(x.double().norm(dim=1).mean()), rel=1e-12)
        assert m["norm"] == pytest.approx(m["radius"], rel=1e-12)
    assert set(TOY_INPUTS) >= {"points", "centers", "std", "threshold", "min_fraction", "min_count"}


def test_two_metrics_publishing_one_key_fail_naming_both():
    ms = MetricSet({"a": ToyModeStats(), "b": ToyModeStats()}, TOY_INPUTS)
    ms.start("cpu")
    dm = ToyDataModule()
    ms.update({"points": torch.zeros(4, 2), "centers": dm.centers, "std": dm.std, "threshold": 3.0,
               "min_fraction": 0.0, "min_count": 1})
    with pytest.raises(ValueError, match=r"evaluator\.metrics\.b=ToyModeStats: its key 'toy/modes' is also a's"):
        ms.compute()


# ---------------------------------------------------------------------------- the image evaluator
def _image_evaluator(tmp_path, metrics) -> tuple[ImageEvaluator, _NoisyG]:
    g = _NoisyG()
    ev = ImageEvaluator(n_samples=96, n_real=96, feature="tiny", grid_size=0, batch_size=32, cache_dir=str(tmp_path),
                        metrics=metrics)
    ev.datamodule = DigitsDataModule(img_size=32)
    ev._draw_latents(g)
    return ev, g


def test_image_metrics_share_one_feature_pass_and_equal_the_functions(tmp_path, caplog):
    ev, g = _image_evaluator(tmp_path, {"fid": FID(), "kid": KID(5, 40), "prdc": PRDC(80)})
    ev._prepare(torch.device("cpu"))
    calls, inputs = [], []
    forward = ev._extractor.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        inputs.append(x)
        return forward(x)

    ev._extractor.forward = counting
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="gancollapse"):
        m = ev.compute(g)
    assert calls == [32, 32, 32]  # once per generated batch, whatever the number of metrics taking features
    feats = torch.cat([forward(x).float() for x in inputs])
    real = ev._real
    assert m["fid"] == fid_from_features(real, feats)
    assert (m["kid"], m["kid_std"]) == kid_from_features(real.features, feats, 5, 40, ev.seed)
    assert {k: m[k] for k in ("precision", "recall", "density", "coverage")} == prdc(real.features[:80], feats[:80])
    assert real.features.shape[0] >= 80  # the real features kept: the most a metric asked for
    assert list(ev.metrics.columns) == ["fid", "kid", "precision", "recall", "density", "coverage"]
    assert not ev.metrics.skipped and not caplog.records


def test_declared_metrics_without_their_input_are_skipped_in_one_line(tmp_path, caplog):
    ev, g = _image_evaluator(tmp_path, None)  # conf/evaluator/image.yaml's: IS and I-Variance need probabilities
    with caplog.at_level(logging.INFO, logger="gancollapse"):
        m = ev.compute(g)
        ev.compute(g)
    assert "is" not in m and "i_variance" not in m and {"fid", "kid", "precision"} <= set(m)
    assert set(ev.metrics.skipped) == {"is", "i_variance"} and "evaluator.classifier" in ev.metrics.skipped["is"]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skipped == ["evaluator.metrics.is, evaluator.metrics.i_variance skipped: no probs (class probabilities: "
                       "Inception's logits with torch-fidelity's weights, else evaluator.classifier's on images with "
                       "its channels; set evaluator.classifier)"]  # once, not at every evaluation
    assert "is" not in ev.metrics.columns


def test_a_metrics_random_draws_change_no_other_number(tmp_path):
    """G's noise (and every other metric) is the same whether or not a metric draws from the global RNG."""
    plain, g = _image_evaluator(tmp_path, {"fid": FID()})
    noisy, _ = _image_evaluator(tmp_path, {"draws": Draws(), "fid": FID()})
    torch.manual_seed(0)
    fid = plain.compute(g)["fid"]
    torch.manual_seed(0)
    m = noisy.compute(g)
    assert m["fid"] == fid
    # its own draws are reproducible too: each update and compute starts from the evaluation's seeded stream
    torch.manual_seed(1)
    assert noisy.compute(g)["draws"] == m["draws"]


def test_saved_runs_from_before_evaluator_metrics_still_build_their_metrics():
    old = {"_target_": "gancollapse.metrics.image_callback.ImageEvaluator", "n_samples": 64, "kid": False,
           "kid_subset_size": 1000, "kid_subsets": 100, "prdc": True, "n_prdc": 64, "is_splits": 4,
           "fid_backend": "torchmetrics", "feature": "tiny"}
    ev = instantiate(upgrade_saved_evaluator(old, "digits"))
    assert list(ev.metrics) == ["fid", "prdc", "is", "i_variance"]
    assert (ev.metrics["fid"].backend, ev.metrics["prdc"].n, ev.metrics["is"].splits) == ("torchmetrics", 64, 4)
    stacked = instantiate(upgrade_saved_evaluator({**old, "kid": True}, "stacked_mnist"))
    assert list(stacked.metrics) == ["fid", "kid", "prdc", "is", "i_variance", "modes"]
    new = {"_target_": "gancollapse.metrics.toy_callback.ToyEvaluator", "threshold": 3.0}
    assert upgrade_saved_evaluator(new, "ring") is new
    # the AAE evaluator moved out of the aae package: a run saved with the old target still builds it
    aae = upgrade_saved_evaluator(OmegaConf.create({**old, "_target_": "gancollapse.aae.evaluate.AAEEvaluator"}))
    assert aae._target_ == "gancollapse.metrics.aae.AAEEvaluator" and "metrics" in aae
