"""User experience: the run-level progress printout, the sampling CLI's help and defaults, the public API's
``dir``, the sweep figures' labels, the data download CLI, one-line errors for GPU trainers without GPUs, the
end-of-sweep report, the leaderboard's stated order, weights-only best.ckpt, the saved run length, the closing
printout and train.log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import nn

import gancollapse
from gancollapse.plots import count_label, fake_limits, image_grid, scatter_frame, wrap_title
from gancollapse.progress import format_duration, format_eval
from gancollapse.report import sort_description, sort_rows, write_report
from gancollapse.runio import RunError
from gancollapse.sample import DEFAULTS
from gancollapse.samplers import refined
from gancollapse.samplers.mhgan import MHGANSampler
from gancollapse.train import run

from .conftest import REPO, TINY, compose_cfg, run_cli

# The progress bar on (conftest's TINY switches it off); print_every_s=0: a line every refresh_rate batches.
PROGRESS = [o for o in TINY if "progress_bar" not in o] + ["callbacks.progress_bar.print_every_s=0",
                                                             "callbacks.progress_bar.refresh_rate=5",
                                                             "logger=none"]


def test_non_tty_run_prints_plain_g_step_lines_and_one_line_per_evaluation(tmp_path, capsys):
    cfg = compose_cfg(PROGRESS + ["max_g_steps=20", "evaluator.every_n_steps=10", "evaluator.n_samples=400",
                                  "evaluator.n_plot=100"], tiny=False)
    run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "G step 0/20 (0.0%)" in out
    assert "G step 20/20 (100.0%)" in out and "G steps/s" in out and "ETA" in out
    evals = [line for line in out.splitlines() if line.startswith("eval @ G step")]
    assert [e.split(":")[0] for e in evals] == ["eval @ G step 10/20", "eval @ G step 20/20"]
    assert all("modes " in e and "/8" in e and "HQ " in e and "KL " in e for e in evals)
    assert "\x1b[" not in out  # captured stdout is not a terminal: no ANSI codes


def test_epoch_length_run_counts_batches_of_the_whole_run(tmp_path, capsys):
    # 2000 points / 200 per batch = 10 batches per epoch, 2 epochs
    cfg = compose_cfg(PROGRESS + ["max_g_steps=null", "trainer.max_epochs=2", "evaluator=none"], tiny=False)
    run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "batch 20/20 (100.0%)" in out and "epoch 2/2" in out
    assert "batch 10/20 (50.0%)" in out and "epoch 1/2" in out


def test_format_eval_headline_metrics():
    toy = {"toy/modes": 7.0, "toy/n_modes": 8.0, "toy/hq_fraction": 0.912, "toy/reverse_kl": 0.0123,
           "toy/seconds": 0.25, "toy/g_step": 100.0}
    assert format_eval(toy) == "modes 7/8 · HQ 91.2% · KL 0.012 · 0.2 s"
    img = {"fid": 23.456, "kid": 0.01234, "kid_std": 0.0011, "modes": 987.0, "kl_uniform": 0.31,
           "best/fid": 20.1, "best/fid_step": 800.0}
    assert format_eval(img, monitor="fid") == "FID 23.46 · KID 0.0123 ± 0.0011 · modes 987 · KL 0.31 · best fid 20.1 @ 800"
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "-:--:--"


def test_sample_help_exits_zero_and_default_sampler_is_the_prior():
    res = subprocess.run([sys.executable, "-m", "gancollapse.sample", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "gancollapse.sample <run dir>" in res.stdout
    assert DEFAULTS["sampler"] == "prior"


def test_load_is_listed_by_dir():
    assert {"load", "RunHandle"} <= set(dir(gancollapse))


def test_count_label_singular_and_plural():
    assert count_label(1, "mode") == "1 mode"
    assert count_label(1.0, "mode") == "1 mode"
    assert count_label(0, "mode") == "0 modes" and count_label(8, "mode") == "8 modes"
    assert count_label(float("nan"), "mode") == "— modes"


def test_diverged_points_widen_the_axes_instead_of_piling_on_the_border(tmp_path):
    fake = torch.tensor([[0.0, 0.0], [300.0, -5.0], [float("nan"), 1.0]])
    lo, hi = fake_limits(fake, -3.0, 3.0)
    assert lo == -hi and hi >= 300.0
    assert fake_limits(torch.zeros(4, 2), -3.0, 3.0) == (-3.0, 3.0)
    assert scatter_frame(torch.randn(50, 2), fake, tmp_path / "f.png", "diverged").is_file()


def test_grid_titles_are_wrapped_and_not_clipped(tmp_path):
    long = "run 0: " + " / ".join(["hinge", "maem(weight=0.5,k=10)", "wlgan(chain_length=640)"] * 2) + "\n1 mode"
    wrapped = wrap_title(long)
    assert all(len(line) <= 42 for line in wrapped.split("\n")) and wrapped.endswith("1 mode")
    pic = tmp_path / "p.png"
    Image.new("RGB", (64, 64), "white").save(pic)
    grid = image_grid([pic, pic], [long, "short"], tmp_path / "grid.png")
    w, h = Image.open(grid).size
    assert h > w / 2  # the titles' lines got room above the panels


class RecordingBar:
    """Stands in for the sampler's rich bar: records every position it is set to."""

    def __init__(self) -> None:
        self.completed, self.positions = 0.0, []

    def __enter__(self) -> RecordingBar:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        return None

    def advance(self, k: float) -> None:
        self.set(self.completed + k)

    def set(self, completed: float) -> None:
        self.completed = float(completed)
        self.positions.append(self.completed)


