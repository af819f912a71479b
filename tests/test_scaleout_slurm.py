"""hydra/launcher=slurm and trainer=slurm without a cluster: the sbatch script submitit would submit, Lightning
reading the layout from SLURM's environment, and a preempted job that requeues itself and resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from gancollapse.paths import CONF_DIR

from .conftest import REPO, compose_cfg, free_port
from .test_scaleout_launchers import TINY_SWEEP

# One task of job 42 on this machine, as srun would describe it to the process.
SLURM_ENV = {"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_NNODES": "1", "SLURM_NODELIST": "127.0.0.1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0"}


def _fake_tool(bin_dir, name, body):
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_slurm_launcher_writes_the_sbatch_script_from_our_keys(tmp_path, monkeypatch):
    _fake_tool(tmp_path / "bin", "srun", "exit 0\n")  # submitit's SLURM executor insists on finding srun
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    overrides = ["hydra/launcher=slurm", "trainer=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=proj7",
                 "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
                 "hydra.launcher.timeout_min=90", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    # the executor the launcher builds, with its parameters renamed the way its launch() renames them
    executor = submitit.AutoExecutor(folder=tmp_path / ".submitit", cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for flag in ("--partition=gpu", "--account=proj7", "--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4",
                 "--time=90", "--cpus-per-task=8", "--signal=USR1@120", "--requeue"):
        assert f"#SBATCH {flag}\n" in script, (flag, script)
    assert "USR2" not in script  # Lightning's requeue signal, not submitit's
    assert "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in script
    assert "\nsrun " in script  # one process per task: Lightning's DDP ranks


def test_trainer_slurm_takes_nodes_and_devices_from_slurm(monkeypatch):
    env = {**SLURM_ENV, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2",
           "SLURM_NODELIST": "gpu[3-4]", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning writes them from SLURM's; undo that after the test
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    # The Trainer sets the process-wide rank_zero_only.rank to its rank (5): later tests in this worker would
    # log nothing (no metrics.csv, no W&B run) unless it is put back.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    trainer = instantiate(compose_cfg(["trainer=slurm", "trainer.accelerator=cpu"]).trainer)
    cluster = trainer._accelerator_connector.cluster_environment
    assert isinstance(cluster, SLURMEnvironment) and cluster.auto_requeue
    assert cluster.requeue_signal == signal.SIGUSR1
    assert (trainer.num_nodes, trainer.num_devices) == (2, 4)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (5, 1, 1, 8)
    assert cluster.main_address == "gpu3"


def test_preempted_slurm_job_requeues_itself_and_the_requeued_job_resumes(tmp_path):
    """SIGUSR1 (sbatch --signal=USR1@120) → Lightning writes hpc_ckpt_1.ckpt and runs `scontrol requeue 42`;
    SLURM then stops the job with SIGTERM (here the stand-in scontrol does) → last.ckpt at the stop, exit; the
    requeued job is the same command in the same run dir and continues from there."""
    _fake_tool(tmp_path / "bin", "scontrol", 'echo "$@" >> "$SCONTROL_LOG"\nkill -TERM $PPID\n')
    run_dir, log = tmp_path / "run", tmp_path / "scontrol.log"
    # MASTER_PORT: Lightning would derive it from the job id, and a port another test holds would stall DDP's set-up
    env = {**os.environ, **SLURM_ENV, "OMP_NUM_THREADS": "1", "SCONTROL_LOG": str(log),
           "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    tiny = [o for o in TINY_SWEEP if not o.startswith(("evaluator.", "max_g_steps="))]
    base = [sys.executable, "-m", "gancollapse.train", "trainer=slurm", "trainer.accelerator=cpu", *tiny,
            "+trainer.enable_progress_bar=false", "evaluator=none", "ckpt_every_n_steps=40", f"hydra.run.dir={run_dir}"]
    output = tmp_path / "first_attempt.log"  # a file, not a pipe nobody reads while the job trains
    with open(output, "w") as out_file:
        proc = subprocess.Popen([*base, "max_g_steps=100000"], cwd=REPO, env=env, stdout=out_file,
                                stderr=subprocess.STDOUT, text=True)
    periodic = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not periodic.is_file() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=60)
    out = output.read_text()
    assert proc.returncode == 143, out[-3000:]
    assert log.read_text().split() == ["requeue", "42"], out[-3000:]
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "interrupted: SIGTERM" and stopped["g_steps"] >= 20, stopped
    done = stopped["g_steps"]
    res = subprocess.run([*base, f"max_g_steps={done + 20}"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Resuming from {periodic}" in res.stdout + res.stderr
    final = json.loads((run_dir / "summary.json").read_text())
    assert final["status"] == "finished" and final["g_steps"] == done + 20


@pytest.mark.parametrize("launcher", ["slurm", "submitit_local", "submitit_slurm", "joblib"])
def test_launcher_choices_compose(launcher):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
