"""Pixel conversions of uint8 (N, C, H, W) image tensors: to and from floats in [-1, 1], resizing, padding,
grey ↔ RGB, the random horizontal flip. Pure functions; every datamodule uses them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] → float [-1, 1] (x / 127.5 − 1)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] → uint8 [0, 255], rounded and clamped (the inverse of :func:`to_float`)."""
    return ((images.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_hflip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability ½."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device, generator=generator) < 0.5
    return torch.where(flip, images.flip(-1), images)


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Bilinear resize (no antialias) of a uint8 (N, C, H, W) tensor to size×size, in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = [F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
           for chunk in images.split(4096)]
    return torch.cat(out).round_().clamp_(0, 255).to(torch.uint8)


def pad_or_resize(images: Tensor, size: int) -> Tensor:
    """28 → 32 by zero padding 2 px each side (the usual 'MNIST padded to 32'); other sizes by resizing."""
    h = images.shape[-1]
    if size == h:
        return images
    if size > h and (size - h) % 2 == 0 and size - h <= 8:
        p = (size - h) // 2
        return F.pad(images, (p, p, p, p))
    return resize_uint8(images, size)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """Grey ↔ RGB: replicate one channel to three, or average three to one."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        return images.float().mean(dim=1, keepdim=True).round_().to(torch.uint8)
    raise ValueError(f"dataset.channels must be 1 or 3 for {c}-channel images, got {channels}")
