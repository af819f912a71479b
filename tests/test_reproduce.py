"""`make reproduce` (gancollapse.reproduce): the verdict rule on hand cases, the ledger from fake run records,
resuming (finished seeds are not trained again), and one real run of the runner on a tiny cell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from scipy import stats

from gancollapse import reproduce as rp
from gancollapse.aggregate import ENSEMBLE_FILE, flatten

PAPER_CFG = {"seed": 0, "max_g_steps": 25000, "dataset": {"name": "ring", "std": 0.01, "seed": 0},
             "optim": {"generator": {"lr": 0.001}}, "evaluator": {"every_n_steps": 5000, "n_samples": 2500}}


def make_cell(**kw) -> rp.Cell:
    base = dict(table="veegan_ring", name="gan", paper="P", title="Table 1", overrides=(), schedule="full",
                schedule_overrides=(), runs=5, protocol_runs=5, runs_stated=True, error=None,
                metrics=(("modes", "toy/modes"), ("hq_percent", "toy/hq_fraction")),
                published={"modes": 8.0, "hq_percent": 50.0}, paper_steps=25000, steps=25000)
    base.update(kw)
    return rp.Cell(**base)


def write_run(run_dir: Path, seed: int, modes: float, hq: float, status: str = "finished", g_steps: int = 25000,
              config: dict | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(config or PAPER_CFG))
    cfg["seed"], cfg["dataset"]["seed"] = seed, seed
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "g_steps": g_steps, "seed": seed,
                                                      "toy/modes": modes, "toy/hq_fraction": hq}))


def cell_runs(out: Path, cell: rp.Cell, modes, hq, **kw) -> None:
    for s, (m, h) in enumerate(zip(modes, hq, strict=True)):
        write_run(rp.cell_dir(out, cell) / f"seed_{s}", s, m, h, **kw)


def rows(out: Path, cell: rp.Cell) -> dict[str, rp.Row]:
    return {r.metric: r for r in rp.cell_rows(rp.read_cell(out, cell, flatten(PAPER_CFG)))}


# ---------------------------------------------------------------------------- the pure rule
def test_tolerance_hand_cases():
    # no error given: the rounding of the printed number; mode counts at least half a mode
    assert rp.tolerance("hq_percent", 99.3) == pytest.approx(0.05)
    assert rp.tolerance("hq_percent", 16) == pytest.approx(0.5)
    assert rp.tolerance("modes", 7.6) == rp.MODE_TOLERANCE == 0.5
    # PacGAN: mean ± SE over 10 trials -> t(0.975, 9) x SE, the paper's own 95% half-width
    t9 = stats.t.ppf(0.975, 9)
    assert rp.tolerance("modes", 6.3, 0.5, "SE", 10) == pytest.approx(t9 * 0.5)
    assert rp.tolerance("reverse_kl", 0.70, 0.07, "SE", 10) == pytest.approx(t9 * 0.07)
    # a standard deviation is turned into the mean's: SD / sqrt(n)
    assert rp.tolerance("hq_percent", 50.0, 2.0, "SD", 4) == pytest.approx(stats.t.ppf(0.975, 3) * 2.0 / 2)
    # the error's printed digits count for the rounding (0.70 +- 0.001 printed to 3 digits)
    assert rp.tolerance("reverse_kl", 0.7, 0.0001, "SE", None) == pytest.approx(1.96 * 0.0001)
    assert rp.decimals(99.3) == 1 and rp.decimals(1) == 0 and rp.decimals(0.07) == 2 and rp.decimals(1e-5) == 5
    assert rp.decimals(16.0) == 1 and rp.tolerance("hq_percent", 16.0) == pytest.approx(0.05)  # GDPP prints 16.0


def test_agrees_inside_at_the_edges_and_outside():
    assert rp.agrees(7.6, (8.0, 8.0), 0.5) is True        # all seeds 8, paper 7.6: within half a mode
    assert rp.agrees(7.4, (8.0, 8.0), 0.5) is False
    assert rp.agrees(3.0, (2.0, 4.0), 0.0) is True
    assert rp.agrees(4.0, (2.0, 4.0), 0.0) is True        # the interval's ends count as inside
    assert rp.agrees(4.01, (2.0, 4.0), 0.0) is False
    assert rp.agrees(1.99, (2.0, 4.0), 0.0) is False
    assert rp.agrees(3.0, None, 1.0) is None               # no interval, no agreement either way


def test_verdicts_on_hand_cases():
    assert rp.verdict(5, [], True)[0] == "reproduced"
    assert rp.verdict(5, [], False)[0] == "not reproduced"
    label, why = rp.verdict(5, ["short schedule: 10,000 G steps of the paper's 25,000"], True)
    assert label == "protocol differs" and "10,000 G steps of the paper's 25,000" in why and "agrees" in why
    assert rp.verdict(5, ["x"], False) == ("protocol differs", "x (the value does not agree)")
    assert rp.verdict(0, [], None) == ("not measured", "no finished run")
    assert rp.verdict(0, ["x"], True)[0] == "not measured"    # no run, no verdict, whatever else is known
    assert rp.verdict(2, [], None)[0] == "protocol differs"


def test_protocol_differences_name_how():
    assert rp.protocol_differences([25000] * 5, 25000, "full", 5, 5, True) == []
    short = rp.protocol_differences([10000] * 5, 25000, "short", 5, 5, True)
    assert short == ["short schedule: 10,000 G steps of the paper's 25,000"]
    assert rp.protocol_differences([25000] * 3, 25000, "full", 3, 5, True) == ["3 runs, the paper's 5"]
    assert rp.protocol_differences([25000] * 3, 25000, "full", 3, 5, False) == [
        "3 runs, 5 chosen (the paper states none)"]
    many = rp.protocol_differences([25000], 25000, "full", 1, 1, True, ["optim.lr: 0.1 → 0.2"], ["seed_1 (diverged)"])
    assert many == ["not finished: seed_1 (diverged)", "optim.lr: 0.1 → 0.2"]


def test_setting_differences_skip_seeds_and_bookkeeping():
    paper = flatten(PAPER_CFG)
    run = flatten({**PAPER_CFG, "seed": 3, "dataset": {"name": "ring", "std": 0.01, "seed": 3},
                   "evaluator": {"every_n_steps": 100, "n_samples": 2500}, "max_g_steps": 10})
    assert rp.setting_differences(paper, run) == []
    run["dataset.std"], run["evaluator.n_samples"] = 0.05, 64
    assert rp.setting_differences(paper, run) == ["dataset.std: 0.01 → 0.05", "evaluator.n_samples: 2500 → 64"]


def test_summarize_and_standard_error():
    s = rp.summarize([8, 8, 7, None, 8, float("nan"), 6])
    assert s.n == 5 and s.mean == pytest.approx(7.4)
    assert s.se == pytest.approx(s.sd / math.sqrt(5)) and s.error("SE") == s.se and s.error(None) == s.sd
    lo, hi = s.interval
    assert 6 <= lo < 7.4 < hi <= 8
    assert rp.summarize([8, 8]).interval is None            # fewer than 3 runs: no interval
    assert rp.percent_scale("hq_percent") == 100 and rp.percent_scale("modes") == 1


def test_makespan_is_longest_first_on_free_slots():
    assert rp.makespan([3, 3, 2, 2, 2], 2) == 7
    assert rp.makespan([10, 1, 1], 2) == 10
    assert rp.makespan([1, 1, 1], 1) == 3


# ---------------------------------------------------------------------------- the ledger from run records
def test_ledger_rows_from_fake_runs(tmp_path):
    ok = make_cell(name="gan")
    cell_runs(tmp_path, ok, [8, 8, 8, 8, 8], [0.49, 0.51, 0.50, 0.52, 0.48])
    got = rows(tmp_path, ok)
    assert got["modes"].verdict == "reproduced" and got["hq_percent"].verdict == "reproduced"
    assert got["hq_percent"].ours.mean == pytest.approx(50.0)  # 100 x the fraction

    off = make_cell(name="off")
    cell_runs(tmp_path, off, [3, 4, 3, 2, 3], [0.9, 0.95, 0.92, 0.91, 0.93])
    got = rows(tmp_path, off)
    assert got["modes"].verdict == "not reproduced" and got["hq_percent"].verdict == "not reproduced"

    short = make_cell(name="short", schedule="short", steps=10000)
    cell_runs(tmp_path, short, [8] * 5, [0.5] * 5, g_steps=10000)
    got = rows(tmp_path, short)["modes"]
    assert got.verdict == "protocol differs" and "short schedule: 10,000 G steps of the paper's 25,000" in got.why

    changed = make_cell(name="changed")
    cfg = json.loads(json.dumps(PAPER_CFG))
    cfg["optim"]["generator"]["lr"] = 0.01
    cell_runs(tmp_path, changed, [8] * 5, [0.5] * 5, config=cfg)
    got = rows(tmp_path, changed)["modes"]
    assert got.verdict == "protocol differs" and "optim.generator.lr: 0.001 → 0.01" in got.why

    diverged = make_cell(name="diverged")
    cell_runs(tmp_path, diverged, [8] * 5, [0.5] * 5)
    write_run(rp.cell_dir(tmp_path, diverged) / "seed_4", 4, 8, 0.5, status="diverged", g_steps=300)
    got = rows(tmp_path, diverged)["modes"]
    assert got.verdict == "protocol differs" and got.ours.n == 4
    assert "seed_4 (diverged)" in got.why and "4 runs, the paper's 5" in got.why

    missing = make_cell(name="never")
    got = rows(tmp_path, missing)
    assert {r.verdict for r in got.values()} == {"not measured"} and got["modes"].ours.n == 0


def test_document_states_the_rule_and_labels_rows(tmp_path):
    ok, never = make_cell(name="gan"), make_cell(name="never", note="copied from another table")
    cell_runs(tmp_path, ok, [8, 8, 8, 8, 8], [0.49, 0.51, 0.50, 0.52, 0.48])
    records = [rp.read_cell(tmp_path, c, flatten(PAPER_CFG)) for c in (ok, never)]
    plan = (["| cell | runs |", "|---|---|"], 123.4, 61.7)
    text = rp.document(records, "full", tmp_path, plan, 2)
    assert "tolerance τ" in text and "half a mode" in text and "Plan (planned, not measured)" in text
    assert "Planned: 123 CPU-min, about 62 min" in text
    assert "Verdicts: reproduced 2, not reproduced 0, protocol differs 0, not measured 2." in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| gan | modes |"))
    assert "| 8.0 | 8.0 ± 0.0 (SD) | 5 | [8.0, 8.0] | 0.5 | full (25,000 G steps) | **reproduced** |" in line
    assert "| never | hq_percent | 50.0 | not measured | 0 | — |" in text and "**not measured**" in text
    assert "| full (25,000 G steps planned) | **not measured** |" in text
    assert "Note — `never`: copied from another table" in text
    assert "P. Error measure: none given; 5 runs; paper budget 25,000 G steps." in text


def test_rows_in_the_papers_error_measure(tmp_path):
    """PacGAN's table gives mean ± SE over 10 trials: ours is shown ± SE too, and the paper's SE widens τ."""
    cell = make_cell(name="pac", error="SE", runs=10, protocol_runs=10, metrics=(("modes", "toy/modes"),),
                     published={"modes": 6.3, "modes_se": 0.5})
    modes = [6, 7, 5, 8, 6, 6, 7, 5, 6, 7]
    cell_runs(tmp_path, cell, modes, [0.9] * 10)
    row = rows(tmp_path, cell)["modes"]
    assert row.published_error == 0.5 and row.ours.error("SE") == pytest.approx(stats.sem(modes))
    assert row.tol == pytest.approx(stats.t.ppf(0.975, 9) * 0.5) and row.verdict == "reproduced"
    line = rp._row_line(row)
    assert "| 6.3 ± 0.5 (SE) | 6.3 ± 0.3 (SE) | 10 | [5.8, 6.9] | 1.13 |" in line


def test_estimates_and_plan_from_the_cells_cost_figures():
    """CPU minutes from cpu_ms: batched = steps x batched-ms for the whole cell, single = runs x (steps x run-ms),
    each plus the per-process overhead; the plan's wall time is the LPT makespan of those durations."""
    one = make_cell(name="one", steps=6000, runs=4, cpu_ms={"run": 10.0, "batched": 20.0})
    assert rp.estimate_minutes(one, 4, True) == pytest.approx(6000 * 20.0 / 60000 + rp.PROCESS_OVERHEAD_MIN)
    assert rp.estimate_minutes(one, 2, True) == pytest.approx(6000 * 20.0 / 2 / 60000 + rp.PROCESS_OVERHEAD_MIN)
    assert rp.estimate_minutes(one, 3, False) == pytest.approx(3 * (6000 * 10.0 / 60000 + rp.PROCESS_OVERHEAD_MIN))
    assert rp.estimate_minutes(make_cell(cpu_ms={}), 1, False) is None       # no figures: no estimate
    # a single-run cell is never batched, so the plan counts its runs one process each
    single = make_cell(name="single", steps=6000, runs=1, protocol_runs=1, cpu_ms={"run": 10.0})
    assert rp.batchable(single) == (False, "one run")
    lines, total, wall = rp.plan_lines([single], 2)
    assert total == pytest.approx(6000 * 10.0 / 60000 + rp.PROCESS_OVERHEAD_MIN) and wall == pytest.approx(total)
    assert "| veegan_ring:single | 1 | 6,000 (25,000) | no (one run) |" in lines[-1]


