"""Write any gancollapse image dataset (or a folder of images) into TFRecords, one file set per resolution.

Examples:
    python scripts/prepare_tfrecords.py --dataset digits --out data/tfrecords/digits --name digits --size 32
    python scripts/prepare_tfrecords.py --dataset cifar10 --out data/tfrecords/cifar10 --name cifar10 --size 32 \
        dataset.root=data dataset.train_test=true
    python scripts/prepare_tfrecords.py --folder /data/faces --out data/tfrecords/faces --name faces --size 128 --parts 16
    python scripts/prepare_tfrecords.py --folder /data/celeba-hq --out data/tfrecords/celebahq --name celebahq \
        --size 256 --parts 16 --test-count 1000 --split-seed 0

Writes ``<out>/<name>-r<log2 res>.tfrecords.<part>`` for every power of two from ``--size`` down to
``--min-resolution`` and ``<out>/<name>-meta.json`` (ALAE's layout). With ``--test-count N`` the N images at the
first N positions of a permutation seeded with ``--split-seed`` go to a separate held-out set,
``<out>/<name>-test-r<log2 res>.tfrecords.<part>`` (``--test-parts`` parts, same levels), disjoint from the
training files; the metadata records ``count`` (training) and ``test_count``. Train from them with
``python -m gancollapse.train dataset=tfrecord dataset.path=<out> dataset.tfrecord_name=<name> dataset.img_size=32``
(one level) or ``dataset=progressive dataset.path=<out> dataset.tfrecord_name=<name> dataset.prepare=null``
(every level from 4 px, ALAE-style). ``--parts`` a multiple of the DDP world size lets each rank read its own
files. Extra ``key=value`` arguments are Hydra overrides of the dataset config (``dataset.root=...``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor


def _batches(data, batch_size: int, num_workers: int) -> Iterator[tuple[Tensor, Tensor]]:
    from torch.utils.data import DataLoader

    from gancollapse.data.in_memory import UInt8Images

    if isinstance(data, UInt8Images):
        for i in range(0, len(data), batch_size):
            yield data.gather(torch.arange(i, min(i + batch_size, len(data))))
    else:
        for x, y in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            yield x, torch.as_tensor(y)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a conf/dataset name: digits, mnist, cifar10, celeba, stacked_mnist, ...")
    src.add_argument("--folder", help="a folder of images (recursive)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--name", default=None, help="file prefix (default: the dataset or folder name)")
    parser.add_argument("--size", type=int, default=32, help="top resolution (a power of two)")
    parser.add_argument("--min-resolution", type=int, default=4)
    parser.add_argument("--channels", type=int, default=None, help="1 or 3 (default: the dataset config's)")
    parser.add_argument("--parts", type=int, default=1, help="files per resolution (for sharding)")
    parser.add_argument("--test-count", type=int, default=0, help="images held out in <name>-test-r*.tfrecords.*")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out permutation")
    parser.add_argument("--test-parts", type=int, default=1, help="files per resolution of the held-out set")
    parser.add_argument("--crop", type=int, default=None, help="--folder: center crop before resizing")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-workers", type=int, default=4)
    args, overrides = parser.parse_known_args(argv)
    if args.size < 1 or args.size & (args.size - 1):
        parser.error(f"--size must be a power of two, got {args.size}")

    from hydra import compose, initialize_config_dir

    from gancollapse.data.image_folder import FolderDataModule
    from gancollapse.data.tfrecord_writer import split_indices, write_tfrecords
    from gancollapse.instantiate import build_datamodule
    from gancollapse.paths import CONF_DIR

    if args.folder:
        dm = FolderDataModule(path=args.folder, img_size=args.size, channels=args.channels or 3, crop=args.crop,
                              num_workers=args.num_workers)
        name = args.name or Path(args.folder).name
    else:
        extra = [f"dataset.img_size={args.size}"] + ([f"dataset.channels={args.channels}"] if args.channels else [])
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"dataset={args.dataset}", *extra, *overrides])
        dm = build_datamodule(cfg)
        name = args.name or args.dataset
    dm.setup()
    t0 = time.perf_counter()
    try:
        held_out = split_indices(len(dm.data), args.test_count, args.split_seed) if args.test_count else None
        meta = write_tfrecords(_batches(dm.data, args.batch_size, args.num_workers), args.out, name,
                               min_resolution=args.min_resolution, parts=args.parts, test_indices=held_out,
                               test_parts=args.test_parts, split_seed=args.split_seed if args.test_count else None,
                               extra_meta={"num_classes": int(getattr(dm, "num_classes", 0))})
    except ValueError as err:
        parser.error(str(err))
    held = f", {meta['test_count']} held out" if meta["test_count"] else ""
    print(f"wrote {meta['count']} images{held} at {meta['resolutions']} px ({meta['parts']} part(s) each) to "
          f"{args.out} in {time.perf_counter() - t0:.1f}s")
    return meta


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
