"""Seed aggregation (gancollapse.aggregate) and the sweep report built on it, on hand-made run dirs."""

import csv
import json
import math

import pytest
from omegaconf import OmegaConf

from gancollapse.aggregate import (
    aggregate_group,
    aggregate_seeds,
    flatten,
    mean_std,
    objective_value,
    run_overrides,
    run_signature,
    seed_spread,
)
from gancollapse.report import write_report


def test_mean_std_is_the_sample_std_and_skips_missing_values():
    mean, std, n = mean_std([1.0, 2.0, 4.0, None, float("nan")])
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert mean_std([5]) == (5.0, None, 1)
    assert mean_std([None]) == (None, None, 0)
    assert mean_std([1.0, math.inf])[1] is None  # no spread of an infinite value


def test_aggregate_group_means_metrics_keeps_shared_values_and_lists_seeds():
    rows = [
        {"run": "0", "loss": "hinge", "seed": 0, "g_steps": 20, "toy/reverse_kl": 0.5, "toy/modes": 6.0, "status": "finished"},
        {"run": "2", "loss": "hinge", "seed": 1, "g_steps": 20, "toy/reverse_kl": 0.7, "toy/modes": 6.0, "status": "finished"},
        {"run": "4", "loss": "hinge", "seed": 2, "g_steps": 20, "toy/reverse_kl": None, "toy/modes": 3.0, "status": "diverged"},
    ]
    row = aggregate_group(rows)
    assert row["n"] == 3 and row["run"] == "0" and row["runs"] == "0,2,4" and row["seed"] == "0,1,2"
    assert row["loss"] == "hinge" and row["g_steps"] == 20  # shared: kept as they are
    assert row["toy/reverse_kl"] == pytest.approx(0.6) and row["toy/reverse_kl/std"] == pytest.approx(math.sqrt(0.02))
    assert row["toy/reverse_kl/n"] == 2  # one run had none
    assert row["toy/modes"] == pytest.approx(5.0) and row["toy/modes/std"] == pytest.approx(math.sqrt(3))
    assert "toy/modes/n" not in row
    assert row["status"] == "finished,diverged"
    # a single run is its own row, untouched
    assert aggregate_group(rows[:1]) == {**rows[0], "n": 1}


def test_records_of_a_group_with_a_run_still_training_are_kept():
    applied = {"loss": "hinge", "regularizers": {"r1": {"gamma": 10.0}}}
    rows = [{"run": "a", "seed": 0, "fid": 3.0, "applied": applied},
            {"run": "b", "seed": 1, "fid": 4.0, "applied": dict(applied)},
            {"run": "c", "seed": 2, "status": "running"}]  # no summary record yet
    row = aggregate_group(rows)
    assert row["applied"] == applied and row["fid"] == pytest.approx(3.5) and row["fid/n"] == 2


def test_equal_float_metrics_still_get_a_zero_spread():
    row = aggregate_group([{"run": "a", "seed": 0, "fid": 3.0}, {"run": "b", "seed": 1, "fid": 3.0}])
    assert row["fid"] == 3.0 and row["fid/std"] == 0.0


