"""Conversion both ways between course_lib's ViT and torchvision's ``VisionTransformer``.

torchvision names its layers by position (``mlp.0``, ``mlp.3``,
``encoder_layer_7``); course_lib names them by role (``mlp.fc1``,
``blocks.7``). The tensors themselves line up one to one: torchvision's
``self_attention.in_proj_weight`` rows are [q; k; v], exactly ``attn.qkv.weight``.
Conversion is strict: every key on both sides is accounted for.

So a student's ViT can run torchvision's ImageNet weights::

    tv = torchvision.models.vit_b_16(weights="IMAGENET1K_V1")   # downloads (Colab)
    model = vit_from_torchvision(tv)                             # course_lib ViT, same logits

Nothing here is an exercise; lectures may use ``torchvision_attention_weights``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from course_lib.vit import ViTConfig, VisionTransformer

# (course_lib name, torchvision name) for the parts outside the blocks.
_OUTER = [
    ("patch_embed.proj.weight", "conv_proj.weight"),
    ("patch_embed.proj.bias", "conv_proj.bias"),
    ("embed.cls_token", "class_token"),
    ("embed.pos_embedding", "encoder.pos_embedding"),
    ("norm.weight", "encoder.ln.weight"),
    ("norm.bias", "encoder.ln.bias"),
    ("head.weight", "heads.head.weight"),
    ("head.bias", "heads.head.bias"),
]
# Inside block i: (course_lib suffix, torchvision suffix).
_BLOCK = [
    ("norm1.weight", "ln_1.weight"),
    ("norm1.bias", "ln_1.bias"),
    ("attn.qkv.weight", "self_attention.in_proj_weight"),
    ("attn.qkv.bias", "self_attention.in_proj_bias"),
    ("attn.proj.weight", "self_attention.out_proj.weight"),
    ("attn.proj.bias", "self_attention.out_proj.bias"),
    ("norm2.weight", "ln_2.weight"),
    ("norm2.bias", "ln_2.bias"),
    ("mlp.fc1.weight", "mlp.0.weight"),
    ("mlp.fc1.bias", "mlp.0.bias"),
    ("mlp.fc2.weight", "mlp.3.weight"),
    ("mlp.fc2.bias", "mlp.3.bias"),
]


def key_map(depth: int) -> list[tuple[str, str]]:
    """Every (course_lib key, torchvision key) pair of a ViT with ``depth`` blocks."""
    pairs = list(_OUTER)
    for i in range(depth):
        pairs += [(f"blocks.{i}.{ours}", f"encoder.layers.encoder_layer_{i}.{theirs}") for ours, theirs in _BLOCK]
    return pairs


def _convert(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], source: str) -> dict[str, torch.Tensor]:
    missing = [src for src, _ in pairs if src not in state]
    unexpected = sorted(set(state) - {src for src, _ in pairs})
    if missing or unexpected:
        raise KeyError(
            f"state dict does not match a {source} ViT of this depth: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return {dst: state[src] for src, dst in pairs}


def _depth_of(state: dict[str, torch.Tensor], pattern: str) -> int:
    layers = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(layers) + 1 if layers else 0


def to_torchvision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """course_lib ViT state dict -> torchvision ``VisionTransformer`` state dict (strict)."""
    return _convert(state, key_map(_depth_of(state, r"blocks\.(\d+)\.")), "course_lib")


def from_torchvision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``VisionTransformer`` state dict -> course_lib ViT state dict (strict)."""
    depth = _depth_of(state, r"encoder\.layers\.encoder_layer_(\d+)\.")
    return _convert(state, [(tv, ours) for ours, tv in key_map(depth)], "torchvision")


def config_from_torchvision(model: nn.Module) -> ViTConfig:
    """The ViTConfig of a torchvision ``VisionTransformer`` (which must have a plain Linear head)."""
    if "head" not in model.heads._modules or len(model.heads) != 1:
        raise ValueError("only torchvision ViTs with a single Linear head (representation_size=None) convert")
    first = model.encoder.layers[0]
    return ViTConfig(
        image_size=model.image_size,
        patch_size=model.patch_size,
        in_channels=model.conv_proj.in_channels,
        num_classes=model.heads.head.out_features,
        dim=model.hidden_dim,
        depth=len(model.encoder.layers),
        heads=first.num_heads,
        mlp_dim=model.mlp_dim,
        eps=first.ln_1.eps,
    )


def vit_from_torchvision(model: nn.Module, **overrides) -> VisionTransformer:
    """A course_lib ``VisionTransformer`` with the weights of a torchvision one.

    Args:
        model: a ``torchvision.models.VisionTransformer`` (e.g. ``vit_b_16(weights=...)``).
        overrides: ViTConfig fields to change that keep the weights valid (e.g. ``fused=False``).
    """
    config = config_from_torchvision(model)
    for name, value in overrides.items():
        setattr(config, name, value)
    ours = VisionTransformer(config)
    ours.load_state_dict(from_torchvision_state_dict(model.state_dict()), strict=True)
    return ours


def torchvision_from_vit(model: VisionTransformer) -> nn.Module:
    """A torchvision ``VisionTransformer`` with the weights of a course_lib one."""
    from torchvision.models import VisionTransformer as TorchvisionViT

    c = model.config
    tv = TorchvisionViT(
        image_size=c.image_size, patch_size=c.patch_size, num_layers=c.depth, num_heads=c.heads,
        hidden_dim=c.dim, mlp_dim=c.mlp_dim, num_classes=c.num_classes,
    )
    if c.in_channels != 3:  # torchvision hard-codes RGB; swap in a conv with the right channels
        tv.conv_proj = nn.Conv2d(c.in_channels, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
    tv.load_state_dict(to_torchvision_state_dict(model.state_dict()), strict=True)
    return tv


@torch.no_grad()
def torchvision_attention_weights(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer attention weights of a torchvision ``VisionTransformer`` (which never returns them).

    Runs the model once, records the input of every layer's ``self_attention``,
    then asks each ``nn.MultiheadAttention`` for its per-head weights.

    Args:
        model: a torchvision ``VisionTransformer``.
        images: (B, C, H, W) on the model's device.

    Returns:
        a list with one tensor (B, h, N+1, N+1) per encoder layer, [class] token first.
    """
    inputs: list[torch.Tensor] = []
    layers = list(model.encoder.layers)
    hooks = [layer.self_attention.register_forward_pre_hook(lambda mod, args: inputs.append(args[0])) for layer in layers]
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return [
        layer.self_attention(x, x, x, need_weights=True, average_attn_weights=False)[1]  # (B, h, N+1, N+1)
        for layer, x in zip(layers, inputs)
    ]
