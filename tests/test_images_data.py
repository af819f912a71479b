"""Image datamodules: digits offline, conversions, Stacked MNIST labels, device batching, folders, errors."""

from __future__ import annotations

import importlib

import pytest
import torch
from PIL import Image

from gancollapse.data.convert import match_channels, pad_or_resize, random_hflip, to_float, to_uint8
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.image_folder import FolderDataModule
from gancollapse.data.in_memory import DeviceBatches, UInt8Images
from gancollapse.data.mnist import MNISTDataModule
from gancollapse.data.stacked import StackedImages


def test_digits_module_yields_scaled_images_and_labels():
    dm = DigitsDataModule(img_size=32, channels=3, batch_size=50)
    dm.setup()
    assert len(dm.data) == 1797 and dm.data.images.shape == (1797, 3, 32, 32)
    batch = next(iter(dm.train_dataloader()))
    x, y = dm.on_after_batch_transfer(batch, 0)
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1  # background is exactly -1
    assert y.shape == (50,) and set(y.tolist()) <= set(range(10))
    assert len(dm.train_dataloader()) == 1797 // 50


def test_uint8_float_round_trip_is_lossless():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(to_uint8(to_float(u)), u)
    assert to_float(u).min() == -1 and to_float(u).max() == 1


def test_pad_resize_and_channels():
    x = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    padded = pad_or_resize(x, 32)
    assert padded.shape == (2, 1, 32, 32) and padded[0, 0, 0, 0] == 0 and padded[0, 0, 2, 2] == 200
    assert pad_or_resize(x, 64).shape == (2, 1, 64, 64)
    assert match_channels(x, 3).shape == (2, 3, 28, 28)
    with pytest.raises(ValueError, match="dataset.channels"):
        match_channels(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), 3)


def test_random_hflip_flips_about_half():
    x = torch.arange(4.0).repeat(1000, 1, 1, 1)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.45 < flipped < 0.55 and torch.equal(out[:, 0, 0].sort(dim=1).values, x[:, 0, 0])


def test_stacked_images_labels_are_digit_triples():
    digits = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.tensor([7, 1, 2, 3, 4, 5, 6, 0, 8, 9])
    triples = torch.tensor([[0, 1, 2], [9, 8, 7]])
    ds = StackedImages(digits, labels, triples)
    x, y = ds.gather(torch.tensor([0, 1]))
    assert x.shape == (2, 3, 2, 2)
    assert x[0, :, 0, 0].tolist() == [0, 1, 2] and y.tolist() == [712, 980]


def test_device_batches_cover_each_epoch_once_and_shard_by_rank():
    data = UInt8Images(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    loader = DeviceBatches(data, batch_size=3, drop_last=True)
    epoch = [y for _, y in loader]
    assert len(epoch) == len(loader) == 3 and len(torch.cat(epoch).unique()) == 9
    assert not torch.equal(torch.cat(epoch), torch.cat([y for _, y in loader]))  # reshuffled
    r0 = torch.cat([y for _, y in DeviceBatches(data, 5, rank=0, world_size=2, drop_last=False)])
    r1 = torch.cat([y for _, y in DeviceBatches(data, 5, rank=1, world_size=2, drop_last=False)])
    assert sorted(torch.cat([r0, r1]).tolist()) == list(range(10))


def test_on_device_flag_returns_device_batches():
    dm = DigitsDataModule(img_size=8, batch_size=100, on_device=True)
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceBatches) and len(loader) == 17


def test_missing_mnist_names_the_fix(tmp_path):
    dm = MNISTDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset.download=true"):
        dm.setup()


def test_image_folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 12), (40 * i, 100, 200)).save(tmp_path / cls / f"{i}.png")
    dm = FolderDataModule(path=str(tmp_path), img_size=8, batch_size=2, num_workers=0, in_memory=True)
    dm.setup()
    assert dm.data.images.shape == (6, 3, 8, 8) and dm.num_classes == 2
    assert sorted(dm.data.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert dm.data.images[0, 2].float().mean().item() == pytest.approx(200, abs=1)
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        FolderDataModule(path=str(tmp_path / "missing")).setup()


def test_sample_is_seeded_and_cache_key_changes_with_resolution():
    a, b = DigitsDataModule(img_size=8), DigitsDataModule(img_size=16)
    assert torch.equal(a.sample(20, seed=3), a.sample(20, seed=3))
    assert a.cache_key(100, 0) != b.cache_key(100, 0) and a.cache_key(100, 0) != a.cache_key(200, 0)


# The public names of gancollapse.data.images and gancollapse.data.tfrecord before they were split by job: user
# code and saved configs may import any of them from there.
OLD_IMAGES_NAMES = (
    "DEFAULT_ROOT", "IMAGE_SUFFIXES", "MNIST5K_HELD_OUT_PER_CLASS", "MNIST5K_SPLIT_SEED", "CIFAR10DataModule",
    "CelebADataModule", "DeviceBatches", "DigitsDataModule", "FolderDataModule", "ImageDataModule", "MNIST5kDataModule",
    "MNISTDataModule", "PILImages", "StackedImages", "StackedMNISTDataModule", "UInt8Images", "match_channels",
    "materialise", "pad_or_resize", "random_hflip", "resize_uint8", "stack_triples", "stratified_split", "to_float",
    "to_uint8",
)
OLD_TFRECORD_NAMES = (
    "TFRecordBatches", "TFRecordDataModule", "TFRecordError", "check_data_crcs", "check_first_record", "check_meta",
    "crc32c", "decode_example", "downsample_uint8", "encode_example", "frame_record", "iter_records", "level_path",
    "masked_crc", "meta_path", "meta_resolver", "next_records", "parsed_yielder", "read_meta", "resolve_from_meta",
    "round_robin_counts", "shard_files", "split_counts", "split_indices", "split_name", "validate_split",
    "verify_tfrecord", "write_tfrecords",
)


@pytest.mark.parametrize("old,names,own", [("images", OLD_IMAGES_NAMES, ()),
                                           ("tfrecord", OLD_TFRECORD_NAMES, ("TFRecordDataModule",))])
def test_old_module_paths_still_export_every_name_from_its_new_home(old, names, own):
    """The old modules re-export what they held (``__all__`` too); the code lives in the new modules (only the
    datamodule of conf/dataset/tfrecord.yaml stays in data/tfrecord.py)."""
    module = importlib.import_module(f"gancollapse.data.{old}")
    assert sorted(module.__all__) == sorted(names)
    for name in names:
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None)
        if home is not None and not isinstance(obj, (str, int, tuple)):
            assert (home == module.__name__) == (name in own), f"{old}.{name} is defined in {home}"
            assert getattr(importlib.import_module(home), name) is obj
