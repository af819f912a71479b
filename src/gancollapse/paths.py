"""Where the platform keeps things on disk: its config tree and its cache.

A leaf module (its one platform import is the schema leaf, registered with Hydra for composition), so anything — the classifier, the metrics, the entry points — can ask
for a path without importing the modules that use it.
"""

from __future__ import annotations

import os
from pathlib import Path

import gancollapse.schema  # noqa: F401 — registers train.yaml's schema (train_schema) wherever CONF_DIR is composed

# The Hydra config tree ships inside the package (``gancollapse/conf``; the checkout's top-level ``conf`` is a
# link to it), so an installed wheel trains from any directory. A user's own tree joins it through Hydra's
# search path: ``hydra.searchpath=[file:///path/to/my_conf]``.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where converted weights, real-image statistics and classifiers live: ``override``, else
    ``$GANCOLLAPSE_CACHE``, else ``~/.cache/gancollapse``."""
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("GANCOLLAPSE_CACHE", Path.home() / ".cache" / "gancollapse")).expanduser()
