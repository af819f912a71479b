"""Progressive TFRecord data: write → read at every lod, validation before DareBlopy, held-out split, DDP shards,
seeded order and mid-epoch resume (plain and through Lightning checkpoints), the embedded digits set."""

from __future__ import annotations

import json
import shutil
import struct

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gancollapse.data.progressive import ProgressiveTFRecordDataModule, shard_plan, write_digits_tfrecords
from gancollapse.data.tfrecord_format import TFRecordError, decode_example, iter_records
from gancollapse.data.tfrecord_meta import level_path, meta_path
from gancollapse.data.tfrecord_writer import downsample_uint8, split_indices, write_tfrecords
from tests.conftest import load_script, random_images

N, TEST, PARTS = 48, 8, 4  # 40 training images, 10 per part


def _source() -> tuple[torch.Tensor, torch.Tensor]:
    return random_images(N, 3, 16), torch.arange(N) * 3 + 1


@pytest.fixture(scope="module")
def tfr(tmp_path_factory):
    """A 3-channel 16² set (levels 16, 8, 4: lods 0–2), 4 parts, 8 images held out."""
    out = tmp_path_factory.mktemp("tfr")
    images, labels = _source()
    write_tfrecords([(images[:30], labels[:30]), (images[30:], labels[30:])], out, "t", min_resolution=4, parts=PARTS,
                    test_indices=split_indices(N, TEST, seed=5), split_seed=5)
    return out


def _dm(path, **kw) -> ProgressiveTFRecordDataModule:
    return ProgressiveTFRecordDataModule(path=str(path), tfrecord_name="t", **kw)


def _labels(batches) -> list[int]:
    return torch.cat([b[1] for b in batches]).tolist()


