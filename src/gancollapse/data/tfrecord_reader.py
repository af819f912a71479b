"""Reading TFRecord sets through DareBlopy: seeded shuffled batches, DDP shards, the C++ CRC check.

DareBlopy's ``ParsedRecordYielderRandomized`` reads with a shuffle buffer and a per-epoch seed (ALAE: Pidhorskyi,
Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020, github.com/podgorskiy/ALAE, ``dataloader.py``).
A bad file makes the DareBlopy C++ reader fail hard — a record of the wrong size aborts the whole process (ALAE
issues #15, #34, #67, #75) — so check the files in Python first (:func:`~.tfrecord_validate.validate_split`).
This is the only module of the data layer that imports DareBlopy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dareblopy as db
import torch
from torch import Tensor

from gancollapse.data.tfrecord_format import TFRecordError
from gancollapse.data.tfrecord_meta import round_robin_counts


def check_data_crcs(path: str | Path) -> int:
    """Every record's data CRC, checked by DareBlopy's C++ reader (fast; it raises rather than aborts on a bad
    CRC). Returns the record count; raises TFRecordError naming the file. Check the framing first
    (:func:`~.tfrecord_format.verify_tfrecord`): that is what keeps a truncated file away from the C++ reader."""
    reader = db.RecordYielderBasic([str(path)])
    count = 0
    try:
        while True:
            count += len(reader.next_n(4096))
    except StopIteration:
        return count
    except RuntimeError as err:
        raise TFRecordError(f"{path}: {err}") from err


def parsed_yielder(files: list[str], channels: int, resolution: int, buffer_size: int, seed: int, epoch: int,
                   with_labels: bool):
    """DareBlopy's shuffled reader of ``data`` (and ``label``): files in a seeded order, records through a
    ``buffer_size`` shuffle buffer; the order is a function of (files, buffer_size, seed, epoch) only.
    Validate the files first (:func:`~.tfrecord_validate.validate_split`): a record of another shape aborts the process."""
    features = {"data": db.FixedLenFeature([channels, resolution, resolution], db.uint8)}
    if with_labels:
        features["label"] = db.FixedLenFeature([1], db.int64)
    parser = db.RecordParser(features, True)
    return db.ParsedRecordYielderRandomized(parser, files, buffer_size, seed, epoch)


def next_records(yielder, n: int):
    """DareBlopy's ``next_n``, with its CRC/EOF RuntimeErrors (which name the file) as TFRecordError."""
    try:
        return yielder.next_n(n)
    except RuntimeError as err:
        raise TFRecordError(str(err)) from err


class TFRecordBatches:
    """One epoch of shuffled (uint8 images, labels) batches from DareBlopy, ``len`` = count // batch."""

    def __init__(self, files: list[str], count: int, channels: int, resolution: int, batch_size: int,
                 buffer_size: int = 10_000, seed: int = 0, with_labels: bool = True) -> None:
        self.files, self.count, self.channels, self.resolution = files, count, channels, resolution
        self.batch_size, self.buffer_size, self.seed, self.with_labels = batch_size, buffer_size, seed, with_labels
        self.epoch = 0

    def __len__(self) -> int:
        return self.count // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        y = parsed_yielder(self.files, self.channels, self.resolution, self.buffer_size, self.seed, self.epoch, self.with_labels)
        self.epoch += 1
        for _ in range(len(self)):
            out = next_records(y, self.batch_size)
            images = torch.from_numpy(out[0])
            labels = torch.from_numpy(out[1]).long().flatten() if self.with_labels else torch.zeros(images.shape[0], dtype=torch.long)
            yield images, labels


def shard_files(files: list[str], count: int, rank: int, world: int, seed: int) -> tuple[list[str], int, int]:
    """Files, record count and shuffle seed for one DDP rank. With parts divisible by the world size each rank
    reads its own parts (ALAE's rule; record i is in part i mod parts); otherwise every rank reads all parts
    with its own shuffle seed and an equal share of the epoch."""
    if world <= 1:
        return files, count, seed
    parts = len(files)
    if parts % world == 0:
        mine = list(range(rank, parts, world))
        per_part = round_robin_counts(count, parts)
        n = sum(per_part[p] for p in mine)
        return [files[p] for p in mine], n, seed
    return files, count // world, seed + 7919 * rank
