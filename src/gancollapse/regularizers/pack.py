"""PacGAN packing (Lin, Khetan, Fanti & Oh, NeurIPS 2018): the discriminator judges m samples at once.

D sees m images of one kind (all real or all fake) concatenated along channels, (B, C, H, W) →
(B/m, m·C, H, W): a packed D tells a set of m samples from the data apart, so a collapsed G (whose m samples
look alike) is penalised (the paper's §3; its experiments use m = 2…4 with an unchanged DCGAN apart from D's
first layer).

Model surgery, applied once by :meth:`Pack.apply_to_nets`, so that ``regularizer=pack`` works with any
loss, any D and any other regularizer without touching the configs of the nets:

* D's first input layer (the first ``Conv2d``, or ``Linear`` for flat inputs) is rebuilt to take m·C channels
  (m·features), freshly initialised like DCGAN (N(0, 0.02)), spectral norm kept if the old layer had it;
* a forward pre-hook packs D's input, and a forward hook repeats each pack's output m times
  (``repeat_interleave``), so D still returns one row per image. Every loss is a mean over rows, so its value
  and gradients are exactly the packed loss's (each pack counted m/B times instead of 1/(B/m)); the module's
  concatenated real+fake forward, top-k and logging work unchanged. D's features (``return_features=True``)
  are repeated the same way.

The batch given to D must be a multiple of m (a pack never mixes real with fake). ``m = 1`` changes nothing.
Input-gradient penalties (WGAN-GP, R1) differentiate the sum of D's rows, so under packing they penalise the
pack's gradient counted once per member (m× the packed D's input gradient).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gancollapse.regularizers.base import Regularizer

_INPUT_LAYERS = (nn.Conv2d, nn.Linear)


def pack(x: Tensor, m: int) -> Tensor:
    """(B, C, …) → (B/m, m·C, …): groups of m consecutive samples concatenated along dim 1."""
    if x.shape[0] % m:
        raise ValueError(f"PacGAN: D got a batch of {x.shape[0]} samples, not a multiple of regularizer.pack.m={m}; "
                         "set dataset.batch_size (and any sampler/evaluator batch that D scores) to a multiple of m")
    return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


def unpack_scores(out: Tensor, m: int) -> Tensor:
    """(B/m, …) → (B, …): each pack's output repeated for each of its m members."""
    return out.repeat_interleave(m, dim=0)


def _first_input_layer(net: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute name, layer) of the first Conv2d/Linear in registration order (depth first)."""
    for name, child in net.named_children():
        if isinstance(child, _INPUT_LAYERS):
            return net, name, child
        found = _first_input_layer(child)
        if found is not None:
            return found
    return None


def _has_sn(layer: nn.Module) -> bool:
    params = getattr(layer, "parametrizations", None)
    return params is not None and "weight" in params


def widen_input(layer: nn.Module, m: int) -> nn.Module:
    """A fresh copy of ``layer`` taking m× its input channels (features), DCGAN-initialised N(0, 0.02)."""
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        new: nn.Module = nn.Conv2d(layer.in_channels * m, layer.out_channels, layer.kernel_size, layer.stride,
                                   layer.padding, layer.dilation, layer.groups, bias, layer.padding_mode)
    else:
        new = nn.Linear(layer.in_features * m, layer.out_features, bias)
    nn.init.normal_(new.weight, 0.0, 0.02)
    if bias:
        nn.init.zeros_(new.bias)
    new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if _has_sn(layer):
        spectral_norm(new)
    return new


class Pack(Regularizer):
    """PacGAN's packed discriminator (no loss term).

    Args:
        m: samples per pack (the paper's PacGAN2: 2). 1: the unpacked model.
    """

    def __init__(self, m: int = 2) -> None:
        super().__init__()
        if int(m) < 1:
            raise ValueError(f"regularizer.pack.m must be >= 1, got {m}")
        self.m = int(m)

    def apply_to_nets(self, generator: nn.Module, discriminator: nn.Module) -> None:
        if self.m == 1:
            return
        if getattr(discriminator, "_pacgan_m", None):
            raise ValueError("regularizer=pack: the discriminator is already packed (two pack regularizers?)")
        found = _first_input_layer(discriminator)
        if found is None:
            raise ValueError(f"regularizer=pack: {type(discriminator).__name__} has no Conv2d/Linear layer to widen")
        parent, name, layer = found
        setattr(parent, name, widen_input(layer, self.m))
        m = self.m

        def pack_input(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (pack(args[0], m), *args[1:])

        def unpack_output(_module: nn.Module, _args: tuple[Any, ...], out: Tensor | tuple[Tensor, ...]) -> Any:
            if isinstance(out, tuple):  # forward(x, return_features=True): (scores, features), one row per pack
                return tuple(unpack_scores(o, m) for o in out)
            return unpack_scores(out, m)

        discriminator.register_forward_pre_hook(pack_input)
        discriminator.register_forward_hook(unpack_output)
        discriminator._pacgan_m = m

    def extra_repr(self) -> str:
        return f"m={self.m}"

