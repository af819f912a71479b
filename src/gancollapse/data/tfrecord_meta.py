"""A TFRecord set's files and metadata: paths per level and part, split sizes, and ``<name>-meta.json``.

Layout (ALAE's: Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020,
github.com/podgorskiy/ALAE, ``dataset_preparation/`` and ``dataloader.py``): one file set per power-of-two
resolution, ``<dir>/<name>-r<LL>.tfrecords.<PPP>`` with LL = log2(resolution) and PPP the part index, plus
``<dir>/<name>-meta.json``; a held-out split is a second file set ``<name>-test-r<LL>.tfrecords.<PPP>``. Record i
of a split goes to part i mod parts. The metadata holds ``channels``, ``resolutions``, ``parts``, ``count`` and
``part_counts`` (training set), ``test_count``, ``test_parts``, ``test_part_counts`` and ``split_seed``.

:func:`meta_resolver` is the ``${tfrecord_meta:…}`` interpolation of ``conf/dataset/tfrecord.yaml``: a run's
image size and channels come from the metadata. Reading the metadata needs neither DareBlopy nor torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: the fix of every problem with a written set
FIX_REWRITE = "rerun scripts/prepare_tfrecords.py to rewrite the set"


def level_path(directory: Path, name: str, resolution: int, part: int) -> Path:
    return Path(directory) / f"{name}-r{int(math.log2(resolution)):02d}.tfrecords.{part:03d}"


def meta_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}-meta.json"


def split_name(name: str, split: str) -> str:
    """File prefix of a split: ``<name>`` for ``train``, ``<name>-test`` for ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return name if split == "train" else f"{name}-test"


def round_robin_counts(count: int, parts: int) -> list[int]:
    """Records per part when record i goes to part i mod parts."""
    return [count // parts + (1 if p < count % parts else 0) for p in range(parts)]


def split_counts(meta: dict, split: str) -> tuple[int, list[int]]:
    """(record count, records per part) of a split according to the metadata (older metadata without
    ``part_counts``: derived from the round-robin rule)."""
    if split == "train":
        count, parts, per_part = meta["count"], meta["parts"], meta.get("part_counts")
    else:
        count, parts, per_part = meta.get("test_count", 0), meta.get("test_parts", 0), meta.get("test_part_counts")
    if not count:
        return 0, []
    return int(count), [int(c) for c in (per_part if per_part is not None else round_robin_counts(count, parts))]

def read_meta(directory: str | Path, name: str) -> dict:
    path = meta_path(Path(directory), name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write the TFRecords first, e.g.\n"
                                f"  python scripts/prepare_tfrecords.py --dataset digits --out {directory} --name {name}")
    return json.loads(path.read_text())


def resolve_from_meta(directory: str | Path, name: str, img_size: int | None = None,
                      channels: int | None = None) -> tuple[int, int]:
    """(img_size, channels) of the set ``<directory>/<name>``: None reads ``<name>-meta.json`` (the largest
    resolution written, its channels); an explicit value must agree with it. Raises ValueError naming the key,
    the metadata file and the values it holds."""
    meta, where = read_meta(directory, name), meta_path(Path(directory), name)
    resolutions = [int(r) for r in meta.get("resolutions") or []]
    if "channels" not in meta or not resolutions:
        raise ValueError(f"{where}: 'channels' or 'resolutions' missing; {FIX_REWRITE}")
    if img_size is None:
        img_size = max(resolutions)
    elif int(img_size) not in resolutions:
        raise ValueError(f"dataset.img_size={img_size} is not in the TFRecords: {where} lists the resolutions "
                         f"{resolutions} (without the override: the largest)")
    if channels is None:
        channels = meta["channels"]
    elif int(channels) != int(meta["channels"]):
        raise ValueError(f"dataset.channels={channels} but {where} says the TFRecords have {meta['channels']} "
                         f"channels (without the override: read from there)")
    return int(img_size), int(channels)


def meta_resolver(key: str, directory: str, name: str) -> int:
    """The ``${tfrecord_meta:<img_size|channels>,<path>,<tfrecord_name>}`` interpolation of
    conf/dataset/tfrecord.yaml: the value the metadata gives (:func:`resolve_from_meta`)."""
    keys = ("img_size", "channels")
    if key not in keys:
        raise ValueError(f"tfrecord_meta: key must be one of {keys}, got {key!r}")
    return resolve_from_meta(directory, name)[keys.index(key)]
