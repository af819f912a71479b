"""``python -m gancollapse.score FILE --protocol <paper_table> | --dataset <name> [key=value ...]``: score samples
that any program produced with this platform's metric code, so other code's outputs stand beside ours.

* **2D points** (an ``.npy``/``.npz``/``.pt`` array of shape (N, 2), or the ``samples.pt`` that
  ``python -m gancollapse.sample`` writes): modes captured, high-quality fraction and reverse KL
  (:mod:`gancollapse.metrics.toy`) under a paper's protocol — ``--protocol gdpp_ring`` reads the layout of the
  means and the HQ / capture rules from ``conf/experiment/repro/gdpp_ring.yaml``, the very file its reproduction
  trains with (``--dataset ring|grid``: the platform's own toy protocol). The first ``evaluator.n_samples``
  points are scored (the papers' 2,500), as GDPP's ``evaluate_samples`` keeps the first 2,500; ``--n``
  changes that.
* **Images** (a folder of PNG/JPEG files, or an ``.npz``/``.npy``/``.pt`` array (N, H, W[, C]) or (N, C, H, W);
  uint8 0–255, or floats in [-1, 1]): the metrics of the dataset's own evaluator (``evaluator.metrics``: FID, KID,
  precision/recall/density/coverage — and with a classifier, IS and (Stacked MNIST) mode counts) against
  ``--dataset <name>``'s cached real statistics (:class:`gancollapse.metrics.image_callback.ImageEvaluator`; e.g.
  ``evaluator.feature=inception``, ``evaluator.metrics.kid=null``).

``key=value`` arguments are Hydra overrides of the composed config (``evaluator.threshold=4``,
``dataset.img_size=64``). The metrics are printed and, with ``--out FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gancollapse.instantiate import build_datamodule, instantiate_checked
from gancollapse.metrics.toy import mode_stats
from gancollapse.paths import CONF_DIR
from gancollapse.runio import RunError, one_line_errors

PROTOCOL_DIR = Path(CONF_DIR) / "experiment" / "repro"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def protocols() -> list[str]:
    """The paper protocols: one per file of ``conf/experiment/repro/``."""
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def protocol_config(protocol: str | None = None, dataset: str | None = None,
                    overrides: list[str] | None = None) -> DictConfig:
    """The composed training config of a paper's protocol (``experiment=repro/<protocol>``) or of a dataset."""
    if (protocol is None) == (dataset is None):
        raise RunError("say what to score against", "give --protocol <paper_table> (2D points: "
                       f"{', '.join(protocols())}) or --dataset <name> (images, or ring/grid points)")
    if protocol is not None and protocol not in protocols():
        raise RunError(f"--protocol {protocol}: no such protocol", f"use one of {', '.join(protocols())} "
                       "(files of conf/experiment/repro/)")
    first = [f"experiment=repro/{protocol}"] if protocol else [f"dataset={dataset}"]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose("train", overrides=first + list(overrides or []))
    except HydraException as err:
        raise RunError(f"the config does not compose ({' '.join(str(err).split())})",
                       "check --dataset and the key=value overrides") from None


# ---------------------------------------------------------------------------- reading samples
def _images_from_folder(folder: Path) -> Tensor:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RunError(f"{folder} holds no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images",
                       "point FILE at a folder of images, or at an .npy/.npz/.pt array")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            arrays.append(np.asarray(im.convert("L") if im.mode in ("L", "I;16", "1") else im.convert("RGB")))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise RunError(f"{folder}: images of different sizes {sorted(shapes)}", "resize them to one size first")
    return torch.from_numpy(np.stack(arrays))


