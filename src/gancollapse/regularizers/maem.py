"""MaEM-GAN's replay-buffer manifold entropy term (Liu et al., AAAI'23, Sec. "RB-MaEM", Eq. 8).

The entropy of D's embedding manifold is estimated offline by the distance from each code to its nearest
neighbour in a replay buffer of S past codes; maximising ``log`` of the mean nearest-neighbour distance
spreads the codes. D's side spreads *real* codes, G's side spreads *fake* codes (seed ``train.py``).

Loss (per side):  −w(e) · log( mean_i  dist(c_i, NN_B(c_i)) ),  w(e) = σ · min(e / ramp, 1).

``dist`` is the squared L2 distance averaged over the code dimension (the seed's form) or the cosine
distance 1 − cos(c, v*) with v* the most cosine-similar buffer entry (the paper's Eq. 8, and the seed
README's advice for large-scale runs).

Cost: the nearest neighbour comes from one (B×d)·(d×S) product and an argmin, then a gather of B rows:
time O(B·S·d), memory O(S·d + B·S) — never the (S, B, d) broadcast of the seed code. The product is scored
in float64 (see :func:`nearest_neighbour`): D's codes drift away from the origin in long runs, and the
expansion ‖c‖² − 2c·b + ‖b‖² in float32 then cancels away the small differences that decide the argmin.

Buffer horizon. The default :class:`ReplayBuffer` is a true FIFO of the last S codes (S = 1024 with batches
of 64: the last 16 batches), and each code's neighbour may be any of them. The seed's buffer
(``seed_compat=true``, :class:`SeedCompatBuffer`) keeps one column per batch slot and shrinks to a single
batch after 17 steps, so code i is compared only with code i of the previous batch (github.com/HaozheLiu-ST/MEE,
``train.py``: ``cat(buf[batch_size:], new)``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gancollapse.regularizers.base import Regularizer, Step

Metric = Literal["l2", "cosine"]


def nearest_neighbour(codes: Tensor, buffer: Tensor, metric: Metric = "l2") -> Tensor:
    """Return the buffer row nearest to each code, shape (B, d), without gradient to the buffer.

    L2 uses ‖c − b‖² = ‖c‖² − 2c·b + ‖b‖² (the ‖c‖² term is constant per row and dropped for the argmin);
    cosine uses the product of the normalised codes. Both are scored in float64: with codes at distance R
    from the origin and neighbour gaps δ, float32 loses the argmin once R²·2⁻²⁴ ≳ δ² (offset 30, spread
    0.01: 64 of 64 neighbours wrong), and the cosines of far-off codes all round to 1. Centring codes and
    buffer on the buffer mean is as fast but only translation-invariant: a buffer of two tight clusters
    30 apart still gives 48 of 64 wrong neighbours, and centring changes cosine similarity. float64 gets
    all of them right (``scripts/bench_maem.py nn``); at S = 1024, B = 64, d = 16 the three forms are
    overhead-bound (~0.1 ms on one CPU core, float64 ≤ 1.2×), at S = 4096, B = 256, d = 128 float64 takes
    1.6×, still small beside a D forward. float64 tensors are also never down-cast by autocast.
    """
    with torch.no_grad():
        b = buffer.detach().double()
        c = codes.detach().double()
        if metric == "l2":
            scores = torch.addmm(b.pow(2).sum(dim=1)[None, :], c, b.t(), alpha=-2.0)
            idx = scores.argmin(dim=1)
        elif metric == "cosine":
            idx = (F.normalize(c, dim=1) @ F.normalize(b, dim=1).t()).argmax(dim=1)
        else:
            raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    return buffer.index_select(0, idx)


def code_distance(codes: Tensor, neighbours: Tensor, metric: Metric = "l2") -> Tensor:
    """Per-sample distance to the matched neighbour: mean squared difference over d, or 1 − cos.

    The L2 difference is formed directly (no cancellation). 1 − cos is computed in float64 and cast back,
    keeping the gradient: for codes far from the origin it is ~1e-8 and float32 would round it to noise.
    """
    if metric == "l2":
        return (codes - neighbours.to(codes.dtype)).pow(2).mean(dim=1)
    cos = F.cosine_similarity(codes.double(), neighbours.double(), dim=1)
    return (1.0 - cos).to(codes.dtype)


def manifold_entropy(codes: Tensor, buffer: Tensor, metric: Metric = "l2", eps: float = 1e-12) -> Tensor:
    """log( mean_i dist(c_i, NN(c_i)) ): the entropy surrogate to *maximise* (Eq. 8 as coded by the seed)."""
    flat = codes.reshape(codes.shape[0], -1)
    dist = code_distance(flat, nearest_neighbour(flat, buffer, metric), metric)
    return torch.log(dist.mean() + eps)


def entropy_weight(sigma: float, epoch: int, ramp_epochs: int) -> float:
    """w(e) = σ · min(e / ramp, 1) (seed ``train.py``); no ramp when ``ramp_epochs`` is 0."""
    if ramp_epochs <= 0:
        return sigma
    return sigma * min(epoch / ramp_epochs, 1.0)


class ReplayBuffer(torch.nn.Module):
    """A true FIFO of the last ``size`` codes, kept as a ring; state is saved in checkpoints.

    Initialised with U(−1, 1) codes like the seed, so the estimator is defined from the first step.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {size}")
        if dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {dim}")
        self.register_buffer("data", torch.empty(size, dim).uniform_(-1.0, 1.0))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.data.shape[0]

    @property
    def dim(self) -> int:
        return self.data.shape[1]

    @torch.no_grad()
    def push(self, codes: Tensor) -> None:
        codes = codes.detach().reshape(codes.shape[0], -1)[-self.size :].to(self.data.dtype)
        n = codes.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.data.device)) % self.size
        self.data.index_copy_(0, idx, codes)
        self.ptr.copy_((self.ptr + n) % self.size)

    def ordered(self) -> Tensor:
        """The contents from oldest to newest."""
        return torch.roll(self.data, shifts=-int(self.ptr), dims=0)


