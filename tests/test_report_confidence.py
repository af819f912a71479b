"""Confidence in the sweep report: bootstrap intervals, Welch's test, Holm's adjustment (gancollapse.aggregate),
the baseline a row is compared with, and the columns they give leaderboard.md/.csv (gancollapse.report)."""

import csv
import json
import math

import numpy as np
import pytest
from scipy import special, stats

from gancollapse.aggregate import aggregate_group, bootstrap_ci, confidence_columns, holm, seed_values, welch
from gancollapse.benchmark import interval_errors, plot_modes_kl
from gancollapse.report import find_baseline, main, write_report
from gancollapse.runio import MissingError
from tests.test_scaleout_aggregate import _make_run


# ---------------------------------------------------------------------------- Welch
def test_welch_matches_the_welch_satterthwaite_formula():
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]  # means 2 and 7, sample variances 1 and 20/3
    va, vb = 1.0 / 3, (20.0 / 3) / 4  # s²/n
    t = (2.0 - 7.0) / math.sqrt(va + vb)  # = -5/√2
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)  # = 216/53
    p = special.betainc(df / 2, 0.5, df / (df + t * t))  # two-sided P(|T_df| > |t|), the incomplete beta form
    res = welch(a, b)
    assert res.t == pytest.approx(-5 / math.sqrt(2)) and res.t == pytest.approx(t)
    assert res.df == pytest.approx(216 / 53)
    assert res.p == pytest.approx(p) and 0.02 < p < 0.03
    # Student's pooled-variance test gives another answer on these samples
    assert abs(stats.ttest_ind(a, b).statistic - t) > 0.3
    flipped = welch(b, a)
    assert flipped.t == pytest.approx(-t) and flipped.p == pytest.approx(p)


def test_welch_p_is_large_within_one_distribution_and_tiny_between_separated_ones():
    rng = np.random.default_rng(0)
    # a small noisy sample against a large tight one with the same mean: Welch rejects at about its level,
    # the pooled-variance test (which weights the tight sample's variance) far more often
    # (measured: Welch 7%, Student 34% of 2,000 pairs)
    ps = [welch(rng.normal(0, 5, 3), rng.normal(0, 1, 10)).p for _ in range(2000)]
    assert 0.03 < np.mean(np.array(ps) < 0.05) < 0.10
    assert np.median(ps) > 0.4
    assert welch(rng.normal(0, 1, 5), rng.normal(10, 1, 5)).p < 1e-5


def test_welch_without_spread_is_undefined_and_needs_two_values():
    assert all(math.isnan(x) for x in welch([8, 8, 8], [7, 7, 7]))
    assert all(math.isnan(x) for x in welch([8, 8, 8], [8, 8, 8]))
    assert welch([8, 8, 8], [7, 8, 9]).p == pytest.approx(1.0)  # one sample with spread is enough
    with pytest.raises(ValueError, match="at least 2 values"):
        welch([1.0], [1.0, 2.0])


# ---------------------------------------------------------------------------- bootstrap
def test_bootstrap_interval_covers_the_mean_of_normal_data_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    cis = [bootstrap_ci(rng.normal(3.0, 2.0, 30), n_resamples=2000, seed=i) for i in range(100)]
    coverage = np.mean([lo <= 3.0 <= hi for lo, hi in cis])
    assert 0.85 <= coverage <= 0.99  # nominal 95%; the percentile interval runs a little short at n = 30
    width = {n: np.mean([np.subtract(*bootstrap_ci(rng.normal(0, 1, n), n_resamples=2000)[::-1])
                         for _ in range(10)]) for n in (25, 400)}
    assert width[400] == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.1)  # the normal interval's width
    assert width[400] / width[25] == pytest.approx(0.25, rel=0.2)  # ∝ 1/√n


