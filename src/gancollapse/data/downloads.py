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