def read_samples(path: str | Path, key: str | None = None) -> Tensor:
    """The array in ``path`` (an image folder, ``.npy``, ``.npz`` or ``.pt``) as a tensor, unchanged."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path} does not exist", "give the file (or image folder) to score")
    if path.is_dir():
        return _images_from_folder(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.keys())
                if key is None and len(names) != 1:
                    raise RunError(f"{path} holds {len(names)} arrays ({', '.join(names) or 'none'})",
                                   "choose one with --key <name>")
                if (key or names[0]) not in names:
                    raise RunError(f"--key {key}: {path} has no such array", f"use one of {', '.join(names)}")
                data = npz[key or names[0]]
        elif suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, dict):  # python -m gancollapse.sample's samples.pt: {"x": ..., "z": ...}
                name = key or ("x" if "x" in data else None)
                if name not in data:
                    raise RunError(f"{path} holds a dict ({', '.join(map(str, data))})", "choose the array with --key")
                data = data[name]
        else:
            raise RunError(f"{path}: unknown file type {suffix or '(none)'}",
                           "give an .npy, .npz or .pt array, or a folder of images")
    except RunError:
        raise
    except Exception as err:  # a truncated or foreign file: numpy/torch raise many kinds
        raise RunError(f"{path} could not be read ({type(err).__name__}: {' '.join(str(err).split())[:200]})",
                       "give an .npy, .npz or .pt array, or a folder of images") from None
    tensor = torch.as_tensor(np.asarray(data)) if not isinstance(data, Tensor) else data
    if tensor.ndim == 0 or tensor.shape[0] == 0:
        raise RunError(f"{path} holds no samples (shape {tuple(tensor.shape)})", "give an array with one row per sample")
    return tensor


def is_points(x: Tensor) -> bool:
    return x.ndim == 2 and x.shape[1] == 2


def to_image_batch(x: Tensor, channels: int, size: int, path: str) -> Tensor:
    """(N, C, H, W) floats in [-1, 1] from uint8 (0–255) or float ([-1, 1]) images in NHWC, NCHW or NHW."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise RunError(f"{path}: shape {tuple(x.shape)} is neither (N, 2) points nor images with 1 or 3 channels",
                       "give points as (N, 2) or images as (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if tuple(x.shape[1:]) != (channels, size, size):
        raise RunError(f"{path}: images are {tuple(x.shape[1:])} (C, H, W) but the dataset's are "
                       f"{(channels, size, size)}", "resize them, or choose the dataset's size with dataset.img_size="
                       f"{x.shape[-1]} (and dataset.channels={x.shape[1]})")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01:
        raise RunError(f"{path}: float images span [{lo:.3g}, {hi:.3g}], not [-1, 1]",
                       "store uint8 (0-255) images, or floats scaled to [-1, 1]")
    return x


# ---------------------------------------------------------------------------- scoring
def score_points(x: Tensor, cfg: DictConfig, n: int | None = None) -> dict[str, float]:
    """Toy mode metrics of 2D points under the composed config's dataset layout and evaluator rules."""
    dm = build_datamodule(cfg)
    if not hasattr(dm, "centers"):
        raise RunError(f"2D points, but dataset={cfg.dataset.get('name')} is not a 2D mixture",
                       "use --protocol <paper_table> or --dataset ring|grid")
    ev = cfg.get("evaluator") or {}
    want = int(ev.get("n_samples", len(x))) if n is None else int(n)
    if len(x) < want:
        raise RunError(f"the file has {len(x)} points but the protocol scores {want} (evaluator.n_samples)",
                       f"pass --n {len(x)} to score them all, or give more points")
    stats = mode_stats(x[:want].double(), dm.centers, dm.std, float(ev.get("threshold", 3.0)),
                       float(ev.get("min_fraction", 0.008)), int(ev.get("min_count", 1)))
    return {**stats.as_dict(), "toy/n_scored": float(want)}


def _batches(x: Tensor, size: int, device: torch.device) -> Iterator[Tensor]:
    for chunk in x.split(size):
        yield chunk.to(device)


