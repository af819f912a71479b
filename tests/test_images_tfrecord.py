"""TFRecords: lossless write → DareBlopy read, per-resolution levels, corrupt/truncated files named, training."""

from __future__ import annotations

import struct

import pytest
import torch

from gancollapse.data.tfrecord import TFRecordDataModule
from gancollapse.data.tfrecord_format import (
    TFRecordError,
    _crc32c_python,
    decode_example,
    encode_example,
    masked_crc,
    verify_tfrecord,
)
from gancollapse.data.tfrecord_meta import level_path, meta_path
from gancollapse.data.tfrecord_writer import downsample_uint8, write_tfrecords
from gancollapse.train import run
from tests.conftest import TINY_DCGAN, compose_cfg, load_script, random_images


def _write(tmp_path, n=20, parts=2):
    imgs = random_images(n, 3, 8)
    labels = torch.arange(n) * 7
    meta = write_tfrecords([(imgs[:13], labels[:13]), (imgs[13:], labels[13:])], tmp_path, "t", min_resolution=2, parts=parts)
    return imgs, labels, meta


def test_crc32c_known_vectors():
    assert _crc32c_python(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert _crc32c_python(b"") == 0
    assert masked_crc(b"") == 0xA282EAD8


def test_write_read_round_trip_is_lossless_at_every_level(tmp_path):
    imgs, labels, meta = _write(tmp_path)
    assert meta["resolutions"] == [8, 4, 2] and meta["count"] == 20
    expected = {8: imgs, 4: downsample_uint8(imgs), 2: downsample_uint8(downsample_uint8(imgs))}
    for res, ref in expected.items():
        dm = TFRecordDataModule(path=str(tmp_path), tfrecord_name="t", img_size=res, batch_size=4, buffer_size=50)
        got, got_labels = dm.read_all()
        order = torch.argsort(got_labels)
        assert torch.equal(got_labels[order], labels)
        assert torch.equal(got[order], ref), res
    # an epoch of shuffled batches covers every record once
    dm = TFRecordDataModule(path=str(tmp_path), tfrecord_name="t", img_size=8, batch_size=5, buffer_size=50)
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(b[0].shape == (5, 3, 8, 8) for b in batches)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == labels.tolist()
    x, _ = dm.on_after_batch_transfer(batches[0], 0)
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1


def test_example_decodes_to_what_was_encoded():
    img = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3)
    got = decode_example(encode_example(img, label=300, index=123456))
    assert got == {"shape": [2, 3, 3], "data": img.numpy().tobytes(), "label": [300], "index": [123456]}


def test_failed_write_keeps_the_previous_set(tmp_path):
    _, _, meta = _write(tmp_path)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}

    def batches():
        yield torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_tfrecords(batches(), tmp_path, "t", min_resolution=2, parts=2)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before  # no temporary files left either
    assert meta_path(tmp_path, "t").is_file() and meta["count"] == 20


def test_downsample_is_a_rounded_box_filter():
    x = torch.tensor([[[[0, 1], [2, 4]]]], dtype=torch.uint8)
    assert downsample_uint8(x).item() == 2  # mean 1.75 → 2


def test_truncated_file_is_named(tmp_path):
    _write(tmp_path)
    f = level_path(tmp_path, "t", 8, 1)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(TFRecordError, match=f.name):
        verify_tfrecord(f)
    with pytest.raises(TFRecordError, match=f.name):
        TFRecordDataModule(path=str(tmp_path), tfrecord_name="t", img_size=8, batch_size=4).setup()


def test_corrupt_record_is_named_by_the_reader(tmp_path):
    _write(tmp_path)
    f = level_path(tmp_path, "t", 8, 0)
    raw = bytearray(f.read_bytes())
    raw[60] ^= 0xFF  # inside the first record's payload: framing intact, data CRC wrong
    f.write_bytes(bytes(raw))
    assert verify_tfrecord(f) == 10
    with pytest.raises(TFRecordError, match="data CRC"):
        verify_tfrecord(f, check_data_crc=True)
    dm = TFRecordDataModule(path=str(tmp_path), tfrecord_name="t", img_size=8, batch_size=4)
    with pytest.raises(TFRecordError, match=f.name):
        dm.read_all()
    raw[0:8] = struct.pack("<Q", 10**9)  # absurd length: header CRC catches it
    f.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="length CRC"):
        verify_tfrecord(f)


def test_missing_set_and_wrong_resolution_say_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare_tfrecords.py"):
        TFRecordDataModule(path=str(tmp_path), tfrecord_name="none").setup()
    _write(tmp_path)
    with pytest.raises(ValueError, match="dataset.img_size=16"):
        TFRecordDataModule(path=str(tmp_path), tfrecord_name="t", img_size=16).setup()


def test_prepare_script_and_training_from_tfrecords(tmp_path):
    out = tmp_path / "tfr"
    meta = load_script("prepare_tfrecords").main(["--dataset", "digits", "--out", str(out), "--name", "digits", "--size", "32",
                        "--min-resolution", "16", "dataset.channels=1"])
    assert meta["count"] == 1797 and meta["resolutions"] == [32, 16]
    assert (out / "digits-r05.tfrecords.000").is_file() and (out / "digits-r04.tfrecords.000").is_file()
    cfg = compose_cfg(["dataset=tfrecord", f"dataset.path={out}", "dataset.tfrecord_name=digits", "dataset.channels=1",
                       "dataset.batch_size=32", *TINY_DCGAN, "z_dim=8", "max_g_steps=6", "evaluator.feature=tiny", "evaluator.every_n_steps=6",
                       "evaluator.n_samples=64", "evaluator.n_real=200", "evaluator.metrics.prdc=null",
                       "evaluator.metrics.kid=null", f"evaluator.cache_dir={tmp_path}", "logger=none"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["g_steps"] == 6 and summary["fid"] > 0


def test_ddp_sharding_splits_parts_or_seeds():
    from gancollapse.data.tfrecord import shard_files

    files = ["p0", "p1", "p2", "p3"]
    assert shard_files(files, 10, 0, 1, 5) == (files, 10, 5)
    assert shard_files(files, 10, 1, 2, 5) == (["p1", "p3"], 3 + 2, 5)  # parts hold 3, 3, 2, 2 records
    assert shard_files(files, 10, 0, 2, 5) == (["p0", "p2"], 3 + 2, 5)
    f, n, seed = shard_files(files, 10, 2, 3, 5)
    assert f == files and n == 3 and seed != 5