def test_bootstrap_interval_is_reproducible_and_exact_on_two_points():
    x = list(np.random.default_rng(5).normal(size=12))
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    lo, hi = bootstrap_ci(x)
    assert min(x) <= lo < np.mean(x) < hi <= max(x)  # the percentile interval stays within the values
    # two values: the resampled means are 0, ½, 1 with probabilities ¼, ½, ¼, so the 2.5% and 97.5% points are 0, 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([5.0, 5.0, 5.0], method="BCa") == (5.0, 5.0)  # no spread to resample
    lo90, hi90 = bootstrap_ci(x, confidence=0.9)
    assert lo < lo90 and hi90 < hi  # a 90% interval is narrower
    with pytest.raises(ValueError, match="at least 2 finite"):
        bootstrap_ci([1.0, math.inf])
    with pytest.raises(ValueError, match="method='bca'"):
        bootstrap_ci(x, method="bca")


# ---------------------------------------------------------------------------- Holm
def test_holm_adjusts_a_hand_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 (step-down is monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.3, math.nan, 0.02])  # NaN: no test, not counted (m = 2)
    assert out[0] == pytest.approx(0.3) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # clipped at 1
    assert holm([]) == []


# ---------------------------------------------------------------------------- rows
def test_rows_keep_per_run_values_and_runs_without_one_do_not_count():
    runs = [{"run": str(i), "seed": i, "fid": v, "g_steps": 5} for i, v in enumerate([3.0, None, 5.0, 4.0])]
    row = aggregate_group(runs, values_of=("fid", "g_steps"))
    assert row["fid/values"] == [3.0, None, 5.0, 4.0] and row["fid/n"] == 3
    assert row["g_steps/values"] == [5.0] * 4 and row["g_steps"] == 5  # a shared counter keeps its values too
    assert seed_values(row, "fid") == [3.0, 5.0, 4.0]
    assert seed_values({"n": 1, "fid": 2.5}, "fid") == [2.5] and seed_values({"n": 1, "fid": None}, "fid") == []
    short = aggregate_group(runs[:3], values_of=("fid",))  # 2 values of 3 runs: no interval
    rows = [row, short]
    assert confidence_columns(rows, ["fid"], baseline=0) == {}  # nothing with 3 values to test against row 0
    assert (row["fid/lo"], row["fid/hi"]) == bootstrap_ci([3.0, 5.0, 4.0]) and "fid/lo" not in short
    assert row["baseline"] is True and "fid/p" not in short
    with pytest.raises(ValueError, match="correction='bonferroni'"):
        confidence_columns(rows, ["fid"], correction="bonferroni")


# ---------------------------------------------------------------------------- the baseline's name
def _rows():
    return [{"run": "ns_s0", "runs": "ns_s0,ns_s1,ns_s2", "n": 3, "overrides": "experiment=benchmark/ns"},
            {"run": "hinge_s0", "runs": "hinge_s0,hinge_s1,hinge_s2", "n": 3, "overrides": "experiment=benchmark/hinge"},
            {"run": "ns_s0/samples_prior", "runs": "ns_s0/samples_prior,ns_s1/samples_prior", "n": 2,
             "overrides": "experiment=benchmark/ns", "sampler": "prior", "sample_seed": "0,1"},
            {"run": "ns_s0/samples_drs", "n": 1, "overrides": "experiment=benchmark/ns", "sampler": "drs",
             "sample_seed": 0}]


@pytest.mark.parametrize(("name", "index"), [
    ("experiment=benchmark/hinge", 1), ("benchmark/hinge", 1), ("hinge", 1), ("hinge_s2", 1),
    ("ns", 0), ("experiment=benchmark/ns", 0),  # the training row, not the sampling rows from its checkpoints
    ("ns prior", 2), ("sampler=drs", 3), ("experiment=benchmark/ns sampler=prior", 2), ("ns_s1/samples_prior", 2),
])
def test_baseline_is_found_by_label_override_value_or_run_dir(name, index):
    assert find_baseline(_rows(), name) == index


def test_baseline_that_fits_no_row_or_several_is_refused():
    with pytest.raises(ValueError, match=r"--baseline='hing': fits no row .*experiment=benchmark/hinge"):
        find_baseline(_rows(), "hing")
    # without the ns training row, "ns" fits two sampling rows and no training row
    with pytest.raises(ValueError, match=r"fits several rows.*sampler=prior.*sampler=drs"):
        find_baseline(_rows()[1:], "ns")


