"""Writing TFRecord image sets: every power-of-two level, round-robin parts, an optional held-out split.

Lower levels are 2×2 box-filtered from the level above (ALAE: Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent
Autoencoders", CVPR 2020, github.com/podgorskiy/ALAE, ``dataset_preparation/``), rounded to uint8 (ALAE truncates;
rounding keeps the mean). Record i of a split goes to part i mod parts. Held-out split: ``test_indices`` (see
:func:`split_indices`: the first N of a seeded permutation) go to the ``<name>-test`` file set with the same
levels, disjoint from the training set (ALAE's CelebA-HQ script overlaps them). File names and metadata keys:
:mod:`~.tfrecord_meta`; the record format: :mod:`~.tfrecord_format`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gancollapse.data.tfrecord_format import encode_example, frame_record
from gancollapse.data.tfrecord_meta import level_path, meta_path, split_name


def downsample_uint8(images: Tensor) -> Tensor:
    """2×2 box filter (ALAE's ``avg_pool2d(2, 2)``), rounded back to uint8."""
    return F.avg_pool2d(images.float(), 2).round_().clamp_(0, 255).to(torch.uint8)


def split_indices(total: int, test_count: int, seed: int) -> Tensor:
    """Sorted source indices of a held-out set: the first ``test_count`` entries of a permutation of
    ``range(total)`` drawn with ``seed``. Deterministic; the rest is the training set."""
    if not 0 <= test_count < total:
        raise ValueError(f"--test-count must be in [0, {total}) for a set of {total} images, got {test_count}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:test_count].sort().values


# ---------------------------------------------------------------------------- writing
class _SplitWriter:
    """The open files of one split, written under temporary names and renamed only on success."""

    def __init__(self, directory: Path, name: str, parts: int) -> None:
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        self.directory, self.name, self.parts = directory, name, parts
        self.count, self.part_counts = 0, [0] * parts
        self.handles: dict[tuple[int, int], tuple[Path, Path, object]] = {}
        self.suffix = f".tmp{os.getpid()}"

    def add(self, levels: list[Tensor], labels: Tensor, indices: Tensor) -> None:
        n = int(labels.numel())
        parts = [(self.count + i) % self.parts for i in range(n)]
        for level in levels:
            res = int(level.shape[-1])
            for i in range(n):
                key = (res, parts[i])
                if key not in self.handles:
                    final = level_path(self.directory, self.name, res, parts[i])
                    tmp = final.with_name(final.name + self.suffix)
                    self.handles[key] = (final, tmp, tmp.open("wb"))
                self.handles[key][2].write(frame_record(encode_example(level[i], int(labels[i]), int(indices[i]))))
        for p in parts:
            self.part_counts[p] += 1
        self.count += n

    def close(self, commit: bool) -> None:
        for final, tmp, handle in self.handles.values():
            handle.close()
            if commit:
                os.replace(tmp, final)
            else:
                tmp.unlink(missing_ok=True)

    def remove_stale(self) -> None:
        """Delete files of this prefix that the new set does not have (more parts or levels than now)."""
        keep = {final.name for final, _, _ in self.handles.values()}
        pattern = re.compile(rf"{re.escape(self.name)}-r\d\d\.tfrecords\.\d\d\d")
        for f in self.directory.iterdir():
            if pattern.fullmatch(f.name) and f.name not in keep:
                f.unlink()


def write_tfrecords(batches: Iterable[tuple[Tensor, Tensor]], directory: str | Path, name: str,
                    min_resolution: int = 4, parts: int = 1, test_indices: Tensor | None = None,
                    test_parts: int = 1, split_seed: int | None = None, extra_meta: dict | None = None) -> dict:
    """Write (uint8 (B, C, S, S) images, labels) batches at every power-of-two resolution from S down to
    ``min_resolution``; record i of a split goes to part i mod ``parts``. Images whose position in the stream
    is in ``test_indices`` (see :func:`split_indices`) go to the ``<name>-test`` set instead. Returns (and
    saves) the metadata, ``extra_meta`` merged in.

    Files are written under temporary names and renamed when every batch is written; the old metadata is
    removed first and the new one written last, so an interrupted write never leaves metadata that
    describes files it did not finish. Files of an earlier write with more parts or levels are deleted."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    test_idx = torch.as_tensor([] if test_indices is None else test_indices, dtype=torch.long).flatten()
    writers = {"train": _SplitWriter(directory, name, parts)}
    if test_idx.numel():
        writers["test"] = _SplitWriter(directory, split_name(name, "test"), test_parts)
    meta: dict = {"name": name, "parts": parts, "count": 0}
    seen, ok = 0, False
    try:
        for images, labels in batches:
            size = images.shape[-1]
            if images.dtype != torch.uint8 or images.shape[-2] != size or size & (size - 1):
                raise ValueError(f"images must be uint8, square, power-of-two sized; got {images.dtype} {tuple(images.shape)}")
            if "resolutions" not in meta:
                if min_resolution < 1 or min_resolution & (min_resolution - 1) or min_resolution > size:
                    raise ValueError(f"min_resolution must be a power of two <= {size}, got {min_resolution}")
                meta["resolutions"] = [size >> i for i in range(int(math.log2(size // min_resolution)) + 1)]
                meta["channels"] = int(images.shape[1])
            elif images.shape[1:] != (meta["channels"], meta["resolutions"][0], meta["resolutions"][0]):
                raise ValueError(f"every batch must have the first batch's image shape "
                                 f"{(meta['channels'], meta['resolutions'][0], meta['resolutions'][0])}, got {tuple(images.shape[1:])}")
            levels = [images]
            for _ in meta["resolutions"][1:]:
                levels.append(downsample_uint8(levels[-1]))
            labels = torch.as_tensor(labels).flatten()
            idx = torch.arange(seen, seen + images.shape[0])
            held_out = torch.isin(idx, test_idx)
            for split, sel in (("train", ~held_out), ("test", held_out)):
                if split in writers and bool(sel.any()):
                    writers[split].add([lvl[sel] for lvl in levels], labels[sel], idx[sel])
            seen += int(images.shape[0])
        if test_idx.numel() and int(test_idx.max()) >= seen:
            raise ValueError(f"test index {int(test_idx.max())} is beyond the {seen} images written")
        for split, w in writers.items():
            if w.count < w.parts:
                flag = "--parts" if split == "train" else "--test-parts"
                raise ValueError(f"{w.count} {split} images cannot fill {w.parts} parts: lower {flag}")
        ok = True
    finally:
        if ok:
            meta_path(directory, name).unlink(missing_ok=True)
        for w in writers.values():
            w.close(commit=ok)
    for w in writers.values():
        w.remove_stale()
    if "test" not in writers:  # a held-out set from an earlier write no longer matches this one
        _SplitWriter(directory, split_name(name, "test"), 1).remove_stale()
    test = writers.get("test")
    meta.update(count=writers["train"].count, part_counts=writers["train"].part_counts,
                test_count=test.count if test else 0, test_parts=test.parts if test else 0,
                test_part_counts=test.part_counts if test else [], split_seed=split_seed if test else None,
                **(extra_meta or {}))
    tmp = meta_path(directory, name).with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path(directory, name))
    return meta
