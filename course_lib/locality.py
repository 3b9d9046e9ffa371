"""The learned-locality ViT of lecture 12: a small torchvision ViT that learned to attend locally.

ViT's Fig. 7 (and Raghu et al. 2021) show that, trained on enough data, some heads
of the lowest layers attend locally and that the attended distance grows with depth.
A small ViT trained to *classify* digits on a CPU budget does not show it: every head
stays close to uniform (measured while building this recipe: a 4-layer ViT on a 32 x 32
canvas with 4 x 4 patches, ~90% test accuracy, every head within 10% of uniform).
What does show it within a few CPU minutes is a task whose answer is local:

* **data** the project makes: smooth random images (Gaussian noise on a 8 x 8 grid,
  upsampled bicubically to 32 x 32), which, like natural images, are correlated
  over short distances and not over long ones;
* **objective**: masked-patch prediction (as in BEiT/MAE, He et al. 2022): 60% of the
  patch tokens are replaced by a learned mask token and a linear head predicts the
  pixels of each masked patch from its output token;
* **position embedding**: learned, as in ViT, but initialised with random Fourier
  features of the patch centres (Tancik et al. 2020) instead of torchvision's
  N(0, 0.02^2) draw. With the default initialisation the loss had not left the
  trivial value (predicting 0, loss 1.0) after 500 steps: the model first has to
  discover which patches are neighbours.

    python -m course_lib.train --recipe locality --out lectures/assets/locality_vit.pt

The model is torchvision's ``VisionTransformer`` (one-channel patch convolution), so it
trains and loads without any of the course's tasks: ``load_locality_vit()`` returns it,
``locality_images()`` fixed evaluation images, and
``course_lib.torchvision_compat.torchvision_attention_weights`` its attention maps.
Nothing here is an exercise.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Where the lectures find the shipped checkpoint (the same path in the student edition).
LOCALITY_CHECKPOINT = Path(__file__).resolve().parents[1] / "lectures" / "assets" / "locality_vit.pt"


@dataclass
class LocalityConfig:
    canvas: int = 32  # side of the (square, grey) images in pixels
    smoothness: int = 4  # the noise is drawn on a (canvas/smoothness)^2 grid, then upsampled
    patch_size: int = 4  # canvas / patch_size patches per side (>= 8 for lecture 12)
    dim: int = 64  # D
    depth: int = 4  # L
    heads: int = 4  # h
    mlp_dim: int = 128  # D_mlp
    mask_ratio: float = 0.6  # fraction of patch tokens replaced by the mask token
    fourier_scale: float = 6.0  # std of the random frequencies (per unit of image side) of the initial embedding
    batch_size: int = 64
    steps: int = 1000  # optimiser steps (a fresh batch of images each step)
    lr: float = 2e-3  # peak AdamW learning rate (100 warm-up steps, cosine to 0)
    weight_decay: float = 0.05
    seed: int = 0

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.canvas // self.patch_size


def smooth_images(n: int, config: LocalityConfig, generator: torch.Generator | None = None) -> Tensor:
    """Smooth random images: Gaussian noise on a coarse grid, upsampled bicubically, unit std each.

    Returns:
        (n, 1, canvas, canvas).
    """
    coarse = config.canvas // config.smoothness
    z = torch.randn(n, 1, coarse, coarse, generator=generator)
    z = F.interpolate(z, size=(config.canvas, config.canvas), mode="bicubic", align_corners=False)
    return z / z.std(dim=(1, 2, 3), keepdim=True)


def locality_images(n: int = 256, config: LocalityConfig | None = None, seed: int = 1234) -> Tensor:
    """Fixed evaluation images (the same every call), drawn like the training images.

    Returns:
        (n, 1, canvas, canvas).
    """
    config = config or LocalityConfig()
    return smooth_images(n, config, torch.Generator().manual_seed(seed))


def fourier_position_embedding(grid: int, dim: int, scale: float, seed: int = 3) -> Tensor:
    """Random Fourier features of the patch centres, sqrt(2) cos(p W + b): nearby patches get similar rows.

    Returns:
        (grid * grid, dim), rows in raster order (the order of torchvision's patch tokens).
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1)
    centres = centres.reshape(-1, 2).float() / grid  # (N, 2) in [0, 1)
    w = torch.randn(2, dim, generator=g) * scale  # (2, D)
    b = torch.rand(dim, generator=g) * 2 * math.pi  # (D,)
    return math.sqrt(2) * torch.cos(centres @ w + b)  # (N, D)