# ---------------------------------------------------------------------------- the report
KLS = {"hinge": [0.10, 0.12, 0.11, 0.13],  # the baseline
       "standard": [0.50, 0.52, 0.55, 0.49],  # far worse: p ≈ 5e-6
       "wasserstein": [0.11, 0.14, 0.09, 0.12],  # the same mean: p ≈ 1
       "least_squares": [0.125, 0.145, 0.135, 0.155],  # raw p ≈ 0.034, Holm (×2 as the second smallest of 3) 0.068
       "topk": [0.3, 0.1]}  # 2 seeds: no interval, no test


def _sweep(tmp_path):
    i = 0
    for loss, kls in KLS.items():
        for seed, kl in enumerate(kls):
            _make_run(tmp_path / f"{loss}_s{seed}", seed, {"toy/reverse_kl": kl, "toy/modes": 8},
                      overrides=[f"loss={loss}"], loss_name=loss)
            i += 1
    return tmp_path


def _table(text):
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]
    return header, {r["overrides"]: r for r in rows}


def test_report_gives_intervals_and_holm_adjusted_welch_tests_against_the_baseline(tmp_path):
    md = write_report(_sweep(tmp_path), baseline="hinge")
    text = md.read_text()
    assert "Welch's two-sample t-test (unequal variances, two-sided)" in text
    assert "95% CI = percentile bootstrap interval of the mean" in text and "9999 resamples" in text
    assert "baseline `loss=hinge` (n = 4)" in text and "n = 2–4 runs per row" in text
    assert "Holm's method across the rows tested on each metric (up to 3)" in text and "`*`: p < 0.05" in text
    header, rows = _table(text)
    assert header[header.index("reverse KL"):header.index("reverse KL") + 3] == [
        "reverse KL", "reverse KL 95% CI", "reverse KL p (Holm)"]
    for loss, kls in KLS.items():
        row = rows[f"loss={loss}"]
        assert row["reverse KL"].startswith(f"{np.mean(kls):.3f} ± {np.std(kls, ddof=1):.3f}")
        if len(kls) < 3:
            assert row["reverse KL 95% CI"] == "n<3: no interval" and row["reverse KL p (Holm)"] == "n<3: no test"
        else:
            lo, hi = bootstrap_ci(kls)
            assert row["reverse KL 95% CI"] == f"[{lo:.3f}, {hi:.3f}]" and min(kls) <= lo < np.mean(kls) < hi
    assert rows["loss=hinge"]["reverse KL p (Holm)"] == "baseline"
    assert rows["loss=standard"]["reverse KL p (Holm)"] == "<0.001 *"
    assert rows["loss=wasserstein"]["reverse KL p (Holm)"] == "1.000"
    assert rows["loss=least_squares"]["reverse KL p (Holm)"] == "0.068"  # raw 0.034: not significant after Holm
    assert rows["loss=standard"]["modes p (Holm)"] == "no spread: no test"  # 8 modes in every run of both rows
    assert rows["loss=standard"]["modes 95% CI"] == "[8, 8]"

    with open(tmp_path / "leaderboard.csv") as f:
        by_loss = {r["overrides"]: r for r in csv.DictReader(f)}
    base = KLS["hinge"]
    for loss in ("standard", "wasserstein", "least_squares"):
        row = by_loss[f"loss={loss}"]
        assert json.loads(row["toy/reverse_kl/values"]) == KLS[loss]
        assert (float(row["toy/reverse_kl/lo"]), float(row["toy/reverse_kl/hi"])) == pytest.approx(bootstrap_ci(KLS[loss]))
        assert float(row["toy/reverse_kl/p"]) == pytest.approx(stats.ttest_ind(KLS[loss], base, equal_var=False).pvalue)
    assert float(by_loss["loss=least_squares"]["toy/reverse_kl/p_holm"]) == pytest.approx(
        2 * float(by_loss["loss=least_squares"]["toy/reverse_kl/p"]))
    assert [by_loss[f"loss={k}"]["toy/reverse_kl/significant"] for k in ("standard", "wasserstein", "least_squares")] == [
        "True", "False", "False"]
    assert by_loss["loss=hinge"]["baseline"] == "True" and by_loss["loss=hinge"]["toy/reverse_kl/p"] == ""
    assert by_loss["loss=topk"]["toy/reverse_kl/lo"] == "" and by_loss["loss=topk"]["toy/reverse_kl/p"] == ""


