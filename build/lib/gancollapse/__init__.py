"""gancollapse: a config-driven experiment platform for mode collapse in GANs."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "RunHandle", "__version__"]


def __getattr__(name: str):
    # Lazy: `import gancollapse` stays cheap (no torch/lightning import) until the API is used.
    if name in ("load", "RunHandle"):
        from gancollapse import api

        return getattr(api, name)
    raise AttributeError(name)


def __dir__() -> list[str]:
    # The lazy names above are not module globals: list them so dir() and tab completion show them.
    return sorted({*globals(), *__all__})
