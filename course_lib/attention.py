"""Attention (lecture sections 2, 6, 7, 12): Tasks 1.1 to 1.6.

Shapes follow the legend in ``course_lib/__init__.py``: B batch, N query
tokens, M key/value tokens, D width, h heads, d = D / h head width.

Every attention module has two paths: the hand-written one (Task 1.1, returns
the attention weights, good for teaching and plots) and PyTorch's fused kernel
``F.scaled_dot_product_attention`` (fast, memory-light, used for training).
``fused=True`` picks the kernel; asking for the weights always takes the
hand-written path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from course_lib._checks import expect_floating, expect_rank, expect_size, shape_error
from course_lib.tasks import not_implemented  # noqa: F401  (the student edition's stubs raise it)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Task 1.1: attention by hand, softmax(q kᵀ / √d) v, returning the weights too.

    Args:
        q: queries (..., N, d).
        k: keys (..., M, d).
        v: values (..., M, d_v).
        mask: optional, broadcastable to (..., N, M). A boolean mask says which
            keys each query may attend to (True = attend, as in
            ``F.scaled_dot_product_attention``); a floating-point mask is added
            to the scores before the softmax (use -inf to block).

    Returns:
        out: (..., N, d_v), the weighted sums of the values.
        weights: (..., N, M), the attention matrix A; each row sums to 1.
        A query whose every key is masked attends to nothing: its row of
        weights and its output are 0 (not NaN).
    """
    where = "Task 1.1 scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        expect_floating(t, where, name)
        if t.dim() < 2:
            raise shape_error(where, f"{name} of shape (..., tokens, features)", t)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{where}: q and k must have the same last dimension d, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{where}: k and v must have the same number of tokens M, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if mask is not None and not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{where}: mask must be bool (True = attend) or float (added to the scores), got {mask.dtype}")
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., N, M)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)  # (..., N, M)
    weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows: softmax of all -inf is NaN
    return weights @ v, weights  # (..., N, d_v), (..., N, M)
    ### END SOLUTION


def causal_mask(N: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Task 1.2: the causal (autoregressive) mask: token t attends to tokens 0..t only.

    Args:
        N: number of tokens.
        device: where to create the mask.

    Returns:
        a bool tensor (N, N) with True where query i may attend to key j, i.e. j <= i
        (lower triangle and diagonal). Passed as ``mask`` it sets the future to -inf.
    """
    if N < 1:
        raise ValueError(f"Task 1.2 causal_mask: N must be a positive number of tokens, got {N}")
    ### BEGIN SOLUTION
    return torch.ones(N, N, dtype=torch.bool, device=device).tril()
    ### END SOLUTION


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, fused: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention for (B, h, N, d) heads: PyTorch's fused kernel, or Task 1.1 by hand.

    Returns ``(out, weights)``; ``weights`` is None on the fused path (the fused
    kernel never materialises the (B, h, N, M) matrix; that is why it is fast).
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    return scaled_dot_product_attention(q, k, v, mask)


class SingleHeadAttention(nn.Module):
    """Task 1.3: single-head self-attention, SA(z) = softmax(q kᵀ / √d) v (ViT appendix A).

    [q, k, v] = z U_qkv with one linear layer ``qkv`` whose output rows are
    ordered [q; k; v], each d wide.

    Args:
        dim: D, width of the tokens.
        head_dim: d, width of q, k, v (and of the output).
    """

    def __init__(self, dim: int, head_dim: int) -> None:
        super().__init__()
        self.dim, self.head_dim = dim, head_dim
        self.qkv = nn.Linear(dim, 3 * head_dim)  # U_qkv: D -> 3d, rows [q; k; v]

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: z (B, N, D); mask as in Task 1.1. Returns (out (B, N, d), weights (B, N, N))."""
        where = "Task 1.3 SingleHeadAttention"
        expect_floating(z, where)
        expect_rank(z, 3, where, "z of shape (B, N, D)")
        expect_size(z, -1, self.dim, where, f"z of shape (B, N, D={self.dim})", "D")
        ### BEGIN SOLUTION
        q, k, v = self.qkv(z).chunk(3, dim=-1)  # each (B, N, d)
        return scaled_dot_product_attention(q, k, v, mask)
        ### END SOLUTION


class MultiHeadAttention(nn.Module):
    """Task 1.4: multi-head self-attention, MSA(z) = [SA_1(z); ...; SA_h(z)] U_msa.

    One packed projection ``qkv`` (D -> 3D) whose weight rows are [q; k; v],
    laid out like ``nn.MultiheadAttention.in_proj_weight``; within q (and k, v)
    head i owns rows i*d .. (i+1)*d - 1. ``proj`` is U_msa (D -> D).
    Parameters: 4D² + 4D (with biases).

    Args:
        dim: D, token width.
        heads: h, number of heads; D must be divisible by h (d = D / h).
        qkv_bias: whether ``qkv`` has a bias (ViT: yes).
        fused: use ``F.scaled_dot_product_attention`` unless weights are asked for.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"MultiHeadAttention: width D={dim} is not divisible by heads h={heads} (d = D / h must be whole)")
        self.dim, self.heads, self.head_dim, self.fused = dim, heads, dim // heads, fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # rows [q; k; v], each (D, D)
        self.proj = nn.Linear(dim, dim)  # U_msa

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: tokens (B, N, D).
            mask: optional, broadcastable to (B, h, N, N); bool (True = attend) or additive.
            need_weights: also return the attention weights (hand-written path).

        Returns:
            out (B, N, D), or ``(out, weights (B, h, N, N))`` when ``need_weights``.
            Use ``attend(q, k, v, mask, fused=...)`` for the attention itself.
        """
        where = "Task 1.4 MultiHeadAttention"
        expect_floating(x, where)
        expect_rank(x, 3, where, "x of shape (B, N, D)")
        expect_size(x, -1, self.dim, where, f"x of shape (B, N, D={self.dim})", "D")
        ### BEGIN SOLUTION
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim)  # (B, N, 3, h, d)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (B, N, h, d) -> (B, h, N, d)
        out, weights = attend(q, k, v, mask, fused=self.fused and not need_weights)  # (B, h, N, d)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return (out, weights) if need_weights else out
        ### END SOLUTION