def test_report_cli_without_correction_and_with_a_bad_baseline(tmp_path, capsys):
    sweep = _sweep(tmp_path)
    main([str(sweep), "--baseline", "loss=hinge", "--correction", "none"])
    text = (sweep / "leaderboard.md").read_text()
    assert "raw p, no multiple-comparison correction" in text
    _, rows = _table(text)
    assert rows["loss=least_squares"]["reverse KL p"] == "0.034 *"  # significant when uncorrected
    (sweep / "leaderboard.md").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--baseline", "loss=hing"])
    assert exit_info.value.code == 1
    assert "error: --baseline='loss=hing': fits no row" in capsys.readouterr().err
    assert not (sweep / "leaderboard.md").exists()  # refused before writing
    with pytest.raises(ValueError, match="--alpha=1.5"):
        write_report(sweep, alpha=1.5)


def test_report_without_baseline_gives_intervals_only_and_single_runs_none(tmp_path):
    text = write_report(_sweep(tmp_path / "seeds")).read_text()
    assert "No test: pass --baseline" in text
    header, _ = _table(text)
    assert "reverse KL 95% CI" in header and not any(h.startswith("reverse KL p") for h in header)
    for loss in ("hinge", "standard"):
        _make_run(tmp_path / "single" / loss, 0, {"toy/reverse_kl": 0.1}, overrides=[f"loss={loss}"],
                  loss_name=loss)
    text = write_report(tmp_path / "single").read_text()
    assert "One run per configuration: no intervals or tests" in text and "95% CI" not in text


# ---------------------------------------------------------------------------- a report over several sittings
def _sitting(root, losses, hinge_shift=0.0):
    for loss in losses:
        for seed, kl in enumerate(KLS[loss]):
            shift = hinge_shift if loss == "hinge" else 0.0
            _make_run(root / f"{loss}_s{seed}", seed, {"toy/reverse_kl": kl + shift, "toy/modes": 8},
                      overrides=[f"loss={loss}"], loss_name=loss)
    return root


def _by_label(csv_path):
    with open(csv_path) as f:
        return {r["overrides"]: r for r in csv.DictReader(f)}


def test_an_included_leaderboard_is_tested_in_one_family_with_this_sweep(tmp_path):
    """Sitting 1 measured hinge, standard and wasserstein; sitting 2 measured hinge again (the newer runs stand),
    least_squares and topk. Sitting 2's report with sitting 1's leaderboard included gives the intervals and
    Holm-adjusted p of one report over all the runs."""
    everything = write_report(_sweep(tmp_path / "all"), baseline="hinge")
    first = _sitting(tmp_path / "one", ["hinge", "standard", "wasserstein"], hinge_shift=5.0)  # old hinge runs differ
    write_report(first, baseline="standard")  # its own tests, against another row: the merged report recomputes them
    sitting_one = _by_label(first / "leaderboard.csv")
    assert set(sitting_one) == {"loss=hinge", "loss=standard", "loss=wasserstein"}
    assert sitting_one["loss=standard"]["baseline"] == "True" and sitting_one["loss=wasserstein"]["toy/reverse_kl/p"]
    second = _sitting(tmp_path / "two", ["hinge", "least_squares", "topk"])
    md = write_report(second, baseline="hinge", include=[first / "leaderboard.csv"])
    merged, full = _by_label(md.with_suffix(".csv")), _by_label(everything.with_suffix(".csv"))
    assert set(merged) == set(full) == {f"loss={k}" for k in KLS}
    assert json.loads(merged["loss=hinge"]["toy/reverse_kl/values"]) == KLS["hinge"]  # this sweep's, not shifted
    def cell(row, key):
        text = row.get(key, "")
        return float(text) if text not in ("", "True", "False") else text

    for label, row in merged.items():
        for key in ("toy/reverse_kl", "toy/reverse_kl/lo", "toy/reverse_kl/hi", "toy/reverse_kl/p",
                    "toy/reverse_kl/p_holm", "toy/reverse_kl/significant", "baseline"):
            assert cell(row, key) == pytest.approx(cell(full[label], key)), (label, key)
    assert merged["loss=standard"]["source"] == str(first / "leaderboard.csv")
    assert merged["loss=topk"]["source"] == merged["loss=hinge"]["source"] == "this sweep"
    text = md.read_text()
    assert "10 runs here in 5 configurations" in text and "Rows from earlier leaderboards (the `source` column): 2 of 5" in text
    assert "Measured again in this sweep, so taken from its runs: `loss=hinge`" in text
    assert "Holm's method across the rows tested on each metric (up to 3)" in text  # standard, wasserstein, least_squares