@pytest.fixture(scope="module")
def short_cells() -> list[rp.Cell]:
    return rp.load_cells("short")


def test_plan_prints_every_cell_and_trains_nothing(tmp_path, capsys, short_cells):
    """`make reproduce REPRO_ARGS=--plan`: the real tables' cells, batching and estimated minutes; no run dir."""
    out = tmp_path / "runs"
    rp.main(["--plan", "--tables", "veegan_ring", "--out", str(out), "--doc", str(tmp_path / "R.md")])
    text = capsys.readouterr().out
    cells = {c.key: c for c in short_cells if c.table == "veegan_ring"}
    gan = cells["veegan_ring:gan"]
    assert f"| veegan_ring:gan | {gan.runs} | {gan.steps:,} ({gan.paper_steps:,}) | yes |" in text
    assert "| veegan_ring:unrolled_gan |" in text and "gdpp_ring" not in text
    assert "planned (short schedule, 2 cells):" in text and "wall-min with 2 processes" in text
    assert not out.exists() and not (tmp_path / "R.md").exists()


# ---------------------------------------------------------------------------- resuming
def test_finished_seeds_are_not_trained_again(tmp_path):
    cell = make_cell(name="gan", steps=100)
    directory = rp.cell_dir(tmp_path, cell)
    assert [j.seeds for j in rp.plan_jobs([cell], tmp_path, sequential=True)] == [(0,), (1,), (2,), (3,), (4,)]
    for s in (0, 1, 3):
        write_run(directory / f"seed_{s}", s, 8, 0.5, g_steps=100)
    write_run(directory / "seed_2", 2, 8, 0.5, status="interrupted: SIGTERM", g_steps=40)
    write_run(directory / "seed_4", 4, 8, 0.5, g_steps=50)            # finished, but a shorter schedule
    jobs = rp.plan_jobs([cell], tmp_path, sequential=True)
    assert [j.seeds for j in jobs] == [(2,), (4,)]
    assert jobs[0].command[-2:] == ["seed=2", f"hydra.run.dir={directory / 'seed_2'}"]
    write_run(directory / "seed_2", 2, 8, 0.5, status="diverged", g_steps=40)   # a diverged run is over
    write_run(directory / "seed_4", 4, 8, 0.5, g_steps=100)
    assert rp.plan_jobs([cell], tmp_path, sequential=True) == []


