"""Per-image random augmentations of a whole batch, on its device, without a Python loop over images.

torchvision's v2 transforms draw one set of random parameters per call
(``data.GroupedTransform`` calls them per group). The transforms here draw
one set per image and apply all of them in a fixed number of tensor
operations, whatever the batch size: a random crop is one gather, a flip one
``torch.where``. That is what keeps a GPU busy (and CUDA-graph friendly in
the model behind it). Nothing here is an exercise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_at(x: Tensor, padding: int, top: Tensor, left: Tensor, fill: float = 0.0) -> Tensor:
    """Pad by ``padding`` with ``fill``, then crop (H, W) at per-image offsets, in one gather.

    Args:
        x: (B, C, H, W), any dtype.
        padding: pixels added on every side.
        top, left: (B,) integer offsets in 0..2·padding on x's device (``padding``: no shift).
        fill: the value shifted in (the background).

    Returns:
        (B, C, H, W), same dtype and device.
    """
    B, C, H, W = x.shape
    padded = F.pad(x, (padding,) * 4, value=fill)  # (B, C, H + 2p, W + 2p)
    rows = (top[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(B, device=x.device)[:, None, None, None]  # (B, 1, 1, 1)
    channel = torch.arange(C, device=x.device)[None, :, None, None]  # (1, C, 1, 1)
    return padded[batch, channel, rows, cols]


def random_crop(x: Tensor, padding: int, fill: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """``v2.RandomCrop(H, padding=padding)`` drawn per image: shifts uniform over -padding..padding.

    Args:
        x: (B, C, H, W).
        padding: the largest shift in pixels.
        fill: the value shifted in.
        generator: draws the offsets, on x's device (default: torch's global generator).
    """
    top, left = torch.randint(0, 2 * padding + 1, (2, x.shape[0]), generator=generator, device=x.device)
    return crop_at(x, padding, top, left, fill)


def random_shift(x: Tensor, max_shift: int, fill: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """``v2.RandomAffine(translate=...)``'s whole-pixel shifts drawn per image: round(U(-m, m)) per axis,
    so small shifts are likelier than with ``random_crop`` (for m = 1: no shift with probability 1/2).

    Args:
        x: (B, C, H, W).
        max_shift: m, the largest shift in pixels.
        fill: the value shifted in.
        generator: on x's device.
    """
    u = torch.rand(2, x.shape[0], generator=generator, device=x.device)
    top, left = torch.round((2 * u - 1) * max_shift).long() + max_shift
    return crop_at(x, max_shift, top, left, fill)


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability ``p``. x: (B, C, H, W); generator on x's device."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class BatchCropFlip:
    """Per-image random crop (with padding) or shift, and optional horizontal flip, for ``TensorLoader``.

    Args:
        padding: the largest shift in pixels.
        flip: also mirror half of the images (not for digits: a mirrored 2 is no digit).
        fill: the background value shifted in.
        seed: seeds the transform's own generator (made on the batch's device), so a run is reproducible.
        shifts: ``"crop"`` (``random_crop``: uniform) or ``"affine"`` (``random_shift``: small ones likelier).
    """

    def __init__(self, padding: int, flip: bool = True, fill: float = 0.0, seed: int = 0, shifts: str = "crop"):
        if shifts not in ("crop", "affine"):
            raise ValueError(f"BatchCropFlip: shifts must be 'crop' or 'affine', got {shifts!r}")
        self.padding, self.flip, self.fill, self.seed, self.shifts = padding, flip, fill, seed, shifts
        self.generator: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        shift = random_crop if self.shifts == "crop" else random_shift
        x = shift(x, self.padding, self.fill, self.generator)
        return random_hflip(x, generator=self.generator) if self.flip else x

    def __repr__(self) -> str:
        return f"BatchCropFlip(padding={self.padding}, flip={self.flip}, fill={self.fill}, shifts={self.shifts!r})"