def build_model(config: LocalityConfig) -> nn.Module:
    """torchvision's ``VisionTransformer`` for one-channel images, position embedding initialised as above.

    Its classification head is unused (the class token is kept so that the model is a plain
    torchvision ViT); ``model.mask_token`` and ``model.pixel_head`` serve the pretext task.
    """
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=config.canvas, patch_size=config.patch_size, num_layers=config.depth,
                              num_heads=config.heads, hidden_dim=config.dim, mlp_dim=config.mlp_dim,
                              num_classes=10)
    model.conv_proj = nn.Conv2d(1, config.dim, kernel_size=config.patch_size, stride=config.patch_size)
    model.mask_token = nn.Parameter(torch.zeros(config.dim))
    model.pixel_head = nn.Linear(config.dim, config.patch_size ** 2)
    pe = fourier_position_embedding(config.grid, config.dim, config.fourier_scale)  # (N, D)
    with torch.no_grad():
        model.encoder.pos_embedding.copy_(torch.cat([torch.zeros(1, config.dim), pe])[None])  # (1, 1+N, D)
    return model


def masked_patch_loss(model: nn.Module, images: Tensor, mask_ratio: float,
                      generator: torch.Generator | None = None) -> Tensor:
    """Mean squared error of the predicted pixels of the masked patches.

    Args:
        images: (B, 1, H, W).
        mask_ratio: fraction of patches masked (each patch independently).

    Returns:
        a scalar.
    """
    p = model.patch_size
    tokens = model._process_input(images)  # (B, N, D)
    b, n, _ = tokens.shape
    masked = torch.rand(b, n, generator=generator, device=images.device) < mask_ratio  # (B, N)
    tokens = torch.where(masked[..., None], model.mask_token.expand_as(tokens), tokens)
    tokens = torch.cat([model.class_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1+N, D)
    out = model.encoder(tokens)[:, 1:]  # (B, N, D), position embedding added inside
    target = F.unfold(images, p, stride=p).transpose(1, 2)  # (B, N, P*P)
    err = (model.pixel_head(out) - target).pow(2).mean(-1)  # (B, N)
    return err[masked].mean()


def train_locality(config: LocalityConfig | None = None, out: str | Path | None = None,
                   device: torch.device | str = "cpu", progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the locality ViT on masked-patch prediction; with ``out``, save what ``load_locality_vit`` reads.

    Args:
        config: model, data and schedule (default ``LocalityConfig()``).
        out: file to write (float32 weights, the config, the loss history).
        device: where to train.
        progress: show a tqdm progress bar.

    Returns:
        (model in eval mode, history with ``loss`` every 50 steps and ``cpu_s``).
    """
    from tqdm.auto import tqdm

    config = config or LocalityConfig()
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_gen = torch.Generator().manual_seed(config.seed + 1)
    mask_gen = torch.Generator(device=device).manual_seed(config.seed + 2)
    history: dict[str, list] = {"step": [], "loss": []}
    t0 = time.process_time()
    bar = tqdm(range(config.steps), desc="locality ViT", disable=not progress)
    for step in bar:
        warm = min(1.0, (step + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = config.lr * warm * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        images = smooth_images(config.batch_size, config, data_gen).to(device)
        loss = masked_patch_loss(model, images, config.mask_ratio, mask_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == config.steps - 1:
            history["step"].append(step)
            history["loss"].append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
    history["cpu_s"] = [time.process_time() - t0]
    model.eval()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                    "config": asdict(config), "history": history}, out)
    return model, history


def load_locality_vit(path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The shipped learned-locality ViT as a torchvision ``VisionTransformer``, in eval mode.

    Args:
        path: a checkpoint of ``train_locality`` (default: ``lectures/assets/locality_vit.pt``).
        device: where to put it.

    Returns:
        the model; ``model.locality_config`` is its ``LocalityConfig`` (canvas, patch size, ...)
        and ``model.locality_history`` its training loss.
    """
    state = torch.load(path or LOCALITY_CHECKPOINT, map_location="cpu", weights_only=True)
    config = LocalityConfig(**state["config"])
    model = build_model(config)
    model.load_state_dict(state["model"], strict=True)
    model.locality_config = config
    model.locality_history = state["history"]
    return model.to(device).eval()
