"""Where the platform keeps things on disk: its config tree and its cache.

A leaf module (no platform imports), so anything — the classifier, the metrics, the entry points — can ask
for a path without importing the modules that use it.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository's Hydra config tree (``conf/`` next to ``src/``), for ``initialize_config_dir`` and ``hydra.main``.
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where converted weights, real-image statistics and classifiers live: ``override``, else
    ``$GANCOLLAPSE_CACHE``, else ``~/.cache/gancollapse``."""
    if override:
        return Path(override).expanduser()
    return Path(os.environ.get("GANCOLLAPSE_CACHE", Path.home() / ".cache" / "gancollapse")).expanduser()
