"""Where the downloaded data sets live and what a run says when one is not there.

Real data sets are downloaded only when the user sets ``download: true`` (or runs ``python -m gancollapse.data
download <name>``); a missing one raises the FileNotFoundError of :func:`missing_dataset`, which names the path
and the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_ROOT = "data"


def missing_dataset(name: str, root: Path, key: str, err: Exception | None = None) -> FileNotFoundError:
    """The error for data set ``name`` (``conf/dataset/<key>.yaml``) not found under ``root``: where it was
    looked for, how to download it once or where to point ``dataset.root``, and torchvision's reason ``err``."""
    msg = (f"{name} not found under {root.resolve()}. Download it once (needs internet) with\n"
           f"  python -m gancollapse.train dataset={key} dataset.download=true dataset.root={root}\n"
           f"or set dataset.root to the folder that holds it.")
    if err is not None:
        msg += f" ({type(err).__name__}: {err})"
    return FileNotFoundError(msg)


#: where torchvision looks for a data set's files, below ``dataset.root`` (for the messages of a missing set)
DATA_FILES = {
    "mnist": "MNIST/raw/ (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz)",
    "cifar10": "cifar-10-python.tar.gz (or its unpacked folder cifar-10-batches-py/)",
    "celeba": "celeba/ (img_align_celeba/ and list_eval_partition.txt, list_attr_celeba.txt, identity_CelebA.txt, "
              "list_bbox_celeba.txt, list_landmarks_align_celeba.txt)",
}

DATA_FILES["stacked_mnist"] = DATA_FILES["mnist"]
