"""The Vision Transformer (lecture sections 4 and 16): ViTConfig, variants, Task 4.1.

Shapes: B batch, C channels, H = W = image_size, P patch size, N patches,
N + 1 tokens with the [class] token, D width, h heads, K classes.

    z_0 = [x_cls; x_p^1 E; ...; x_p^N E] + E_pos
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}        l = 1 .. L
    z_l  = MLP(LN(z'_l)) + z'_l
    y    = LN(z_L^0)                          (the [class] token) -> head -> logits
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from course_lib._checks import expect_floating, expect_rank, shape_error
from course_lib.embeddings import ClassTokenPositionEmbedding, PatchEmbedding
from course_lib.encoder import EncoderBlock, LayerNorm
from course_lib.tasks import not_implemented  # noqa: F401  (the student edition's stubs raise it)


@dataclass
class ViTConfig:
    image_size: int = 224  # H = W of the input images
    patch_size: int = 16  # P: patches are P x P pixels
    in_channels: int = 3  # C: 3 for RGB, 1 for grey digits
    num_classes: int = 1000  # K: outputs of the classification head
    dim: int = 768  # D: width of every token
    depth: int = 12  # L: number of encoder blocks
    heads: int = 12  # h: attention heads per block (d = D / h)
    mlp_dim: int = 3072  # D_mlp: hidden width of the MLP (4D in ViT)
    dropout: float = 0.0  # dropout after the embedding and in the MLPs
    fused: bool = True  # fused kernels (F.scaled_dot_product_attention, F.layer_norm); False = hand-written paths
    eps: float = 1e-6  # LayerNorm epsilon (torchvision and big_vision use 1e-6)
    # std of the Linear weights at init (truncated normal); 0.02 as in timm and big_vision. None: 1/sqrt(fan_in).
    # A Linear scales its input by about std * sqrt(fan_in): 0.55 at D = 768 but 0.16 at D = 64, where the
    # residual branches and the [class] token's view of the patches start almost silent (docs/TRAINING.md).
    init_std: float | None = 0.02
    pos_std: float = 0.02  # std of the learned position embedding at init (ViT, timm); the patch tokens' is ~1

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size={self.image_size} is not divisible by patch_size={self.patch_size} "
                f"({self.image_size % self.patch_size} pixels left over)"
            )
        if self.dim % self.heads:
            raise ValueError(f"ViTConfig: dim D={self.dim} is not divisible by heads h={self.heads}")

    @property
    def grid_size(self) -> int:
        """Patches per side, H / P."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """N = HW / P²."""
        return self.grid_size**2

    @property
    def head_dim(self) -> int:
        """d = D / h."""
        return self.dim // self.heads


# Width D, depth L, MLP width, heads of the variants in Dosovitskiy et al. and Zhai et al. (ViT-G).
SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "G": (1664, 48, 8192, 16),
}

# Small configurations that train on a laptop CPU.
PRESETS: dict[str, dict] = {
    # scikit-learn's 8x8 grey digits: 16 patches of 2x2.
    "digits": dict(image_size=8, patch_size=2, in_channels=1, num_classes=10, dim=64, depth=4, heads=4, mlp_dim=128),
    # CIFAR-10, 32x32 RGB: 64 patches of 4x4.
    "cifar": dict(image_size=32, patch_size=4, in_channels=3, num_classes=10, dim=192, depth=6, heads=3, mlp_dim=384),
    # the smallest model the tests and self-checks use.
    "test": dict(image_size=8, patch_size=4, in_channels=3, num_classes=5, dim=16, depth=2, heads=2, mlp_dim=32),
}


def vit_config(name: str, **overrides) -> ViTConfig:
    """A ViTConfig from a variant name.

    Args:
        name: ``"Ti/16"``, ``"S/16"``, ``"B/16"``, ``"B/32"``, ``"L/16"``, ``"H/14"``,
            ``"G/14"`` (any size and patch size combine; 224 px, 3 channels,
            1000 classes), or a preset: ``"digits"`` (8x8 grey, 10 classes),
            ``"cifar"`` (32x32 RGB, 10 classes), ``"test"`` (tiny, for tests).
        overrides: any ViTConfig field, e.g. ``num_classes=10``.

    Returns:
        the config.
    """
    if name in PRESETS:
        return ViTConfig(**{**PRESETS[name], **overrides})
    match = re.fullmatch(r"(Ti|S|B|L|H|G)/(\d+)", name)
    if match is None:
        known = ", ".join([f"{s}/16" for s in SIZES] + list(PRESETS))
        raise ValueError(f"unknown ViT variant {name!r}; use SIZE/PATCH such as {known}")
    dim, depth, mlp_dim, heads = SIZES[match.group(1)]
    fields = dict(patch_size=int(match.group(2)), dim=dim, depth=depth, mlp_dim=mlp_dim, heads=heads)
    return ViTConfig(**{**fields, **overrides})


def _init_weights(module: nn.Module, std: float | None = 0.02) -> None:
    """ViT-style initialisation: truncated normal Linear weights (std ``std``, None: 1/sqrt(fan_in)), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std if std is not None else math.sqrt(1 / module.in_features))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):  # the patch embedding: like a linear map of the flattened patch
        fan_in = module.in_channels * math.prod(module.kernel_size)
        nn.init.trunc_normal_(module.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """Task 4.1: the Vision Transformer (Dosovitskiy et al. 2021), encoder only.

    Submodules (built for you): ``patch_embed`` (Task 3.2), ``embed`` (Task 3.5),
    ``drop``, ``blocks`` (L x Task 2.3), ``norm`` (final LayerNorm), ``head``
    (Linear D -> K). The same layout as torchvision's ``VisionTransformer``
    (see ``course_lib.torchvision_compat``), so its weights load into this model.

    Args:
        config: a ``ViTConfig`` (see ``vit_config("B/16")``).
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = PatchEmbedding(c.in_channels, c.patch_size, c.dim)
        self.embed = ClassTokenPositionEmbedding(c.num_patches, c.dim, c.pos_std)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(c.dim, c.heads, c.mlp_dim, c.dropout, c.fused, c.eps) for _ in range(c.depth))
        self.norm = LayerNorm(c.dim, c.eps, fused=c.fused)
        self.head = nn.Linear(c.dim, c.num_classes)
        self.apply(functools.partial(_init_weights, std=c.init_std))

    def no_weight_decay(self) -> set[str]:
        """Parameters weight decay leaves alone (``loop.param_groups``; timm's convention): the [class]
        token and the position embedding are added to the tokens, not multiplied, so decaying them
        erases what tells the patches apart instead of keeping weights small."""
        return {"embed.cls_token", "embed.pos_embedding"}

    def _check_input(self, x: torch.Tensor) -> None:
        c, where = self.config, "Task 4.1 VisionTransformer"
        expect_floating(x, where, "images")
        expect_rank(x, 4, where, f"images of shape (B, C={c.in_channels}, H={c.image_size}, W={c.image_size})")
        if tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise shape_error(where, f"images of shape (B, C={c.in_channels}, H={c.image_size}, W={c.image_size})", x,
                              "the config fixes the channels and the image size")

    def forward_features(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images to the final, normalised tokens.

        Args:
            x: images (B, C, H, W).
            return_attention: also return every block's attention weights
                (for visualisation; takes the hand-written attention path).

        Returns:
            tokens (B, N+1, D) after the final LayerNorm, [class] token first;
            with ``return_attention``, ``(tokens, [weights of block 1, ..., L])``,
            each (B, h, N+1, N+1).
        """
        self._check_input(x)
        ### BEGIN SOLUTION
        x = self.drop(self.embed(self.patch_embed(x)))  # (B, N+1, D)
        attentions = []
        for block in self.blocks:
            if return_attention:
                x, weights = block(x, need_weights=True)
                attentions.append(weights)  # (B, h, N+1, N+1)
            else:
                x = block(x)
        x = self.norm(x)  # (B, N+1, D)
        return (x, attentions) if return_attention else x
        ### END SOLUTION

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N+1, D) from ``forward_features`` to logits (B, K): the head reads the [class] token."""
        ### BEGIN SOLUTION
        return self.head(tokens[:, 0])  # (B, K)
        ### END SOLUTION

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images (B, C, H, W) to logits (B, K); with ``return_attention``, ``(logits, attentions)``."""
        if return_attention:
            tokens, attentions = self.forward_features(x, return_attention=True)
            return self.forward_head(tokens), attentions
        return self.forward_head(self.forward_features(x))
