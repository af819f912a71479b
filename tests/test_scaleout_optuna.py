"""hydra/sweeper=maem_tune (Optuna over MaEM's σ and buffer size): a real 4-trial toy study whose trials
return each run's final reverse KL from the Hydra main."""

import json
import math

from omegaconf import OmegaConf

from .conftest import REPO, run_cli
from .test_scaleout_launchers import TINY_SWEEP


def test_optuna_tunes_maem_on_the_runs_final_reverse_kl(tmp_path):
    sweep = tmp_path / "study"
    # Adam at 1e-2 finds a mode or two in 100 G steps, so some trials have a finite reverse KL.
    args = ["-m", "hydra/sweeper=maem_tune", "hydra.sweeper.n_trials=4", "regularizer=maem_entropy",
            "model.discriminator.out_dim=4", "optim=adam", "optim.generator.lr=1e-2", "optim.discriminator.lr=1e-2",
            *TINY_SWEEP, "max_g_steps=100", "evaluator.frames=false", f"hydra.sweep.dir={sweep}"]
    res = run_cli(args, REPO, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = sorted((d for d in sweep.iterdir() if (d / "summary.json").is_file()), key=lambda d: int(d.name))
    assert [d.name for d in trials] == ["0", "1", "2", "3"]
    finals, params = [], []
    for d in trials:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["g_steps"] == 100
        kl = summary["toy/reverse_kl"]  # null when no sample is high quality: the trial's value is +inf
        finals.append(math.inf if kl is None else kl)
        sampled = {o.split("=")[0]: o.split("=")[1] for o in OmegaConf.load(d / ".hydra" / "overrides.yaml")
                   if o.startswith("regularizer.maem.")}
        # the declared search space (conf/hydra/sweeper/maem_tune.yaml) reached the run's config
        cfg = OmegaConf.load(d / "config.yaml")
        assert cfg.regularizer.maem.sigma == float(sampled["regularizer.maem.sigma"])
        assert 1e-5 <= cfg.regularizer.maem.sigma <= 1e-1
        assert cfg.regularizer.maem.buffer_size == int(sampled["regularizer.maem.buffer_size"])
        assert cfg.regularizer.maem.buffer_size in (256, 512, 1024, 2048, 4096)
        params.append({"regularizer.maem.sigma": cfg.regularizer.maem.sigma,
                       "regularizer.maem.buffer_size": cfg.regularizer.maem.buffer_size})
    assert any(math.isfinite(v) for v in finals), finals  # else the study cannot tell the trials apart
    assert len({p["regularizer.maem.sigma"] for p in params}) == 4  # Optuna proposed, not repeated
    result = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    # each trial's value is its run's final reverse KL: the best is the lowest final, with that run's parameters
    assert result["best_value"] == min(finals)
    assert result["best_params"] in [p for p, v in zip(params, finals, strict=True) if v == min(finals)]