def test_a_started_ensemble_is_resumed_as_one(tmp_path):
    cell = make_cell(name="gan", steps=100)
    directory = rp.cell_dir(tmp_path, cell)
    write_run(directory / "seed_0", 0, 8, 0.5, g_steps=100)
    (directory / ENSEMBLE_FILE).write_text("{}")
    jobs = rp.plan_jobs([cell], tmp_path, sequential=True)
    assert len(jobs) == 1 and jobs[0].batched and "ensemble=5" in jobs[0].command
    assert jobs[0].command[-1] == f"hydra.run.dir={directory}"


def test_shared_cells_train_once_into_the_first_cells_directory(tmp_path):
    owner = make_cell(table="gdpp_grid", name="unrolled_gan", steps=100)
    twin = make_cell(table="veegan_grid", name="unrolled_gan", steps=100, shares=owner.key)
    assert rp.cell_dir(tmp_path, twin) == rp.cell_dir(tmp_path, owner)
    jobs = rp.plan_jobs([owner, twin], tmp_path, sequential=True)
    assert len(jobs) == 5 and all("experiment=repro/gdpp_grid" in j.command for j in jobs)
    # asked for alone, the twin still trains the owner's config into the owner's directory
    jobs = rp.plan_jobs([twin], tmp_path, sequential=True, everything=[owner, twin])
    assert len(jobs) == 5 and all("experiment=repro/gdpp_grid" in j.command for j in jobs)


