"""``python -m gancollapse.data download <name> [--root DIR]``: fetch a torchvision data set, nothing else.

The files land where training reads them (``dataset.root``, default ``data/`` in the current directory), so a
later ``python -m gancollapse.train dataset=<name>`` runs without ``dataset.download=true``. Files already there
are checked, not downloaded again. Without network it fails with one line naming the files to copy in by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import CIFAR10, MNIST, CelebA

from gancollapse.data.downloads import DATA_FILES, DEFAULT_ROOT
from gancollapse.runio import RunError, one_line, one_line_errors

#: data set name (as in ``conf/dataset/<name>.yaml``) → how torchvision fetches it into a root
FETCHERS: dict[str, Callable[[str], object]] = {
    # the train set's constructor fetches every split's files (MNIST: train and t10k, CIFAR-10: all batches)
    "mnist": lambda root: MNIST(root, train=True, download=True),
    "cifar10": lambda root: CIFAR10(root, train=True, download=True),
    "celeba": lambda root: CelebA(root, split="all", target_type=[], download=True),
}
FETCHERS["stacked_mnist"] = FETCHERS["mnist"]  # stacked from the MNIST files at training time


def download(name: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """Fetch data set ``name`` into ``root`` (files already there are only checked); returns the resolved root.

    Raises :class:`RunError` (code 2) for an unknown name, and one naming the files to put where when the
    download fails (no network, a rate-limited mirror).
    """
    if name not in FETCHERS:
        raise RunError(f"unknown data set {name!r}", f"choose one of {', '.join(FETCHERS)}", code=2)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        FETCHERS[name](str(root))
    # torchvision reports a failed mirror as URLError/OSError, MNIST's exhausted mirrors and CelebA's failed
    # integrity check as RuntimeError
    except (OSError, RuntimeError) as err:
        reason = one_line(err)  # MNIST's lists every mirror it tried: the start says enough
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise RunError(f"downloading {name} into {root} failed ({reason})",
                       f"without network put {DATA_FILES[name]} in {root} (copied from a machine with internet) "
                       f"and run `python -m gancollapse.data download {name} --root {root}` again to check them") from err
    return root


def main(argv: list[str] | None = None) -> None:
    names = ", ".join(FETCHERS)
    parser = argparse.ArgumentParser(prog="python -m gancollapse.data",
                                     description=f"Fetch a torchvision data set ({names}) into the training root.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help=f"fetch a data set ({names})",
                                description=f"Fetch a torchvision data set into the training root. Names: {names}.")
    # a plain string, not argparse choices: an unknown name gets our one-line error, not the usage text
    fetch.add_argument("name", help=f"one of {names}")
    fetch.add_argument("--root", default=DEFAULT_ROOT, metavar="DIR",
                       help=f"folder to fetch into; training reads dataset.root (default: {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    with one_line_errors():
        root = download(args.name, args.root)
    print(f"{args.name} is in {root}; train with: python -m gancollapse.train dataset={args.name}"
          + ("" if Path(args.root) == Path(DEFAULT_ROOT) else f" dataset.root={args.root}"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