def score_images(x: Tensor, cfg: DictConfig, path: str, n: int | None = None, device: str = "auto") -> dict[str, float]:
    """The dataset's image evaluator (FID, KID, PRDC; IS and modes with a classifier) on another program's images."""
    from gancollapse.metrics.image_callback import ImageEvaluator
    from gancollapse.runner import setup_data

    dm = build_datamodule(cfg)
    if not hasattr(dm, "img_size"):
        raise RunError(f"images, but dataset={cfg.dataset.get('name')} is not an image dataset",
                       "choose the image dataset to compare with: --dataset <name>")
    if not cfg.get("evaluator"):
        raise RunError("evaluator=none: nothing to score with", "drop the evaluator=none override")
    evaluator = instantiate_checked(cfg.evaluator)
    if not isinstance(evaluator, ImageEvaluator):
        raise RunError(f"{type(evaluator).__name__} does not score images", "use the dataset's default evaluator")
    images = to_image_batch(x if n is None else x[: int(n)], dm.channels, dm.img_size, path)
    if len(images) < 2:
        raise RunError(f"{path}: FID needs at least 2 images, got {len(images)}", "give more images")
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    setup_data(cfg, dm)
    evaluator.datamodule = dm
    evaluator.n_samples = len(images)
    evaluator._settle_sizes(dev)
    metrics = evaluator.score_images(_batches(images, evaluator.batch_size, dev), dev)
    return {**{f"eval/{k}": float(v) for k, v in metrics.items()}, "eval/n_scored": float(len(images))}


def score_file(path: str | Path, protocol: str | None = None, dataset: str | None = None,
               overrides: list[str] | None = None, n: int | None = None, key: str | None = None,
               device: str = "auto") -> dict[str, Any]:
    """Score ``path`` (points or images); returns the metrics with what they were scored against."""
    if n is not None and int(n) < 1:
        raise RunError(f"--n {n}: must be >= 1", "give a positive number of samples (or leave --n out)")
    cfg = protocol_config(protocol, dataset, overrides)
    x = read_samples(path, key)
    if is_points(x):
        if not torch.isfinite(x.double()).all():
            raise RunError(f"{path}: some points are NaN or infinite", "score finite points only")
        metrics: dict[str, Any] = score_points(x, cfg, n)
    else:
        metrics = score_images(x, cfg, str(path), n, device)
    repro = OmegaConf.to_container(cfg.repro, resolve=True) if cfg.get("repro") else {}
    against = {"file": str(path), "protocol": protocol, "dataset": cfg.dataset.get("name"),
               "paper": repro.get("paper"), "table": repro.get("table")}
    return {**{k: v for k, v in against.items() if v is not None}, **metrics}


def describe(result: dict[str, Any]) -> str:
    """One readable line of the main numbers."""
    if "toy/modes" in result:
        return (f"modes {result['toy/modes']:.0f} of {result['toy/n_modes']:.0f}, high quality "
                f"{100 * result['toy/hq_fraction']:.1f}%, reverse KL {result['toy/reverse_kl']:.3f} nats "
                f"({result['toy/n_scored']:.0f} points)")
    shown = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("eval/")}
    return ", ".join(f"{k} {v:.4g}" for k, v in shown.items())


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m gancollapse.score", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="samples: .npy/.npz/.pt array, or a folder of images")
    parser.add_argument("--protocol", help=f"a paper table's protocol for 2D points ({', '.join(protocols())})")
    parser.add_argument("--dataset", help="a dataset config (images: its real statistics; ring/grid: our protocol)")
    parser.add_argument("--n", type=int, help="score the first N samples (default: evaluator.n_samples for points, "
                                              "all for images)")
    parser.add_argument("--key", help="the array of an .npz (or the entry of a .pt dict) to score")
    parser.add_argument("--out", help="write the metrics as JSON to this file")
    parser.add_argument("--device", default="auto", help="images: auto (cuda if available), cpu, cuda:N")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    bad = [a for a in rest if "=" not in a or a.startswith("-")]
    if bad:
        raise RunError(f"unknown argument(s) {' '.join(bad)}", "options are --protocol, --dataset, --n, --key, --out, "
                       "--device; anything else must be a key=value override")
    result = score_file(args.file, args.protocol, args.dataset, rest, args.n, args.key, args.device)
    against = result.get("protocol") or f"dataset={result.get('dataset')}"
    print(f"{result['file']} under {against}" + (f" ({result['paper']}, {result['table']})" if "paper" in result else ""))
    print("  " + describe(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"  written: {args.out}")
    return result


def cli() -> None:
    with one_line_errors():
        main()


if __name__ == "__main__":
    cli()
