"""The Transformer encoder (lecture sections 5, 8, 9, 10): Tasks 2.1 to 2.4.

Shapes: B batch, N tokens, D width, D_mlp hidden width of the MLP (4D in ViT).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from course_lib._checks import expect_floating, expect_size
from course_lib.attention import MultiHeadAttention
from course_lib.tasks import not_implemented  # noqa: F401  (the student edition's stubs raise it)


class MLP(nn.Module):
    """Task 2.1: the Transformer's MLP: Linear(D -> D_mlp), exact GELU, Linear(D_mlp -> D).

    Dropout (``dropout`` > 0) follows the GELU and the second Linear, as in ViT.
    Parameters: 2·D·D_mlp + D_mlp + D.

    Args:
        dim: D.
        mlp_dim: D_mlp.
        dropout: dropout probability.
    """

    def __init__(self, dim: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., D). Returns (..., D). GELU is the exact (erf) one: ``F.gelu(x)``."""
        expect_floating(x, "Task 2.1 MLP")
        expect_size(x, -1, self.dim, "Task 2.1 MLP", f"x of shape (..., D={self.dim})", "the last dimension")
        ### BEGIN SOLUTION
        x = self.drop(F.gelu(self.fc1(x)))  # (..., D_mlp)
        return self.drop(self.fc2(x))  # (..., D)
        ### END SOLUTION


class LayerNorm(nn.Module):
    """Task 2.2: LayerNorm from scratch: normalise each token over its D features.

    y = (x - mean) / sqrt(var + eps) · weight + bias, where mean and the biased
    variance (divide by D) are taken over the last dimension of each token
    separately: no statistics are shared across tokens or across the batch
    (unlike BatchNorm).

    ``fused=True`` calls PyTorch's kernel ``F.layer_norm`` (what training uses);
    the task is the hand-written path taken when ``fused=False``.

    Args:
        dim: D.
        eps: added to the variance (ViT and torchvision: 1e-6).
        fused: use ``F.layer_norm`` instead of the hand-written path.
    """

    def __init__(self, dim: int, eps: float = 1e-6, fused: bool = False) -> None:
        super().__init__()
        self.dim, self.eps, self.fused = dim, eps, fused
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (..., D). Returns (..., D)."""
        expect_floating(x, "Task 2.2 LayerNorm")
        expect_size(x, -1, self.dim, "Task 2.2 LayerNorm", f"x of shape (..., D={self.dim})", "the last dimension")
        if self.fused:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        ### BEGIN SOLUTION
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1), biased
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        ### END SOLUTION


class EncoderBlock(nn.Module):
    """Task 2.3: the pre-norm Transformer encoder block of ViT.

        z'_l = MSA(LN(z_{l-1})) + z_{l-1}
        z_l  = MLP(LN(z'_l)) + z'_l

    Submodules: ``norm1``, ``attn`` (Task 1.4), ``norm2``, ``mlp`` (Task 2.1).

    Args:
        dim: D.  heads: h.  mlp_dim: D_mlp.
        dropout: dropout in the MLP.
        fused: fused attention and LayerNorm kernels.
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, fused: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps, fused=fused)
        self.attn = MultiHeadAttention(dim, heads, fused=fused)
        self.norm2 = LayerNorm(dim, eps, fused=fused)
        self.mlp = MLP(dim, mlp_dim, dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args: x (B, N, D); mask as in Task 1.4; need_weights: also return the
        attention weights (B, h, N, N). Returns (B, N, D) or ``(out, weights)``."""
        ### BEGIN SOLUTION
        y = self.attn(self.norm1(x), mask=mask, need_weights=need_weights)
        y, weights = y if need_weights else (y, None)
        x = x + y  # first residual connection
        x = x + self.mlp(self.norm2(x))  # second residual connection
        return (x, weights) if need_weights else x
        ### END SOLUTION


class PostNormEncoderBlock(EncoderBlock):
    """Task 2.4: the post-norm block of the original Transformer (Vaswani et al. 2017).

        z'_l = LN(z_{l-1} + MSA(z_{l-1}))
        z_l  = LN(z'_l + MLP(z'_l))

    Same submodules and arguments as ``EncoderBlock``.
    """

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """As ``EncoderBlock.forward``."""
        ### BEGIN SOLUTION
        y = self.attn(x, mask=mask, need_weights=need_weights)
        y, weights = y if need_weights else (y, None)
        x = self.norm1(x + y)
        x = self.norm2(x + self.mlp(x))
        return (x, weights) if need_weights else x
        ### END SOLUTION
