"""logger=wandb offline: files under the run dir, the config as hyperparameters, media, one W&B run per job.

A multirun's shared group is checked on a real sweep in test_scaleout_launchers.py."""

import json
import struct
from pathlib import Path

import pytest
from wandb.proto.wandb_internal_pb2 import Record

from gancollapse.loggers import wandb_group, wandb_run_id
from gancollapse.train import run

from .conftest import compose_cfg

BLOCK, HEADER = 32768, 7  # W&B's transaction log: LevelDB log blocks after a 7-byte ":W&B" header


def wandb_records(path: Path) -> list[Record]:
    """The records of an offline run's ``run-<id>.wandb`` file (what ``wandb sync`` would upload)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, out, buf = HEADER, [], b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too short for a chunk header: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 1:  # full record
            out.append(chunk)
        elif kind == 2:  # first chunk
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            out.append(buf + chunk)
    return [Record.FromString(b) for b in out]


def offline_run(run_dir: Path) -> dict:
    """The single offline W&B run below ``run_dir``: its id, group, name, config and logged media files."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    records = wandb_records(next(runs[0].glob("run-*.wandb")))
    run_rec = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    media_keys = {"/".join(i.nested_key) or i.key for r in records if r.WhichOneof("record_type") == "history"
                  for i in r.history.item}
    return {"id": run_rec.run_id, "group": run_rec.run_group, "name": run_rec.display_name,
            "config": {i.key: i.value_json for i in run_rec.config.update}, "history_keys": media_keys,
            "media": sorted(p.relative_to(runs[0] / "files").as_posix() for p in (runs[0] / "files" / "media").rglob("*.*"))}


@pytest.fixture
def offline(monkeypatch):
    for var in ("WANDB_PROJECT", "WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any upload attempt would fail


def test_two_runs_in_one_process_get_their_own_offline_runs_with_config_and_media(tmp_path, offline):
    """Jobs of a basic or optuna multirun share a process: each must get its own W&B run."""
    for seed in (0, 1):
        cfg = compose_cfg(["logger=wandb", "max_g_steps=20", f"seed={seed}", "evaluator.every_n_steps=10",
                           "evaluator.n_samples=500", "model.generator.hidden=16", "model.discriminator.hidden=16"])
        run(cfg, tmp_path / str(seed))
    first, second = offline_run(tmp_path / "0"), offline_run(tmp_path / "1")
    assert first["id"] == wandb_run_id(tmp_path / "0") != second["id"] == wandb_run_id(tmp_path / "1")
    assert first["group"] == "" and first["name"] == ""  # not a multirun: no group, W&B names it
    # the resolved config is the run's W&B config (hyperparameters), each run its own
    assert (first["config"]["seed"], second["config"]["seed"]) == ("0", "1")
    assert json.loads(first["config"]["model"])["generator"]["hidden"] == 16
    for r in (first, second):
        assert {"media/training", "media/final_scatter"} <= {k.split("/_type")[0] for k in r["history_keys"]}
        assert any(m.startswith("media/videos/") and m.endswith(".gif") for m in r["media"]), r["media"]
        assert any(m.startswith("media/images/") and m.endswith(".png") for m in r["media"]), r["media"]
    assert (tmp_path / "0" / "metrics.csv").is_file()  # CSV beside W&B


def test_wandb_group_and_run_id():
    job = {"multirun": True, "name": "train", "sweep_dir": "multirun/2026-12-01/10-00-00"}
    assert wandb_group(job) == "train/multirun/2026-12-01/10-00-00"
    assert wandb_group({**job, "multirun": False}) is None and wandb_group({}) is None
    a, b = wandb_run_id("runs/a"), wandb_run_id("runs/b")
    assert a == wandb_run_id(Path("runs/a").resolve()) != b  # fixed by the directory: a requeued job continues
    assert len(a) == 16 and a.isalnum() and a.islower()
