"""A small CNN classifier trained by the platform, for IS and Stacked-MNIST mode counting offline.

``python -m gancollapse.classifier dataset=mnist [epochs=5] [device=auto] [out=PATH] [dataset.img_size=32]``
trains it on the dataset's training images and saves it where the evaluators look for it:
``<cache>/classifiers/<dataset identity>.pt`` (cache = ``$GANCOLLAPSE_CACHE`` or ``~/.cache/gancollapse``).

The net is :class:`gancollapse.nets.classifier.SmallClassifier`. For Stacked MNIST train it on
``dataset=mnist`` at the same ``img_size``: each channel is classified separately.

Its accuracy is measured on held-out images: a dataset with a fixed held-out split (``held_out()``, e.g.
``dataset=mnist5k``: 4,500 training and 500 held-out digits) trains on all its training images and is tested on
that split; any other holds out a seeded random 10 % of its images. :func:`ensure_classifier` builds the file on
first use (under a file lock, so parallel runs build it once) — the same file the command writes.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from gancollapse.data.convert import to_float
from gancollapse.instantiate import build_datamodule
from gancollapse.nets.classifier import SmallClassifier
from gancollapse.paths import CONF_DIR, cache_dir
from gancollapse.runio import file_lock

__all__ = ["SmallClassifier", "default_classifier_path", "ensure_classifier", "fit_classifier", "load_classifier",
           "main", "predict_proba", "save_classifier", "train_classifier"]

log = logging.getLogger("gancollapse")


def default_classifier_path(identity: str, cache: str | None = None) -> Path:
    return cache_dir(cache) / "classifiers" / f"{identity}.pt"


def save_classifier(model: SmallClassifier, path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": model.config, "state_dict": model.state_dict(), "meta": meta}, tmp)
    tmp.replace(path)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu") -> SmallClassifier:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier {path} not found: train it with "
                                "`python -m gancollapse.classifier dataset=<name>` (see README, 'Classifier')")
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = SmallClassifier(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict_proba(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Softmax class probabilities (N, classes) of images in [-1, 1], on the model's device."""
    device = next(model.parameters()).device
    return torch.cat([F.softmax(model(b.to(device)).float(), dim=1) for b in images.split(batch_size)])


def train_classifier(images: Tensor, labels: Tensor, num_classes: int, epochs: int = 5, batch_size: int = 128,
                     lr: float = 1e-3, val_fraction: float = 0.1, seed: int = 0,
                     device: str | torch.device = "cpu",
                     val: tuple[Tensor, Tensor] | None = None) -> tuple[SmallClassifier, float]:
    """Adam on cross-entropy; returns the model (eval mode) and its held-out accuracy: on ``val`` (uint8 images,
    labels) when given, training on all of ``images``, else on a seeded random ``val_fraction`` of ``images``
    that it does not train on.

    ``images`` are uint8 (N, C, S, S); random shifts of ±2 px regularise small sets.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = images.shape[0]
    if val is None:
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, int(round(n * val_fraction)))
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        x_all, y_all = images.to(device), labels.to(device)
    else:  # the held-out images go after the training ones, never into a training batch
        tr_idx, val_idx = torch.arange(n), torch.arange(n, n + val[0].shape[0])
        x_all, y_all = torch.cat([images, val[0]]).to(device), torch.cat([labels, val[1]]).to(device)
    model = SmallClassifier(images.shape[1], num_classes, images.shape[-1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        order = tr_idx[torch.randperm(len(tr_idx), generator=gen)].to(device)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = to_float(x_all[idx])
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    probs = predict_proba(model, to_float(x_all[val_idx.to(device)]))
    acc = float((probs.argmax(1) == y_all[val_idx.to(device)]).float().mean())
    return model.requires_grad_(False), acc


def fit_classifier(dm: Any, epochs: int = 5, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: str | torch.device = "cpu") -> tuple[SmallClassifier, dict[str, Any]]:
    """Train the classifier of an image datamodule (its loaded set; tested on ``dm.held_out()`` when the set has
    a fixed held-out split) → the model on the CPU and the metadata saved with it."""
    dm.setup()
    images, labels = dm.data.images, dm.data.labels
    held = dm.held_out() if hasattr(dm, "held_out") else None
    val = (held.images, held.labels) if held is not None else None
    t0 = time.perf_counter()
    with torch.enable_grad():  # callers may sit inside an evaluator's no_grad
        model, acc = train_classifier(images, labels, dm.num_classes, int(epochs), int(batch_size), float(lr),
                                      seed=int(seed), device=device, val=val)
    split = f"held-out split ({len(held)} images)" if held is not None else "random 10% of the set, not trained on"
    meta = {"dataset": dm.describe(), "val_accuracy": acc, "val_split": split, "epochs": int(epochs),
            "seconds": time.perf_counter() - t0}
    return model.cpu(), meta


def ensure_classifier(dm: Any, cache: str | None = None, epochs: int = 20, seed: int = 0) -> Path:
    """Path of ``dm``'s classifier (``<cache>/classifiers/<dm.describe()>.pt``), trained with
    :func:`fit_classifier` and saved there when absent — what ``python -m gancollapse.classifier dataset=<name>
    epochs=<epochs>`` writes. A file lock makes concurrent callers (parallel benchmark runs) build it once."""
    path = default_classifier_path(dm.describe(), cache)
    if path.is_file():
        return path
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():  # built by another process while this one waited
            return path
        model, meta = fit_classifier(dm, epochs=epochs, seed=seed)
        save_classifier(model, path, meta)
    log.info("built the %s classifier (%d epochs, accuracy %.3f on the %s): %s", meta["dataset"], epochs,
             meta["val_accuracy"], meta["val_split"], path)
    return path


def main(argv: list[str] | None = None) -> Path:
    """CLI: dataset overrides go to Hydra (``dataset=mnist dataset.img_size=32``); ``epochs``, ``lr``,
    ``batch_size``, ``device``, ``out``, ``seed`` are the classifier's own."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        raise SystemExit(0)
    own = {"epochs": 5, "lr": 1e-3, "batch_size": 128, "device": "auto", "out": None, "seed": 0}
    overrides = []
    for arg in argv:
        key, _, val = arg.partition("=")
        if key in own:
            own[key] = type(own[key])(val) if own[key] is not None else val
        else:
            overrides.append(arg)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    dm = build_datamodule(cfg)
    if not getattr(dm, "num_classes", 0) or not hasattr(dm, "describe"):
        raise ValueError(f"dataset={cfg.dataset.get('name')} has no class labels: a classifier needs a labelled "
                         "image dataset (digits, mnist, cifar10, or an image folder with class sub-folders)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if own["device"] == "auto" else own["device"]
    model, meta = fit_classifier(dm, own["epochs"], own["batch_size"], own["lr"], own["seed"], device)
    path = Path(own["out"]) if own["out"] else default_classifier_path(dm.describe())
    save_classifier(model, path, meta)
    print(f"classifier for {dm.describe()}: accuracy {meta['val_accuracy']:.4f} on the {meta['val_split']}, "
          f"saved to {path}")
    return path


if __name__ == "__main__":
    main()
