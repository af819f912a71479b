"""Generator and discriminator architectures.

Discriminator features. A discriminator *has features* when ``forward(x, return_features=True)`` returns
``(output, features)``: ``output`` is what ``forward(x)`` returns and ``features`` (B, …) the input of its last
layer, from the same pass (Dist-GAN's f(x); GDPP's φ(x)). The platform's discriminators all have them
(:class:`~gancollapse.nets.mlp.MLP`, :class:`~gancollapse.nets.dcgan.DCGANDiscriminator`,
:class:`~gancollapse.nets.mnist.MnistDiscriminator`, ALAE's ``LatentDiscriminator``).
"""

from __future__ import annotations

import inspect

from torch import nn


def returns_features(net: nn.Module) -> bool:
    """Whether ``net.forward`` accepts ``return_features`` (the protocol in this module's docstring)."""
    try:
        return "return_features" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return False