def test_aggregate_seeds_groups_by_signature_and_labels_what_differs():
    rows = [{"run": str(i), "seed": i // 2, "fid": float(i)} for i in range(4)]
    sigs = ["a", "b", "a", "b"]
    overrides = [["max_g_steps=5", "loss=hinge"], ["max_g_steps=5", "loss=standard"]] * 2
    out = aggregate_seeds(rows, sigs, overrides)
    assert [(r["runs"], r["n"], r["fid"], r["overrides"]) for r in out] == [("0,2", 2, 1.0, "loss=hinge"),
                                                                             ("1,3", 2, 2.0, "loss=standard")]
    with pytest.raises(ValueError, match="one signature"):
        aggregate_seeds(rows, sigs[:3])


def test_seed_spread_formats_like_the_value():
    row = {"n": 3, "toy/hq_fraction": 0.5, "toy/hq_fraction/std": 0.25, "fid": 2.0, "fid/std": None, "fid/n": 1}
    assert seed_spread(row, "toy/hq_fraction", "{:.1%}") == " ± 25.0%"
    assert seed_spread(row, "fid", "{:.2f}") == " (1/3)"
    assert seed_spread({"fid": 1.0}, "fid", "{:.2f}") == ""


def test_objective_value_picks_the_metric_and_penalises_missing_values():
    toy = {"toy/modes": 8.0, "toy/reverse_kl": 0.25}
    assert objective_value(toy) == 0.25  # default for toys
    assert objective_value({"fid": 12.5, "toy/reverse_kl": 1.0}) == 12.5  # images first
    assert objective_value(toy, objective="toy/modes") == 8.0
    assert objective_value({**toy, "fid": 3.0}, monitor="fid") == 3.0
    assert objective_value({"toy/reverse_kl": None}) == math.inf  # NaN in the run: worst, not a failure
    assert objective_value({"toy/reverse_kl": None}, maximize=True) == -math.inf
    assert objective_value({"g_steps": 10}) is None  # evaluator=none: nothing to return
    with pytest.raises(ValueError, match="objective='toy/revers_kl'.*toy/reverse_kl"):
        objective_value(toy, objective="toy/revers_kl")


def test_flatten_nested_config():
    assert flatten({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": {}}) == {"a.b": 1, "a.c.0": 2, "a.c.1.d": 3, "e": {}}


def _make_run(path, seed, metrics, overrides=(), hydra=True, **cfg_extra):
    """A finished run dir as train.py leaves it: summary.json, config.yaml and (from Hydra) .hydra/."""
    path.mkdir(parents=True)
    cfg = {"seed": seed, "loss": {"_target_": "L"}, "dataset": {"name": "ring", "seed": seed},
           "evaluator": {"seed": 1234}, **cfg_extra}
    OmegaConf.save(OmegaConf.create(cfg), path / "config.yaml")
    if hydra:
        (path / ".hydra").mkdir()
        unresolved = {**cfg, "dataset": {"name": "ring", "seed": "${seed}"}}
        OmegaConf.save(OmegaConf.create(unresolved), path / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create([*overrides, f"seed={seed}"]), path / ".hydra" / "overrides.yaml")
    summary = {"dataset": "ring", "loss": "hinge", "regularizers": "none", "sampler": "prior", "seed": seed,
               "status": "finished", "g_steps": 20, **metrics}
    (path / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("hydra", [True, False])
def test_run_signature_ignores_only_the_seed(tmp_path, hydra):
    _make_run(tmp_path / "a", 0, {}, hydra=hydra, z_dim=8)
    _make_run(tmp_path / "b", 1, {}, hydra=hydra, z_dim=8)
    _make_run(tmp_path / "c", 1, {}, hydra=hydra, z_dim=16)
    sig = {k: run_signature(tmp_path / k) for k in "abc"}
    assert sig["a"] == sig["b"] != sig["c"]
    assert run_signature(tmp_path / "nowhere").startswith("run:")


def test_sampler_sub_runs_group_across_training_and_sampling_seeds(tmp_path):
    for seed in (0, 1, 2):
        _make_run(tmp_path / str(seed), seed % 2, {}, z_dim=16 if seed == 2 else 8)  # run 2: another config
        for tag, sampler in (("s0", "wlgan"), ("s1", "wlgan"), ("s0", "mhgan")):
            sub = tmp_path / str(seed) / f"samples_{sampler}_{tag}"
            sub.mkdir()
            (sub / "sampler.yaml").write_text(f"name: {sampler}\n")
            (sub / "summary.json").write_text(json.dumps({"sampler": sampler, "sampler_overrides": "", "n": 100,
                                                          "seed": seed, "sample_seed": int(tag[1])}))
    sig = {p.relative_to(tmp_path).as_posix(): run_signature(p) for p in tmp_path.glob("*/samples_*")}
    assert len(set(sig.values())) == 4  # wlgan (2 training × 2 sampling seeds) and mhgan, for 2 configs
    assert sig["0/samples_wlgan_s0"] == sig["1/samples_wlgan_s1"] != sig["0/samples_mhgan_s0"]
    assert sig["2/samples_wlgan_s0"] == sig["2/samples_wlgan_s1"] != sig["0/samples_wlgan_s0"]
    assert run_signature(tmp_path / "0") not in sig.values()  # a sampler sub-run is not its training run


def test_run_overrides_drop_seeds(tmp_path):
    _make_run(tmp_path / "a", 3, {}, overrides=["loss=hinge", "+sample_seed=2"])
    assert run_overrides(tmp_path / "a") == ["loss=hinge"]
    _make_run(tmp_path / "b", 3, {}, hydra=False)
    assert run_overrides(tmp_path / "b") == []


def test_report_averages_two_seeds_per_configuration(tmp_path):
    """2 configurations × 2 seeds, laid out as a launcher leaves them (submitit's hidden folder included)."""
    kls = {("hinge", 0): 0.2, ("hinge", 1): 0.4, ("standard", 0): 1.0, ("standard", 1): 1.5}
    for i, ((loss, seed), kl) in enumerate(kls.items()):
        _make_run(tmp_path / str(i), seed, {"toy/reverse_kl": kl, "toy/modes": 8.0 - i}, overrides=[f"loss={loss}"],
                  loss_name=loss)
    (tmp_path / ".submitit" / "123").mkdir(parents=True)
    (tmp_path / ".submitit" / "123" / "summary.json").write_text("{not a run")  # never read
    md = write_report(tmp_path)
    text = md.read_text()
    assert "4 runs in 2 configurations" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]
    assert len(rows) == 2
    best = rows[0]  # most modes first: hinge has 7.5 on average, standard 5.5
    assert best["overrides"] == "loss=hinge" and best["n"] == "2" and best["seed"] == "0,1" and best["runs"] == "0,1"
    assert best["reverse KL"] == f"0.300 ± {math.sqrt(0.02):.3f}"
    assert best["modes"] == f"8 ± {math.sqrt(0.5):.0f}"
    assert rows[1]["reverse KL"] == f"1.250 ± {math.sqrt(0.125):.3f}" and rows[1]["n"] == "2"
    with open(tmp_path / "leaderboard.csv") as f:
        by_override = {r["overrides"]: r for r in csv.DictReader(f)}
    assert float(by_override["loss=standard"]["toy/reverse_kl"]) == pytest.approx(1.25)
    assert float(by_override["loss=standard"]["toy/reverse_kl/std"]) == pytest.approx(math.sqrt(0.125))
    assert by_override["loss=standard"]["n"] == "2" and by_override["loss=standard"]["runs"] == "2,3"