# ---------------------------------------------------------------------------- the real tables
def test_tables_load_and_bad_names_are_refused(short_cells):
    cells = short_cells
    keys = {c.key for c in cells}
    assert {"gdpp_ring:gdpp", "pacgan_grid:pacgan4", "veegan_ring:unrolled_gan"} <= keys
    by_key = {c.key: c for c in cells}
    assert by_key["pacgan_ring:gan"].runs == 10 and by_key["pacgan_ring:gan"].error == "SE"
    assert by_key["gdpp_ring:gan"].runs == 5 and not by_key["gdpp_ring:gan"].runs_stated
    assert all(c.steps <= c.paper_steps for c in cells)
    # a cell's own `short` replaces its table's: the cheap GAN cells keep the paper's budget
    assert (by_key["gdpp_ring:gan"].steps, by_key["gdpp_ring:gdpp"].steps) == (25000, 4000)
    assert by_key["pacgan_grid:pacgan4"].steps == 2000
    assert by_key["veegan_grid:unrolled_gan"].shares == "gdpp_grid:unrolled_gan"  # the same config
    assert all("run" in c.cpu_ms for c in cells)                     # every cell can be planned
    with pytest.raises(ValueError, match="--tables nope: no conf/experiment/repro"):
        rp.select_cells(cells, ["nope"])
    with pytest.raises(ValueError, match="--cells bogus: no such cell"):
        rp.select_cells(cells, ["gdpp_ring"], ["bogus"])
    assert [c.key for c in rp.select_cells(cells, ["gdpp_ring"], ["gan"])] == ["gdpp_ring:gan"]