def test_mcmc_bar_moves_within_chains_and_time_is_estimated(monkeypatch):
    bar = RecordingBar()
    monkeypatch.setattr(refined, "progress_bar", lambda total, description, enabled: bar)
    torch.manual_seed(0)
    g, d = nn.Linear(2, 2), nn.Linear(2, 1)
    sampler = MHGANSampler(chain_length=5, batch_size=10)
    assert sampler.chain_steps == 5
    assert sampler.estimate_seconds(g, d, 20, 2) > 0
    z = sampler.sample(g, d, 20, 2, seed=0, progress=True)
    assert z.shape == (20, 2)
    inside_first_batch = [p for p in bar.positions if 0 < p < 10]
    assert len(inside_first_batch) >= 3  # moved during the first batch's chain steps, not only at its end
    assert bar.positions == sorted(bar.positions) and bar.positions[-1] == 20


# ---------------------------------------------------------------------------- data download, GPU check, sweeps,
# leaderboard order, best.ckpt, run length, closing printout, train.log
def test_data_download_help_lists_the_names_and_an_unknown_name_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    from gancollapse.data.__main__ import main as data_main

    with pytest.raises(SystemExit) as done:
        data_main(["download", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and all(n in out for n in ("mnist", "cifar10", "celeba"))
    with pytest.raises(SystemExit) as done:
        data_main(["download", "svhn"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown data set 'svhn'")
    assert all(n in err for n in ("mnist", "cifar10", "celeba"))


def test_data_download_without_network_names_the_files_to_copy(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    from torchvision.datasets import MNIST

    from gancollapse.data.__main__ import main as data_main

    # a file: URL that does not exist fails like an unreachable host (URLError), and never leaves the machine
    monkeypatch.setattr(MNIST, "mirrors", [(tmp_path / "no-mirror").as_uri() + "/"])
    with pytest.raises(SystemExit) as done:
        data_main(["download", "mnist", "--root", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: downloading mnist") and " — " in err
    assert "MNIST/raw/" in err and "train-images-idx3-ubyte.gz" in err and str(tmp_path / "data") in err


def test_a_gpu_trainer_on_a_machine_without_gpus_is_a_run_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg(["trainer=ddp", "max_g_steps=5", "evaluator=none", "logger=none"])
    with open_dict(cfg):
        cfg.choices = {"trainer": "ddp"}
    with pytest.raises(RunError) as err:
        run(cfg, tmp_path)
    assert "trainer=ddp asks for GPUs" in str(err.value)
    assert "trainer.accelerator=cpu" in err.value.fix and "trainer.devices=2" in err.value.fix


def test_multirun_prints_the_sweep_dir_and_report_true_writes_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *TINY, "loss=standard,hinge", "max_g_steps=10", "evaluator.every_n_steps=10",
                   "evaluator.n_samples=500", "evaluator.frames=false", "logger=none", "report=true",
                   f"hydra.sweep.dir={sweep}"], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Sweep directory: {sweep.resolve()}" in res.stdout
    assert f"python -m gancollapse.report {sweep.resolve()}" in res.stdout
    assert (sweep / "leaderboard.md").is_file()


def test_leaderboard_states_its_sort_column_and_direction(tmp_path):
    toy = [{"toy/modes": 8, "toy/hq_fraction": 0.9, "toy/reverse_kl": 0.01}, {"toy/modes": 6, "toy/reverse_kl": None}]
    assert sort_description(toy) == ("sorted by modes (most first), then HQ % (highest first), "
                                     "then reverse KL (lowest first)")
    images = [{"fid": 30.0, "best/fid": 25.0}, {"fid": 40.0, "best/fid": float("nan")}]
    assert sort_description(images) == "sorted by best FID, else FID (lowest first)"
    assert sort_description([{"fid": 30.0}]) == "sorted by FID (lowest first)"
    for i, modes in enumerate((5, 8)):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "summary.json").write_text(json.dumps({"loss": "hinge", "seed": i, "toy/modes": modes}))
    board = write_report(tmp_path).read_text()
    assert "sorted by modes (most first)" in board.split("|")[0]



def test_mode_counted_sweeps_sort_by_modes_then_kl_then_fid():
    """Stacked MNIST / Stacked Digits: the collapse benchmark's headline (modes of 1,000) decides, not FID."""
    rows = [{"run": "sharp", "modes": 150, "kl_uniform": 3.7, "fid": 0.9},
            {"run": "covers", "modes": 830, "kl_uniform": 0.70, "fid": 1.4},
            {"run": "tie", "modes": 830, "kl_uniform": 0.65, "fid": 4.4},
            {"run": "failed"}]
    assert [r["run"] for r in sort_rows(rows)] == ["tie", "covers", "sharp", "failed"]
    assert sort_description(rows) == ("sorted by modes (most first), then KL to uniform (lowest first), "
                                      "then FID (lowest first)")
    # without mode counts FID decides, missing FIDs last
    assert [r["fid"] for r in sort_rows([{"fid": 4.0}, {"fid": None}, {"fid": 1.0}])] == [1.0, 4.0, None]

def test_best_ckpt_is_weights_only_and_loads_like_the_weights_it_saved(tmp_path):
    # monitoring the G step (max) makes the last evaluation, at the end of training, the best: best.ckpt then
    # holds the final weights, which last.ckpt holds too
    cfg = compose_cfg(["max_g_steps=20", "evaluator.every_n_steps=10", "evaluator.n_samples=500",
                       "evaluator.frames=false", "evaluator.monitor=toy/g_step", "evaluator.monitor_mode=max",
                       "logger=none"])
    run(cfg, tmp_path)
    best, last = tmp_path / "checkpoints" / "best.ckpt", tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(best, weights_only=True)
    assert "optimizer_states" not in state and "state_dict" in state and "gancollapse" in state
    assert best.stat().st_size < last.stat().st_size
    handle = gancollapse.load(tmp_path)
    assert handle.checkpoint == best and handle.module.g_steps == 20
    assert torch.equal(handle.sample(64, seed=0), gancollapse.load(tmp_path, which="last").sample(64, seed=0))


def test_saved_config_states_the_run_length_used(tmp_path):
    run(compose_cfg(["max_g_steps=7", "evaluator=none", "logger=none"]), tmp_path / "steps")
    saved = OmegaConf.load(tmp_path / "steps" / "config.yaml")
    assert saved.run_length.g_steps == 7 and saved.run_length.epochs is None
    run(compose_cfg(["max_g_steps=null", "trainer.max_epochs=1", "evaluator=none", "logger=none"]), tmp_path / "epochs")
    saved = OmegaConf.load(tmp_path / "epochs" / "config.yaml")
    assert saved.run_length.g_steps is None and saved.run_length.epochs == 1


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    res = run_cli([*TINY, "max_g_steps=10", "evaluator.every_n_steps=10", "evaluator.n_samples=500",
                   "evaluator.frames=false", "evaluator.monitor=toy/g_step", "evaluator.monitor_mode=max",
                   f"hydra.run.dir={run_dir}"], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res


def test_closing_printout_lists_checkpoints_and_the_report_command(cli_run):
    run_dir, res = cli_run
    lines = res.stdout.splitlines()
    assert any(line.split() == ["checkpoints:", str(run_dir / "checkpoints"), "(last.ckpt,", "best.ckpt)"]
               for line in lines), res.stdout
    assert any(line.split() == ["report:", "python", "-m", "gancollapse.report", str(run_dir)] for line in lines)
    assert not any(line.split()[:1] == ["samples:"] for line in lines)  # toy runs write no samples/


def test_no_empty_train_log_is_left(cli_run):
    run_dir, _ = cli_run
    log = run_dir / "train.log"
    assert not log.exists() or log.stat().st_size > 0
    if log.exists():  # the run's record: its start and where its outputs are
        text = log.read_text()
        assert f"run {run_dir}" in text and "finished: g_steps=10" in text


def test_classifier_help_exits_zero_with_its_usage(capsys):
    from gancollapse.classifier import main as classifier_main

    with pytest.raises(SystemExit) as exit_info:
        classifier_main(["--help"])
    assert exit_info.value.code == 0
    assert "python -m gancollapse.classifier dataset=" in capsys.readouterr().out
