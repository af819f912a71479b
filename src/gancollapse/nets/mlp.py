"""MLP generator/discriminator of the Mode_Collapse toy seed (4 hidden layers of 256)."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``in_dim → hidden×depth → out_dim`` with LeakyReLU; ``last_hidden_activation='tanh'`` gives the
    seed generator (LeakyReLU after the first three hidden layers, Tanh after the fourth).

    ``forward(x, return_features=True)`` also returns the last hidden activation (B, hidden), the input of the
    output layer (:mod:`gancollapse.nets`)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 4,
        negative_slope: float = 0.01,
        last_hidden_activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        for key, val in {"in_dim": in_dim, "out_dim": out_dim, "hidden": hidden, "depth": depth}.items():
            if int(val) < 1:
                raise ValueError(f"model MLP {key} must be >= 1, got {val}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        layers: list[nn.Module] = []
        width = in_dim
        for i in range(depth):
            layers.append(nn.Linear(width, hidden))
            last = i == depth - 1
            if last and last_hidden_activation == "tanh":
                layers.append(nn.Tanh())
            else:
                layers.append(nn.LeakyReLU(negative_slope))
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        x = x.reshape(x.shape[0], -1)
        if not return_features:
            return self.net(x)
        *body, head = self.net
        for layer in body:
            x = layer(x)
        return head(x), x