@pytest.mark.slow  # two training processes: ~40 s on a loaded 2-core machine
def test_smoke_two_seeds_of_a_tiny_cell_through_the_runner(tmp_path, capsys):
    """The real `python -m gancollapse.reproduce`: one cell, two seeds, two G steps, overrides through `--`;
    a rerun trains nothing."""
    out, doc = tmp_path / "runs", tmp_path / "REPRODUCTION.md"
    args = ["--tables", "veegan_ring", "--cells", "gan", "--runs", "2", "--jobs", "2", "--out", str(out),
            "--doc", str(doc), "--override", "evaluator.n_samples=64", "--", "max_g_steps=2",
            "callbacks.progress_bar=null", "evaluator.frames=false", "dataset.n_samples=1024"]
    rp.main(args)
    capsys.readouterr()
    runs = sorted((out / "short" / "veegan_ring" / "gan").glob("seed_*/summary.json"))
    assert len(runs) == 2 and all(json.loads(p.read_text())["g_steps"] == 2 for p in runs)
    text = doc.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| gan | modes |") and "| 2 |" in ln)
    assert "**protocol differs**" in line and "2 G steps of the paper's 25,000" in line
    assert "2 runs, the paper's 5" in line and "evaluator.n_samples: 2500 → 64" in line
    assert "**not measured**" in text                                       # the other cells: no runs, no verdict
    before = [p.stat().st_mtime_ns for p in runs]
    rp.main(args)
    assert "0 training processes" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in runs] == before