class SeedCompatBuffer(torch.nn.Module):
    """The seed's buffer, bug included: shape (K, B, d), updated as ``cat(buf[B:], new[None])``.

    Seed (github.com/HaozheLiu-ST/MEE, ``train.py``, ``entropy_buffer`` / ``enrtopy_loss``): S codes drawn from
    U(−1, 1) and copied into every batch slot, so K = S rows of (B, d). Code i is compared only with column i
    (``min`` over K of ``mean_j (buf[k, i, j] − c[i, j])²``): the same S initial codes, then slot i of each later
    batch. The update drops B rows and appends one, so K shrinks S → S − B + 1 → … and, once S − n·(B − 1) < B,
    to 1 (S = 1024, B = 64: 961, 898, …, 16, then 1 from the 17th call on); from then on each code's only
    neighbour is the same slot of the previous batch. A batch of another size is compared with the first
    columns and not pushed (the seed uses ``drop_last``).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("data", torch.empty(0, 0, dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "data"
        if key in state_dict:
            self.data = torch.empty_like(state_dict[key], device=self.data.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def entropy(self, codes: Tensor, eps: float = 1e-12) -> Tensor:
        flat = codes.reshape(codes.shape[0], -1)
        b = flat.shape[0]
        if self.data.numel() == 0:
            init = torch.empty(self.size, self.dim, device=flat.device).uniform_(-1.0, 1.0)
            self.data = init[:, None, :].expand(self.size, b, self.dim).clone()
        buf = self.data[:, :b]
        dist = (buf - flat[None]).pow(2).mean(dim=2).min(dim=0).values
        loss = torch.log(dist.mean() + eps)
        with torch.no_grad():
            new = flat.detach()[None]
            if new.shape[1] == self.data.shape[1]:
                self.data = torch.cat((self.data[b:], new), dim=0)
        return loss


class ManifoldEntropy(Regularizer):
    """RB-MaEM entropy on D's output: real codes in the D step, fake codes in the G step.

    Args:
        sigma: entropy weight σ (paper: 5e-4 on CIFAR-10, 5e-2 on CelebA).
        code_dim: dimension m of D's output.
        buffer_size: S, number of codes kept per side (paper: 1024).
        metric: ``l2`` (seed) or ``cosine`` (paper Eq. 8).
        ramp_epochs: linear warm-up of σ over this many epochs (seed: 100); 0 disables it.
        d_side / g_side: enable each side independently.
        seed_compat: the seed's per-slot, shrinking buffer (:class:`SeedCompatBuffer`: each code against the
            same slot of the previous batch) instead of the FIFO of the last S codes (:class:`ReplayBuffer`).
    """

    replayable_d_terms = False  # every d_terms call pushes D's codes into the replay buffer

    def __init__(
        self,
        sigma: float = 5e-4,
        code_dim: int = 1,
        buffer_size: int = 1024,
        metric: Metric = "l2",
        ramp_epochs: int = 100,
        d_side: bool = True,
        g_side: bool = True,
        seed_compat: bool = False,
    ) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"regularizer.maem.sigma must be >= 0, got {sigma}")
        if metric not in ("l2", "cosine"):
            raise ValueError(f"regularizer.maem.metric must be 'l2' or 'cosine', got {metric!r}")
        for key, val, low in (("buffer_size", buffer_size, 1), ("code_dim", code_dim, 1), ("ramp_epochs", ramp_epochs, 0)):
            if int(val) < low:
                raise ValueError(f"regularizer.maem.{key} must be >= {low}, got {val}")
        if seed_compat and metric != "l2":
            raise ValueError("regularizer.maem.seed_compat reproduces the seed's L2 form; set metric=l2")
        self.sigma, self.metric, self.ramp_epochs = float(sigma), metric, int(ramp_epochs)
        self.d_side, self.g_side, self.seed_compat = bool(d_side), bool(g_side), bool(seed_compat)
        buf = SeedCompatBuffer if seed_compat else ReplayBuffer
        self.real_buffer = buf(buffer_size, code_dim)
        self.fake_buffer = buf(buffer_size, code_dim)

    def _term(self, codes: Tensor, buffer: torch.nn.Module, epoch: int) -> Tensor:
        width = codes.reshape(codes.shape[0], -1).shape[1]
        if width != buffer.dim:
            raise ValueError(
                f"regularizer.maem.code_dim={buffer.dim} but the discriminator outputs {width} values per "
                "sample; set regularizer.maem.code_dim to D's output size (model.discriminator.out_dim)"
            )
        if self.seed_compat:
            ent = buffer.entropy(codes)
        else:
            ent = manifold_entropy(codes, buffer.data, self.metric)
            buffer.push(codes)
        return -entropy_weight(self.sigma, epoch, self.ramp_epochs) * ent

    def d_terms(self, step: Step) -> dict[str, Tensor]:
        if not self.d_side or step.d_real is None:
            return {}
        return {"maem_entropy_real": self._term(step.d_real, self.real_buffer, step.epoch)}

    def g_terms(self, step: Step) -> dict[str, Tensor]:
        if not self.g_side:
            return {}
        return {"maem_entropy_fake": self._term(step.d_fake, self.fake_buffer, step.epoch)}