def test_round_trip_at_every_lod_from_metadata(tfr):
    images, labels = _source()
    held = set(split_indices(N, TEST, seed=5).tolist())
    train = [i for i in range(N) if i not in held]
    dm = _dm(tfr, batch_size=5)
    dm.setup()
    assert (dm.channels, dm.resolutions, dm.max_lod, len(dm), dm.img_size) == (3, [4, 8, 16], 2, 40, 16)
    ref = {16: images, 8: downsample_uint8(images), 4: downsample_uint8(downsample_uint8(images))}
    for lod, res in enumerate([4, 8, 16]):
        dm.set_lod(lod, 5)
        batches = list(dm.train_dataloader())
        assert len(batches) == 8 and all(b[0].shape == (5, 3, res, res) and b[0].dtype == torch.uint8 for b in batches)
        got, got_labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        assert sorted(got_labels.tolist()) == labels[train].tolist()  # every training image once, none held out
        src = (got_labels - 1) // 3
        assert torch.equal(got, ref[res][src]), res  # lossless, and the level is 2×2-box-filtered from the one above
        x, _ = dm.on_after_batch_transfer(batches[0], 0)
        assert x.dtype == torch.float32 and torch.equal(x, batches[0][0].float() / 127.5 - 1)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.95 and x.max() > 0.95  # the full 16 px range
    test_images, test_labels = dm.held_out_uint8()
    assert sorted(((test_labels - 1) // 3).tolist()) == sorted(held)
    assert torch.equal(test_images, images[(test_labels - 1) // 3])
    assert dm.held_out_uint8(lod=0)[0].shape == (TEST, 3, 4, 4)
    real = dm.sample_uint8(12, seed=3)[0]
    assert real.shape == (12, 3, 16, 16) and torch.equal(real, dm.sample_uint8(12, seed=3)[0])


def test_split_metadata_and_part_counts(tfr):
    meta = json.loads(meta_path(tfr, "t").read_text())
    assert (meta["count"], meta["test_count"], meta["split_seed"], meta["channels"]) == (40, TEST, 5, 3)
    assert meta["part_counts"] == [10] * PARTS and meta["test_part_counts"] == [TEST]
    assert meta["resolutions"] == [16, 8, 4]
    assert len(list(iter_records(level_path(tfr, "t", 4, 2)))) == 10
    assert len(list(iter_records(level_path(tfr, "t-test", 16, 0)))) == TEST


def _corrupt(path, case: str) -> str:
    """Damage a copy of the set; returns the text the error must contain."""
    f = level_path(path, "t", 8, 1)
    meta = json.loads(meta_path(path, "t").read_text())
    if case == "truncated":
        f.write_bytes(f.read_bytes()[:-10])
        return f.name
    if case in ("payload_byte", "header_byte"):
        raw = bytearray(f.read_bytes())
        raw[150 if case == "payload_byte" else 3] ^= 0xFF  # inside record 0's pixels, or its length field
        f.write_bytes(bytes(raw))
        return f.name
    if case == "missing_part":
        f.unlink()
        return f.name
    if case == "missing_test_part":
        level_path(path, "t-test", 16, 0).unlink()
        return "t-test-r04.tfrecords.000"
    if case == "missing_level":
        meta["resolutions"] = [16, 8]
    elif case == "count_mismatch":
        meta["part_counts"] = [11, 9, 10, 10]
    elif case == "not_power_of_two":
        meta["resolutions"] = [16, 12, 4]
    elif case == "wrong_resolution":  # ALAE's prepare_celeba_hq bug: another level's records in this slot
        shutil.copy(level_path(path, "t", 16, 1), f)
        return f.name
    meta_path(path, "t").write_text(json.dumps(meta))
    return {"missing_level": "r02", "count_mismatch": "t-r02.tfrecords.000", "not_power_of_two": "'resolutions'"}[case]


@pytest.mark.parametrize("case", ["truncated", "payload_byte", "header_byte", "missing_part", "missing_test_part",
                                  "missing_level", "count_mismatch", "not_power_of_two", "wrong_resolution"])
def test_bad_files_fail_at_setup_naming_the_file_and_the_fix(tfr, tmp_path, case):
    path = tmp_path / "copy"
    shutil.copytree(tfr, path)
    dm = _dm(path, batch_size=4, lod=2)  # all levels are checked, not only the starting one
    needle = _corrupt(path, case)
    with pytest.raises(ValueError, match="prepare_tfrecords.py") as err:
        dm.setup()
    assert needle in str(err.value)
    if case not in ("not_power_of_two",):
        assert isinstance(err.value, TFRecordError)


def test_missing_set_says_how_to_write_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_tfrecords.py"):
        _dm(tmp_path).setup()


def test_shard_plan_disjoint_and_equal_length():
    assert shard_plan([3, 3, 2, 2], 1, 2) == ([1, 3], 5, 1)
    assert shard_plan([3, 3, 3, 2], 0, 2) == ([0, 2], 5, 1)  # cut to rank 1's 5 records so ranks step together
    assert shard_plan([4, 4, 4], 1, 2) == ([0, 1, 2], 6, 2)  # 3 parts over 2 ranks: every other record of one stream
    with pytest.raises(ValueError, match="rank"):
        shard_plan([1, 1], 2, 2)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_read_disjoint_records_covering_the_set(tfr, world):
    per_rank = [set(_labels(_dm(tfr, batch_size=1, lod=0).loader(rank, world))) for rank in range(world)]  # a process each
    sizes = [len(s) for s in per_rank]
    assert len(set(sizes)) == 1  # same number of steps on every rank
    union = set().union(*per_rank)
    assert sum(sizes) == len(union)  # pairwise disjoint
    train = set(_labels(_dm(tfr, batch_size=1).loader(0, 1)))
    assert union <= train and len(union) == (40 if 40 % world == 0 else world * (40 // world))


def test_order_is_a_function_of_seed_and_epoch(tfr):
    def epochs(seed, n=2):
        dm = _dm(tfr, batch_size=4, lod=1, seed=seed)
        return [_labels(dm.train_dataloader()) for _ in range(n)]

    a, b = epochs(0), epochs(0)
    assert a == b and a[0] != a[1] and epochs(1)[0] != a[0]
    assert sorted(a[0]) == sorted(a[1])


def test_resume_mid_epoch_yields_exactly_the_remaining_batches(tfr):
    ref = _dm(tfr, batch_size=4, lod=1, flip=True)
    full = [list(ref.train_dataloader()) for _ in range(2)]
    first = _dm(tfr, batch_size=4, lod=1, flip=True)
    it = iter(first.train_dataloader())
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 3, "lod": 1, "batch_size": 4}
    resumed = _dm(tfr, batch_size=64, lod=0, flip=True)  # the checkpoint's lod and batch win over the config's
    resumed.load_state_dict(state)
    rest = list(resumed.train_dataloader())
    assert len(rest) == len(full[0]) - 3
    for got, want in zip(rest, full[0][3:], strict=True):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # same images, same flips
    assert resumed.state_dict() == {"epoch": 1, "batches": 0, "lod": 1, "batch_size": 4}
    assert _labels(resumed.train_dataloader()) == _labels(full[1])
    # an interrupted pass is over: the next loader starts the next epoch, not the rest of this one
    again = _dm(tfr, batch_size=4, lod=1, flip=True)
    next(iter(again.train_dataloader()))
    assert _labels(again.train_dataloader()) == _labels(full[1])


def test_set_lod_is_refused_inside_a_resumed_epoch(tfr):
    dm = _dm(tfr, batch_size=4)
    dm.load_state_dict({"epoch": 2, "batches": 3, "lod": 1, "batch_size": 4})
    dm.set_lod(1, 4)  # no change: fine
    with pytest.raises(ValueError, match="between epochs"):
        dm.set_lod(2, 4)
    with pytest.raises(ValueError, match=r"lod must be in \[0, 2\]"):
        _dm(tfr).set_lod(3)


class _Recorder(L.LightningModule):
    """Records every training batch; changes lod from epoch 1 on through the datamodule's schedule."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, tuple[int, ...], list[int]]] = []

    def setup(self, stage: str) -> None:
        self.trainer.datamodule.lod_schedule = lambda epoch: (0, 4) if epoch == 0 else (2, 5)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((self.current_epoch, tuple(x.shape), y.tolist()))
        return (self.w - x.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(root, **kw) -> L.Trainer:
    kw.setdefault("enable_checkpointing", "callbacks" in kw)
    return L.Trainer(default_root_dir=root, accelerator="cpu", logger=False,
                     enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1, **kw)


@pytest.mark.filterwarnings("ignore:Be aware that when using")
def test_lightning_resume_from_a_mid_epoch_checkpoint(tfr, tmp_path):
    ref = _Recorder()
    _trainer(tmp_path, max_epochs=2).fit(ref, datamodule=_dm(tfr, batch_size=4))
    assert [s[1] for s in ref.seen] == [(4, 3, 4, 4)] * 10 + [(5, 3, 16, 16)] * 8  # lod 0, then lod 2
    first = _Recorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    _trainer(tmp_path, max_steps=6, callbacks=[ckpt]).fit(first, datamodule=_dm(tfr, batch_size=4))
    resumed = _Recorder()  # from the checkpoint written during training after batch 4 of epoch 0
    _trainer(tmp_path, max_epochs=2).fit(resumed, datamodule=_dm(tfr, batch_size=64), ckpt_path=tmp_path / "ckpt/step=4.ckpt")
    assert first.seen[:4] + resumed.seen == ref.seen
    after_stop = _Recorder()  # a checkpoint saved once max_steps stopped fit: Lightning starts the next epoch
    stopped = _trainer(tmp_path, max_steps=4)
    stopped.fit(_Recorder(), datamodule=_dm(tfr, batch_size=4))
    stopped.save_checkpoint(tmp_path / "stopped.ckpt")
    _trainer(tmp_path, max_epochs=2).fit(after_stop, datamodule=_dm(tfr, batch_size=4), ckpt_path=tmp_path / "stopped.ckpt")
    assert after_stop.seen == ref.seen[10:]  # the data follows the trainer's epoch (and its lod)


def test_prepare_script_writes_a_seeded_disjoint_held_out_split(tmp_path):
    script = load_script("prepare_tfrecords")

    def prepare(out, seed):
        return script.main(["--dataset", "digits", "--out", str(out), "--name", "d", "--size", "8", "--min-resolution", "4",
                            "--parts", "2", "--test-count", "97", "--split-seed", str(seed), "dataset.channels=1"])

    def indices(out, prefix, parts):
        return [decode_example(r)["index"][0] for p in range(parts) for r in iter_records(level_path(out, prefix, 8, p))]

    meta = prepare(tmp_path / "a", 3)
    assert (meta["count"], meta["test_count"], meta["split_seed"], meta["part_counts"]) == (1700, 97, 3, [850, 850])
    train, test = indices(tmp_path / "a", "d", 2), indices(tmp_path / "a", "d-test", 1)
    assert len(train) == 1700 and len(test) == 97 and not set(train) & set(test)
    assert set(train) | set(test) == set(range(1797))
    assert test == split_indices(1797, 97, 3).tolist()
    prepare(tmp_path / "b", 3)
    for f in sorted((tmp_path / "a").glob("d*.tfrecords.*")):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name  # deterministic
    prepare(tmp_path / "a", 4)  # rewriting in place with another seed: another held-out set
    assert set(indices(tmp_path / "a", "d-test", 1)) != set(test)


def test_embedded_digits_set_is_written_once_and_rewritten_when_damaged(tmp_path):
    prepare = {"dataset": "digits", "size": 32, "test_count": 200, "seed": 0}
    dm = ProgressiveTFRecordDataModule(path=str(tmp_path), tfrecord_name="digits", prepare=prepare, batch_size=64)
    assert (dm.channels, dm.resolutions, len(dm), dm.num_classes) == (1, [4, 8, 16, 32], 1597, 10)  # written on demand
    dm.setup()
    top = level_path(tmp_path, "digits", 32, 0)
    stamp = top.stat().st_mtime_ns
    assert write_digits_tfrecords(tmp_path, size=32, test_count=200, seed=0)["count"] == 1597
    assert top.stat().st_mtime_ns == stamp  # valid and unchanged: not rewritten
    raw = bytearray(top.read_bytes())
    raw[100] ^= 0xFF
    top.write_bytes(bytes(raw))
    write_digits_tfrecords(tmp_path, size=32, test_count=200, seed=0)
    assert top.read_bytes() != bytes(raw)
    dm = ProgressiveTFRecordDataModule(path=str(tmp_path), tfrecord_name="digits", batch_size=64, lod=3)
    dm.setup()
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (64, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and set(y.tolist()) <= set(range(10))


def test_header_damage_is_caught_by_the_framing_walk(tfr, tmp_path):
    shutil.copytree(tfr, tmp_path / "c")
    f = level_path(tmp_path / "c", "t", 4, 0)
    raw = bytearray(f.read_bytes())
    raw[0:8] = struct.pack("<Q", 10**9)
    f.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="length CRC"):
        _dm(tmp_path / "c", verify="framing").setup()