def test_an_included_file_that_is_no_leaderboard_or_repeats_a_row_is_refused(tmp_path):
    sweep = _sitting(tmp_path / "s", ["hinge", "standard"])
    write_report(sweep)
    with pytest.raises(MissingError, match="no such file"):
        write_report(sweep, include=[tmp_path / "nowhere.csv"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MissingError, match="not a leaderboard"):
        write_report(sweep, include=[tmp_path / "other.csv"])
    other = _sitting(tmp_path / "t", ["wasserstein", "topk"])
    write_report(other)
    (tmp_path / "copy.csv").write_text((other / "leaderboard.csv").read_text())
    with pytest.raises(ValueError, match="'loss=wasserstein' is a row in both .*include it once"):
        write_report(sweep, include=[other / "leaderboard.csv", tmp_path / "copy.csv"])


# ---------------------------------------------------------------------------- the benchmark's chart
def test_chart_error_bars_are_the_bootstrap_interval(tmp_path):
    rows = [{"overrides": "experiment=benchmark/ns", "n": "3", "modes": "400", "modes/std": "300",
             "modes/lo": "150", "modes/hi": "700", "kl_uniform": "1.0", "kl_uniform/lo": "0.5",
             "kl_uniform/hi": "1.25", "baseline": "True"},
            {"overrides": "experiment=benchmark/hinge", "n": "3", "modes": "900", "modes/std": "20",
             "modes/lo": "880", "modes/hi": "915", "modes/significant": "True", "kl_uniform": "0.3",
             "kl_uniform/lo": "0.2", "kl_uniform/hi": "0.35", "kl_uniform/significant": "True"},
            {"overrides": "experiment=benchmark/sn", "n": "2", "modes": "500", "modes/std": "50", "kl_uniform": "0.9"}]
    below, above = interval_errors(rows, "modes")
    assert (below[:2], above[:2]) == ([250.0, 20.0], [300.0, 15.0])  # to the interval's ends, not ± std
    assert math.isnan(below[2]) and math.isnan(above[2])  # n = 2: no bar
    below, above = interval_errors(rows, "kl_uniform")
    assert below[:2] == pytest.approx([0.5, 0.1]) and above[:2] == pytest.approx([0.25, 0.05])
    assert plot_modes_kl(rows, tmp_path / "chart.png").is_file()


def test_benchmark_report_tests_training_rows_against_ns_and_leaves_sampling_rows_out(tmp_path):
    from gancollapse.benchmark import report

    modes = {"ns": [459.0, 120.0, 800.0], "hinge": [900.0, 910.0, 905.0]}
    for name, values in modes.items():
        for seed, m in enumerate(values):
            run = tmp_path / f"{name}_s{seed}"
            _make_run(run, seed, {"modes": m, "kl_uniform": 1000.0 / m}, overrides=[f"experiment=benchmark/{name}"],
                      experiment=name)
            if name == "ns":  # prior sampling on the baseline's checkpoints, as gancollapse.sample leaves it
                (run / "samples_prior").mkdir()
                (run / "samples_prior" / "sampler.yaml").write_text("name: prior\n")
                (run / "samples_prior" / "summary.json").write_text(json.dumps(
                    {"sampler": "prior", "sampler_overrides": "", "n": 2000, "seed": seed, "sample_seed": seed,
                     "modes": m - 50, "kl_uniform": 1000.0 / (m - 50)}))
    chart = report(tmp_path, "ns_s0")
    assert chart.name == "modes_kl.png" and chart.is_file()
    text = (tmp_path / "leaderboard.md").read_text()
    assert "baseline `experiment=benchmark/ns` (n = 3), training rows only" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {r["run"]: r for r in (dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
                                  for line in table[2:])}
    p = stats.ttest_ind(modes["hinge"], modes["ns"], equal_var=False).pvalue  # one test: Holm leaves it as it is
    assert rows["hinge_s0"]["modes p (Holm)"] == f"{p:.3f}" and p > 0.05  # twice the modes, but 3 seeds of 460 ± 340: p ≈ 0.15
    assert rows["ns_s0"]["modes p (Holm)"] == "baseline"
    assert rows["ns_s0/samples_prior"]["modes p (Holm)"] == "not compared"  # 2,000 images vs 10,000
    assert rows["ns_s0/samples_prior"]["modes 95% CI"].startswith("[")


def test_configurations_are_matched_by_their_own_overrides_not_by_the_sweep_s_labels(tmp_path):
    """A label names what differs within its sweep: `loss=hinge` of a model=big sitting is not `loss=hinge` of a
    model=small one, and a one-configuration sitting has no label at all. config_id holds across sittings."""
    for sitting, model in (("big", "big"), ("small", "small")):
        for loss in ("hinge", "standard"):
            for seed, kl in enumerate(KLS[loss][:3]):
                _make_run(tmp_path / sitting / f"{loss}_s{seed}", seed, {"toy/reverse_kl": kl},
                          overrides=[f"model={model}", f"loss={loss}"], loss_name=loss)
    big = write_report(tmp_path / "big").with_suffix(".csv")
    assert _by_label(big)["loss=hinge"]["config_id"] == "loss=hinge model=big"
    write_report(tmp_path / "small", include=[big])
    with open(tmp_path / "small" / "leaderboard.csv") as f:
        ids = sorted(r["config_id"] for r in csv.DictReader(f))
    assert ids == ["loss=hinge model=big", "loss=hinge model=small", "loss=standard model=big",
                   "loss=standard model=small"]  # four configurations: nothing replaced
    for seed, kl in enumerate(KLS["hinge"][:3]):  # hinge on model=big again, alone: no label, same configuration
        _make_run(tmp_path / "again" / f"{seed}_0", seed, {"toy/reverse_kl": kl + 1.0},
                  overrides=["model=big", "loss=hinge"], loss_name="hinge")
    md = write_report(tmp_path / "again", include=[big])
    rows = {r["config_id"]: r for r in csv.DictReader(open(md.with_suffix(".csv")))}
    assert set(rows) == {"loss=hinge model=big", "loss=standard model=big"}
    assert rows["loss=hinge model=big"]["source"] == "this sweep" and rows["loss=hinge model=big"]["run"] == "0_0"
    assert "taken from its runs: `loss=hinge`" in md.read_text()


def test_a_rerun_with_too_few_finished_runs_does_not_replace_the_earlier_row(tmp_path):
    earlier = write_report(_sitting(tmp_path / "one", ["hinge", "standard"])).with_suffix(".csv")
    _make_run(tmp_path / "two" / "hinge_s0", 0, {"toy/reverse_kl": 9.0}, overrides=["loss=hinge"], loss_name="hinge")
    _make_run(tmp_path / "two" / "standard_s0", 0, {"toy/reverse_kl": 9.0}, overrides=["loss=standard"],
              loss_name="standard")
    (tmp_path / "two" / "hinge_s1").mkdir()  # a second hinge seed killed before its summary
    md = write_report(tmp_path / "two", baseline="hinge", include=[earlier])
    rows = _by_label(md.with_suffix(".csv"))
    assert json.loads(rows["loss=hinge"]["toy/reverse_kl/values"]) == KLS["hinge"]
    assert rows["loss=hinge"]["source"] == str(earlier) and rows["loss=standard"]["source"] == str(earlier)
    assert "too few finished runs to test, so the earlier row stands: `loss=hinge`, `loss=standard`" in md.read_text()
    assert float(rows["loss=standard"]["toy/reverse_kl/p"]) == pytest.approx(
        stats.ttest_ind(KLS["standard"], KLS["hinge"], equal_var=False).pvalue)


def test_an_old_leaderboard_without_per_run_values_is_refused_and_sources_are_kept(tmp_path):
    earlier = write_report(_sitting(tmp_path / "one", ["hinge", "standard"])).with_suffix(".csv")
    with open(earlier) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = [k for k in reader.fieldnames if not k.endswith("/values")]
    with open(tmp_path / "old.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(MissingError, match="has no per-run values of .*toy/reverse_kl"):
        write_report(_sitting(tmp_path / "two", ["wasserstein", "topk"]), include=[tmp_path / "old.csv"])
    merged = write_report(tmp_path / "two", include=[earlier]).with_suffix(".csv")
    _sitting(tmp_path / "three", ["least_squares", "topk"])
    final = _by_label(write_report(tmp_path / "three", include=[merged]).with_suffix(".csv"))
    assert final["loss=hinge"]["source"] == str(earlier)  # where it was measured, not the file that passed it on
    assert final["loss=wasserstein"]["source"] == str(merged) and final["loss=topk"]["source"] == "this sweep"


def test_benchmark_cli_includes_an_earlier_sitting_in_its_report_and_chart(tmp_path):
    from gancollapse.benchmark import main as benchmark_main

    modes = {"ns": [459.0, 120.0, 800.0], "hinge": [900.0, 910.0, 905.0], "lsgan": [880.0, 870.0, 875.0]}

    def runs(root, names):
        for name in names:
            for seed, m in enumerate(modes[name]):
                _make_run(root / f"{name}_s{seed}", seed, {"modes": m, "kl_uniform": 1000.0 / m},
                          overrides=[f"experiment=benchmark/{name}"], experiment=name)

    runs(tmp_path / "earlier", ["hinge", "lsgan"])
    earlier = write_report(tmp_path / "earlier").with_suffix(".csv")
    runs(tmp_path / "now", ["ns"])
    benchmark_main(["--out", str(tmp_path / "now"), "--configs", "ns", "--seeds", "0,1,2", "--skip-train",
                    "--skip-sample", "--include", str(earlier)])
    with open(tmp_path / "now" / "leaderboard.csv") as f:
        rows = {r["config_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"experiment=benchmark/ns", "experiment=benchmark/hinge", "experiment=benchmark/lsgan"}
    assert rows["experiment=benchmark/ns"]["baseline"] == "True"
    for name in ("hinge", "lsgan"):  # two tests against ns: Holm doubles the smaller p
        assert rows[f"experiment=benchmark/{name}"]["source"] == str(earlier)
    ps = {n: stats.ttest_ind(modes[n], modes["ns"], equal_var=False).pvalue for n in ("hinge", "lsgan")}
    assert float(rows["experiment=benchmark/hinge"]["modes/p_holm"]) == pytest.approx(holm(list(ps.values()))[0])
    assert (tmp_path / "now" / "modes_kl.png").is_file()
    # a sitting that does not rerun ns tests against the included ns row
    runs(tmp_path / "later", ["hinge"])
    benchmark_main(["--out", str(tmp_path / "later"), "--configs", "hinge", "--seeds", "0,1,2", "--skip-train",
                    "--skip-sample", "--include", str(tmp_path / "now" / "leaderboard.csv")])
    with open(tmp_path / "later" / "leaderboard.csv") as f:
        later = {r["config_id"]: r for r in csv.DictReader(f)}
    assert later["experiment=benchmark/ns"]["baseline"] == "True"
    assert float(later["experiment=benchmark/hinge"]["modes/p_holm"]) == pytest.approx(holm(list(ps.values()))[0])
