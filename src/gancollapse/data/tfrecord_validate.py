"""Checking a TFRecord set before DareBlopy reads it: metadata keys, file framing, record counts, record shape.

DareBlopy's C++ reader aborts the whole process on a record of the wrong size (ALAE issues #15, #34, #67, #75),
so every file a run will read is checked in Python first (:func:`validate_split`): framing, record counts against
the metadata, the first record's shape, and (``full``) every data CRC; a problem raises
:class:`~.tfrecord_format.TFRecordError` naming the file and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from gancollapse.data.tfrecord_format import TFRecordError, decode_example, iter_records, verify_tfrecord
from gancollapse.data.tfrecord_meta import FIX_REWRITE, level_path, meta_path, split_counts, split_name
from gancollapse.data.tfrecord_reader import check_data_crcs


def _is_power_of_two(n: object) -> bool:
    return isinstance(n, int) and n >= 1 and not n & (n - 1)


def check_meta(meta: dict, where: Path) -> None:
    """Raise ValueError naming the bad key of a ``<name>-meta.json``."""
    for key in ("channels", "resolutions", "parts", "count"):
        if key not in meta:
            raise ValueError(f"{where}: key '{key}' missing; {FIX_REWRITE}")
    if not isinstance(meta["channels"], int) or meta["channels"] < 1:
        raise ValueError(f"{where}: 'channels' must be a positive integer, got {meta['channels']!r}; {FIX_REWRITE}")
    bad = [r for r in meta["resolutions"] if not _is_power_of_two(r)]
    if bad or not meta["resolutions"]:
        raise ValueError(f"{where}: 'resolutions' must be powers of two, got {meta['resolutions']} (bad: {bad}); {FIX_REWRITE}")
    for split in ("train", "test"):
        count, per_part = split_counts(meta, split)
        if sum(per_part) != count:
            key = "part_counts" if split == "train" else "test_part_counts"
            raise ValueError(f"{where}: '{key}' {per_part} sums to {sum(per_part)}, not the {split} count {count}; {FIX_REWRITE}")


def check_first_record(path: Path, channels: int, resolution: int) -> None:
    """The first record holds a ``channels``×``resolution``² uint8 image (DareBlopy aborts the process on a
    record of another size, e.g. ALAE's prepare_celeba_hq_tfrecords.py writing 1024² into the 256² slot)."""
    payload = next(iter_records(path), None)
    if payload is None:
        raise TFRecordError(f"{path}: empty file; {FIX_REWRITE}")
    try:
        features = decode_example(payload)
    except ValueError as err:
        raise TFRecordError(f"{path}: first record is not a tf.train.Example ({err}); {FIX_REWRITE}") from err
    data, shape = features.get("data"), features.get("shape")
    want = [channels, resolution, resolution]
    if not isinstance(data, bytes) or len(data) != channels * resolution * resolution or (shape is not None and shape != want):
        got = shape if shape is not None else f"{len(data) if isinstance(data, bytes) else 'no'} data bytes"
        raise TFRecordError(f"{path}: records are {got}, but this level needs shape {want}; {FIX_REWRITE}")


def validate_split(directory: str | Path, name: str, meta: dict, split: str, resolutions: Iterable[int],
                   full: bool = True) -> None:
    """Check every part of every requested level of a split before DareBlopy reads it: the file exists, its
    framing is intact, its record count matches the metadata, its first record has the level's shape and
    (``full``) every data CRC is right. Raises TFRecordError (a ValueError) naming the file and the fix."""
    directory = Path(directory)
    where = meta_path(directory, name)
    count, per_part = split_counts(meta, split)
    prefix = split_name(name, split)
    for res in resolutions:
        if res not in meta["resolutions"]:
            raise TFRecordError(f"{where}: level {res}px (r{int(math.log2(res)):02d}) was not written (written: "
                                f"{meta['resolutions']}); {FIX_REWRITE} with --size {max(max(meta['resolutions']), res)} "
                                f"--min-resolution {min(min(meta['resolutions']), res)}")
        for part, expected in enumerate(per_part):
            f = level_path(directory, prefix, res, part)
            if not f.is_file():
                raise TFRecordError(f"{f}: missing (part {part} of {len(per_part)} of the {res}px {split} level); {FIX_REWRITE}")
            try:
                n = verify_tfrecord(f)
                if full:
                    check_data_crcs(f)
            except TFRecordError as err:
                raise TFRecordError(f"{err}; {FIX_REWRITE}") from err
            if n != expected:
                raise TFRecordError(f"{f}: {n} records, but {where.name} says {expected}; {FIX_REWRITE}")
            check_first_record(f, meta["channels"], res)