class CrossAttention(nn.Module):
    """Task 1.5: cross-attention: queries from x, keys and values from a context.

    ``q`` maps x (D -> D); ``kv`` maps the context (D_ctx -> 2D), rows [k; v];
    ``proj`` is the output projection (D -> D). Heads split as in Task 1.4.

    Args:
        dim: D, width of x.
        heads: h; D must be divisible by h.
        context_dim: D_ctx, width of the context (default D).
        fused: use ``F.scaled_dot_product_attention`` unless weights are asked for.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, fused: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"CrossAttention: width D={dim} is not divisible by heads h={heads}")
        self.dim, self.heads, self.head_dim, self.fused = dim, heads, dim // heads, fused
        self.context_dim = context_dim or dim
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(self.context_dim, 2 * dim)  # rows [k; v]
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: queries' tokens (B, N, D).
            context: (B, M, D_ctx), e.g. image tokens for a text decoder.
            mask: optional, broadcastable to (B, h, N, M).
            need_weights: also return the weights (B, h, N, M).

        Returns:
            out (B, N, D), or ``(out, weights)`` when ``need_weights``.
        """
        where = "Task 1.5 CrossAttention"
        expect_floating(x, where, "x")
        expect_floating(context, where, "context")
        expect_rank(x, 3, where, "x of shape (B, N, D)")
        expect_rank(context, 3, where, "context of shape (B, M, D_ctx)")
        expect_size(x, -1, self.dim, where, f"x of shape (B, N, D={self.dim})", "D")
        expect_size(context, -1, self.context_dim, where, f"context of shape (B, M, D_ctx={self.context_dim})", "D_ctx")
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"{where}: x {tuple(x.shape)} and context {tuple(context.shape)} must have the same batch size B")
        ### BEGIN SOLUTION
        B, N, D = x.shape
        M = context.shape[1]
        q = self.q(x).reshape(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)
        kv = self.kv(context).reshape(B, M, 2, self.heads, self.head_dim)  # (B, M, 2, h, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, M, d)
        out, weights = attend(q, k, v, mask, fused=self.fused and not need_weights)  # (B, h, N, d)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return (out, weights) if need_weights else out
        ### END SOLUTION


class GatedCrossAttention(nn.Module):
    """Task 1.6: gated cross-attention (Flamingo): y + tanh(α) · CrossAttention(y, context).

    α is a learned scalar initialised to 0, so at initialisation the layer is
    the identity and a pretrained model inserted around it is unchanged.

    Args: as ``CrossAttention``.
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, fused: bool = True) -> None:
        super().__init__()
        self.xattn = CrossAttention(dim, heads, context_dim, fused=fused)
        self.alpha = nn.Parameter(torch.zeros(1))  # tanh(0) = 0: identity at init

    def forward(self, y: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: y (B, N, D); context (B, M, D_ctx); mask as CrossAttention. Returns (B, N, D)."""
        ### BEGIN SOLUTION
        return y + torch.tanh(self.alpha) * self.xattn(y, context, mask)
        ### END SOLUTION
