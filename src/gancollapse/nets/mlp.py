"""MLP generators and discriminators of the toy experiments.

Defaults: the Mode_Collapse toy seed (4 hidden layers of 256, LeakyReLU; the generator's last hidden layer Tanh).
The options give the 2D-mixture nets of the mode-collapse papers:

* Unrolled GAN reference notebook (poolio/unrolled_gan) and GDPP (M-Elfeki/GDPP ``gdppgan_Synthetic.py``):
  2 hidden layers of 128, Tanh, orthogonal initialisation with gain 1.4, zero biases (``conf/model/mlp_unrolled``);
* PacGAN (fjxmlzn/PacGAN ``synthetic_data_experiments/*/pacgan_task.py``): G with 4 hidden layers of 400,
  Linear without bias → BatchNorm → ReLU; D with 3 maxout layers of 200 units × 5 pieces (Goodfellow et al.,
  "Maxout Networks", ICML 2013); weights N(0, 0.02), zero biases (``conf/model/mlp_pacgan``).
"""

from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS = ("leaky_relu", "relu", "tanh")
INITS = ("default", "normal", "orthogonal")


class Maxout(nn.Module):
    """Maxout unit (Goodfellow et al., ICML 2013, Eq. 1): the max over ``pieces`` groups of a linear layer's
    outputs, (B, units·pieces) → (B, units); piece j of unit i is output i·pieces + j (blocks' ``Maxout``)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = int(pieces)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], x.shape[-1] // self.pieces, self.pieces).amax(dim=-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def _activation(name: str, negative_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return nn.ReLU() if name == "relu" else nn.Tanh()


def init_linear(layer: nn.Linear, init: str, std: float = 0.02, gain: float = 1.0) -> None:
    """``normal``: weights N(0, std²) (PacGAN's ``IsotropicGaussian(0.02)``); ``orthogonal``: an orthogonal
    matrix times ``gain`` (TF's ``orthogonal_initializer(gain=1.4)`` in the Unrolled GAN notebook); biases 0
    (both codes' default). ``default``: PyTorch's own initialisation, untouched."""
    if init == "default":
        return
    if init == "normal":
        nn.init.normal_(layer.weight, 0.0, std)
    else:
        nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """``in_dim → hidden×depth → out_dim``.

    Each hidden layer is Linear (``bias``) → BatchNorm (``batch_norm``) → ``activation``, or, with
    ``maxout`` > 1, a Linear to ``hidden·maxout`` units followed by :class:`Maxout` (no other activation).
    The output layer is a plain Linear with bias.

    Args:
        activation: ``leaky_relu`` (seed), ``relu`` or ``tanh``.
        last_hidden_activation: the last hidden layer's activation; null: ``activation`` (the seed generator
            sets ``tanh``).
        negative_slope: LeakyReLU slope (0.01).
        batch_norm: BatchNorm1d before each hidden activation (PacGAN's G), momentum ``bn_momentum``.
        bias: biases of the hidden Linear layers (PacGAN's G has none; the output layer always has one).
        maxout: pieces per maxout unit (1: off).
        init / init_std / init_gain: :func:`init_linear` for every Linear layer.

    ``forward(x, return_features=True)`` also returns the last hidden activation (B, hidden), the input of the
    output layer (:mod:`gancollapse.nets`).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 4,
        negative_slope: float = 0.01,
        last_hidden_activation: str | None = None,
        activation: str = "leaky_relu",
        batch_norm: bool = False,
        bn_momentum: float = 0.1,
        bias: bool = True,
        maxout: int = 1,
        init: str = "default",
        init_std: float = 0.02,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        for key, val in {"in_dim": in_dim, "out_dim": out_dim, "hidden": hidden, "depth": depth, "maxout": maxout}.items():
            if int(val) < 1:
                raise ValueError(f"model MLP {key} must be >= 1, got {val}")
        last_hidden_activation = last_hidden_activation or activation
        for key, val in (("activation", activation), ("last_hidden_activation", last_hidden_activation)):
            if val not in ACTIVATIONS:
                raise ValueError(f"model MLP {key}={val!r}: unknown; use one of {', '.join(ACTIVATIONS)}")
        if init not in INITS:
            raise ValueError(f"model MLP init={init!r}: unknown; use one of {', '.join(INITS)}")
        if not 0.0 <= float(bn_momentum) <= 1.0:
            raise ValueError(f"model MLP bn_momentum={bn_momentum}: must be in [0, 1]")
        if int(maxout) > 1 and batch_norm:
            raise ValueError("model MLP maxout > 1 with batch_norm=true: no paper's net has both; set one of them off")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        pieces = int(maxout)
        layers: list[nn.Module] = []
        width = in_dim
        for i in range(depth):
            layers.append(nn.Linear(width, hidden * pieces, bias=bool(bias)))
            if pieces > 1:
                layers.append(Maxout(pieces))
            else:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(hidden, momentum=float(bn_momentum)))
                layers.append(_activation(last_hidden_activation if i == depth - 1 else activation, negative_slope))
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                init_linear(layer, init, float(init_std), float(init_gain))

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        x = x.reshape(x.shape[0], -1)
        if not return_features:
            return self.net(x)
        *body, head = self.net
        for layer in body:
            x = layer(x)
        return head(x), x
