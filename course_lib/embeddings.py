"""Embeddings (lecture sections 4 and 11): Tasks 3.1 to 3.5.

Shapes: B batch, C channels, H, W image size, P patch size, gh = H / P and
gw = W / P the patch grid, N = gh·gw patches, D width.

Patch order (used everywhere in the course): patches are numbered row by row,
left to right, top to bottom (patch n sits at grid row n // gw, column n % gw).
Inside a patch the P²·C values are flattened channel first, then row, then
column: (C, P, P), the order of ``nn.Conv2d``'s weight and of ``F.unfold``.
"""
from __future__ import annotations

import torch
from torch import nn

from course_lib._checks import expect_floating, expect_rank, expect_size, shape_error
from course_lib.tasks import not_implemented  # noqa: F401  (the student edition's stubs raise it)


def _check_image(x: torch.Tensor, patch_size: int, where: str) -> None:
    expect_floating(x, where, "image")
    expect_rank(x, 4, where, "images of shape (B, C, H, W)")
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise shape_error(where, f"H and W divisible by the patch size P={patch_size}", x,
                          f"{H}x{W} leaves {H % patch_size} rows and {W % patch_size} columns over; resize or crop the image")


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Task 3.1: cut images into non-overlapping P x P patches and flatten each one.

    Args:
        x: images (B, C, H, W); H and W divisible by P.
        patch_size: P.

    Returns:
        (B, N, C·P·P): patch n of the row-major grid, flattened in (C, P, P) order
        (see the module docstring). Equals ``F.unfold(x, P, stride=P).transpose(1, 2)``.
    """
    _check_image(x, patch_size, "Task 3.1 patchify")
    ### BEGIN SOLUTION
    B, C, H, W = x.shape
    P = patch_size
    x = x.reshape(B, C, H // P, P, W // P, P)  # (B, C, gh, P, gw, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C·P·P)
    ### END SOLUTION


class PatchEmbedding(nn.Module):
    """Task 3.2: the patch embedding x_p E, as a strided convolution.

    A Conv2d with kernel P and stride P applies the same linear map
    E ∈ R^{(C·P²) x D} to every patch: ``proj(x)`` equals
    ``patchify(x, P) @ proj.weight.reshape(D, -1).T + proj.bias``.

    Args:
        in_channels: C.  patch_size: P.  dim: D.
    """

    def __init__(self, in_channels: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.in_channels, self.patch_size, self.dim = in_channels, patch_size, dim
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns the patch tokens (B, N, D), in row-major patch order."""
        _check_image(x, self.patch_size, "Task 3.2 PatchEmbedding")
        expect_size(x, 1, self.in_channels, "Task 3.2 PatchEmbedding", f"images of shape (B, C={self.in_channels}, H, W)", "C")
        ### BEGIN SOLUTION
        x = self.proj(x)  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)
        ### END SOLUTION


def sinusoidal_position_embedding(num_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Task 3.3: the 1D sinusoidal position embedding of Vaswani et al. (§3.5).

        PE[pos, 2i]   = sin(pos / base^(2i / D))
        PE[pos, 2i+1] = cos(pos / base^(2i / D))

    Column j of the result ("dim" j) is one sinusoid over positions, with
    wavelength from 2π (j = 0) up to base·2π.

    Args:
        num_positions: N.  dim: D, even.  base: 10000 in the paper.

    Returns:
        (N, D) in the default float dtype.
    """
    if dim % 2:
        raise ValueError(f"Task 3.3 sinusoidal_position_embedding: D={dim} must be even (sin/cos pairs)")
    ### BEGIN SOLUTION
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (N, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)  # (D/2,)
    angle = pos / base ** (two_i / dim)  # (N, D/2)
    pe = torch.empty(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(torch.get_default_dtype())
    ### END SOLUTION


def sincos_2d_position_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Task 3.4: the fixed 2D sin-cos position embedding (MoCo v3, big_vision).

    With D/4 frequencies ω_f = 1 / temperature^(f / (D/4 - 1)), f = 0 .. D/4 - 1,
    the patch at grid row y, column x gets

        [sin(x ω), cos(x ω), sin(y ω), cos(y ω)]   (each block D/4 wide).

    Args:
        grid_h: gh, rows of patches.  grid_w: gw, columns.
        dim: D, divisible by 4.
        temperature: 10000 as in big_vision.

    Returns:
        (gh·gw, D), rows in the row-major patch order.
    """
    if dim % 4:
        raise ValueError(f"Task 3.4 sincos_2d_position_embedding: D={dim} must be divisible by 4 ([sin x, cos x, sin y, cos y])")
    ### BEGIN SOLUTION
    y, x = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    f = torch.arange(dim // 4, dtype=torch.float64)
    omega = 1.0 / temperature ** (f / max(dim // 4 - 1, 1))  # (D/4,)
    x = x.flatten()[:, None] * omega[None, :]  # (N, D/4)
    y = y.flatten()[:, None] * omega[None, :]  # (N, D/4)
    pe = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)  # (N, D)
    return pe.to(torch.get_default_dtype())
    ### END SOLUTION


class ClassTokenPositionEmbedding(nn.Module):
    """Task 3.5: prepend the learned [class] token, then add learned position embeddings.

        z_0 = [x_cls; x_p^1 E; ...; x_p^N E] + E_pos

    The [class] token goes first (index 0); ``pos_embedding`` has one row per
    token, the class token included (torchvision's layout).

    Args:
        num_patches: N.  dim: D.
        pos_std: std of ``pos_embedding`` at init (0.02 in ViT and timm).
    """

    def __init__(self, num_patches: int, dim: int, pos_std: float = 0.02) -> None:
        super().__init__()
        self.num_patches, self.dim = num_patches, dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # x_cls, (1, 1, D)
        self.pos_embedding = nn.Parameter(torch.empty(1, num_patches + 1, dim).normal_(std=pos_std))  # E_pos, (1, N+1, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x patch tokens (B, N, D). Returns (B, N+1, D), class token first."""
        where = "Task 3.5 ClassTokenPositionEmbedding"
        expect_floating(x, where)
        expect_rank(x, 3, where, "patch tokens of shape (B, N, D)")
        expect_size(x, 1, self.num_patches, where, f"patch tokens of shape (B, N={self.num_patches}, D)", "N")
        expect_size(x, 2, self.dim, where, f"patch tokens of shape (B, N, D={self.dim})", "D")
        ### BEGIN SOLUTION
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, N+1, D)
        return x + self.pos_embedding
        ### END SOLUTION
