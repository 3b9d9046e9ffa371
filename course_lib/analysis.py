"""Analysis (lecture sections 15, 16, 17): Tasks 5.1 to 5.4.

Shapes: B batch, h heads, N + 1 tokens ([class] first), gh x gw patch grid.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from course_lib._checks import shape_error
from course_lib.tasks import not_implemented  # noqa: F401  (the student edition's stubs raise it)
from course_lib.vit import ViTConfig


def patch_centres(grid_size: int | tuple[int, int], patch_size: int) -> torch.Tensor:
    """Pixel coordinates (row, column) of every patch centre, row-major: (gh·gw, 2), float64."""
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    return (torch.stack([rows.flatten(), cols.flatten()], dim=1) + 0.5) * patch_size  # (N, 2)


def mean_attention_distance(
    attn: torch.Tensor, grid_size: int | tuple[int, int], patch_size: int, has_cls: bool = True
) -> torch.Tensor:
    """Task 5.1: mean attention distance of each head, in pixels (ViT Fig. 7).

    For every query patch, the attention-weighted average of the pixel
    distance from its centre to each key patch's centre; then averaged over
    queries (and images). With ``has_cls``, the [class] token's row and column
    are dropped and each row is renormalised to sum to 1 over the patches.
    Distances are Euclidean between patch centres (``patch_centres``).

    Args:
        attn: attention weights (B, h, T, T) or (h, T, T), T = gh·gw (+1 with the class token).
        grid_size: gh = gw, or (gh, gw).
        patch_size: P, in pixels.
        has_cls: whether token 0 is the [class] token.

    Returns:
        (h,) float64, the mean attention distance of each head in pixels.
    """
    where = "Task 5.1 mean_attention_distance"
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    T = gh * gw + int(has_cls)
    if attn.dim() not in (3, 4) or attn.shape[-1] != T or attn.shape[-2] != T:
        raise shape_error(where, f"weights of shape (B, h, T, T) or (h, T, T) with T = {gh}*{gw}{' + 1' if has_cls else ''} = {T}", attn)
    ### BEGIN SOLUTION
    attn = attn.double()
    if attn.dim() == 3:
        attn = attn[None]  # (1, h, T, T)
    if has_cls:
        attn = attn[..., 1:, 1:]  # (B, h, N, N)
        attn = attn / attn.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    centres = patch_centres((gh, gw), patch_size)  # (N, 2)
    distance = torch.cdist(centres, centres).to(attn.device)  # (N, N)
    per_query = (attn * distance).sum(dim=-1)  # (B, h, N)
    return per_query.mean(dim=(0, 2))  # (h,)
    ### END SOLUTION


def fit_power_law(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """Task 5.2: fit a Kaplan-style power law y = (x_c / x)^α by least squares in log-log space.

    log y = α·log x_c - α·log x is a straight line in log x: fit its slope
    (-α) and intercept (α·log x_c), then recover x_c.

    Args:
        x: positive sizes (parameters N, data D or compute C), at least two distinct.
        y: positive losses, same length.

    Returns:
        (x_c, alpha) as Python floats; e.g. Kaplan et al.'s L(N) has
        x_c = N_c ≈ 8.8e13 and alpha = α_N ≈ 0.076.
    """
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"Task 5.2 fit_power_law: x and y need the same length >= 2, got {x.numel()} and {y.numel()}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("Task 5.2 fit_power_law: a power law in log-log space needs positive x and y")
    ### BEGIN SOLUTION
    A = torch.stack([torch.log(x), torch.ones_like(x)], dim=1)  # (n, 2)
    slope, intercept = torch.linalg.lstsq(A, torch.log(y)[:, None]).solution.flatten().tolist()
    return math.exp(-intercept / slope), -slope  # x_c, alpha
    ### END SOLUTION


def count_parameters(config: ViTConfig) -> int:
    """Task 5.3: the number of parameters of a VisionTransformer, from its config alone.

    The layout is torchvision's (and ``VisionTransformer``'s): patch embedding
    (conv with bias), class token, position embedding for N + 1 tokens, L blocks
    of [LN, attention 4D² + 4D, LN, MLP 2·D·D_mlp + D_mlp + D], a final LN and
    a Linear head with bias.

    Args:
        config: the ViTConfig.

    Returns:
        the count; 86,567,656 for ``vit_config("B/16")``.
    """
    ### BEGIN SOLUTION
    c = config
    D, K, N = c.dim, c.num_classes, c.num_patches
    patch = c.in_channels * c.patch_size**2 * D + D
    tokens = D + (N + 1) * D  # class token, position embedding
    block = 2 * (2 * D) + (4 * D * D + 4 * D) + (2 * D * c.mlp_dim + c.mlp_dim + D)
    return patch + tokens + c.depth * block + 2 * D + (D * K + K)
    ### END SOLUTION


def count_flops(config: ViTConfig) -> int:
    """Task 5.4: floating-point operations of one forward pass on ONE image.

    Count 2 FLOPs per multiply-add of the matrix products only (the patch
    convolution, every Linear, q kᵀ and A v), as
    ``torch.utils.flop_counter.FlopCounterMode`` does; LayerNorm, softmax, GELU
    and additions are left out. With T = N + 1 tokens, one block costs
    2·T·D·3D (qkv) + 2·T·T·D (q kᵀ) + 2·T·T·D (A v) + 2·T·D·D (proj) + 2·2·T·D·D_mlp (MLP).

    Args:
        config: the ViTConfig.

    Returns:
        FLOPs per image (about 35.1 GFLOPs for ``vit_config("B/16")``).
    """
    ### BEGIN SOLUTION
    c = config
    N, D, T = c.num_patches, c.dim, c.num_patches + 1
    patch = 2 * N * (c.in_channels * c.patch_size**2) * D
    block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * c.mlp_dim
    return patch + c.depth * block + 2 * D * c.num_classes
    ### END SOLUTION
