"""The learned-locality ViT of lecture 12: a small torchvision ViT trained on digits placed on a canvas.

ViT's Fig. 7 (and Raghu et al. 2021) show that, trained on enough data, some
heads of the lowest layers attend locally, and that the attended distance grows
with depth. Lecture 12 shows it offline on this model: scikit-learn's digits,
upscaled and placed at a random position on a larger canvas, cut into a grid of
at least 8 x 8 patches, so that recognising a digit means combining nearby patches.

    python -m course_lib.train --recipe locality --out lectures/assets/locality_vit.pt

The model is torchvision's ``VisionTransformer`` (with a one-channel patch
convolution), so it trains and loads without any of the course's tasks:
``load_locality_vit()`` returns it, ``locality_images()`` the fixed evaluation
images, and ``course_lib.torchvision_compat.torchvision_attention_weights``
its attention maps. Nothing here is an exercise.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.augment import random_crop
from course_lib.loop import TrainConfig, train

# Where the lectures find the shipped checkpoint (the same path in the student edition).
LOCALITY_CHECKPOINT = Path(__file__).resolve().parents[1] / "lectures" / "assets" / "locality_vit.pt"


@dataclass
class LocalityConfig:
    canvas: int = 32  # side of the (square, grey) canvas in pixels
    scale: int = 3  # each 8x8 digit is upscaled (bilinear) to 8*scale pixels
    patch_size: int = 4  # canvas / patch_size patches per side (>= 8 for lecture 12)
    dim: int = 64  # D
    depth: int = 4  # L
    heads: int = 4  # h
    mlp_dim: int = 128  # D_mlp
    batch_size: int = 64
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=25, lr=2e-3, min_lr=1e-5, warmup_epochs=2, weight_decay=0.05, label_smoothing=0.1, seed=0))

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.canvas // self.patch_size


def place_digits(digits: Tensor, canvas: int, generator: torch.Generator | None = None) -> Tensor:
    """Paste each image at its own uniformly random position on an empty canvas (no loop over images).

    Centred on the canvas, then shifted by ``augment.random_crop``.

    Args:
        digits: (B, 1, s, s), background 0; canvas - s must be even and >= 0.
        canvas: side of the output.
        generator: draws the positions.

    Returns:
        (B, 1, canvas, canvas).
    """
    margin, odd = divmod(canvas - digits.shape[-1], 2)
    if margin < 0 or odd:
        raise ValueError(f"place_digits: digits of side {digits.shape[-1]} need a canvas larger by an even "
                         f"number of pixels, got {canvas}")
    return random_crop(F.pad(digits, (margin,) * 4), margin, 0.0, generator)


class _Placer:
    """``TensorLoader`` transform: fresh random positions every batch, then standardise."""

    def __init__(self, canvas: int, seed: int, mean: float, std: float):
        self.canvas, self.seed, self.mean, self.std = canvas, seed, mean, std
        self.generator: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return (place_digits(x, self.canvas, self.generator) - self.mean) / self.std


def _digits(config: LocalityConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits in [0, 1] (background 0), upscaled by ``config.scale``: train and test splits."""
    from course_lib.data import load_digits

    x_train, y_train, x_test, y_test = load_digits()
    lo = x_train.min()  # the standardised background
    x_train, x_test = ((x - lo) / (x.max() - lo) for x in (x_train, x_test))
    if config.scale > 1:
        x_train, x_test = (F.interpolate(x, scale_factor=config.scale, mode="bilinear").clamp(0, 1)
                           for x in (x_train, x_test))
    return x_train, y_train, x_test, y_test


# Canvas statistics used to standardise (mostly background): one scalar each, like load_digits.
_MEAN, _STD = 0.1, 0.25


def locality_images(n: int = 256, config: LocalityConfig | None = None, seed: int = 1234) -> tuple[Tensor, Tensor]:
    """Fixed evaluation canvases (test digits at seeded positions), standardised like training.

    Returns:
        images (n, 1, canvas, canvas) and labels (n,); n <= 360 (the test split).
    """
    config = config or LocalityConfig()
    _, _, x_test, y_test = _digits(config)
    x = place_digits(x_test[:n], config.canvas, torch.Generator().manual_seed(seed))
    return (x - _MEAN) / _STD, y_test[:n]


def build_model(config: LocalityConfig) -> nn.Module:
    """torchvision's ``VisionTransformer`` for one-channel canvases (10 classes)."""
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=config.canvas, patch_size=config.patch_size, num_layers=config.depth,
                              num_heads=config.heads, hidden_dim=config.dim, mlp_dim=config.mlp_dim,
                              num_classes=10)
    model.conv_proj = nn.Conv2d(1, config.dim, kernel_size=config.patch_size, stride=config.patch_size)
    return model


def train_locality(config: LocalityConfig | None = None, out: str | Path | None = None,
                   device: torch.device | str = "cpu", **train_overrides) -> tuple[nn.Module, dict]:
    """Train the locality ViT; with ``out``, save the checkpoint ``load_locality_vit`` reads.

    Args:
        config: model, data and schedule (default ``LocalityConfig()``).
        out: file to write (weights in float32, the model's arguments, the history).
        device: where to train.
        train_overrides: ``TrainConfig`` fields, e.g. ``epochs=1, progress=False``.

    Returns:
        (model, history).
    """
    from dataclasses import replace

    from course_lib.data import TensorLoader
    from course_lib.device import seed_everything

    config = config or LocalityConfig()
    tc = replace(config.train, **train_overrides)
    seed_everything(tc.seed)
    x_train, y_train, _, _ = _digits(config)
    x_test, y_test = locality_images(360, config)
    model = build_model(config)
    train_loader = TensorLoader(x_train.to(device), y_train.to(device), config.batch_size, shuffle=True,
                                drop_last=True, transform=_Placer(config.canvas, tc.seed, _MEAN, _STD), seed=tc.seed)
    test_loader = TensorLoader(x_test.to(device), y_test.to(device), 360, shuffle=False)
    t0 = time.process_time()
    history = train(model, train_loader, test_loader, tc, device=device)
    history["cpu_s"] = [time.process_time() - t0]
    if out is not None:
        cfg = asdict(config)
        cfg["train"] = asdict(tc)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": {k: v.detach().float().cpu() for k, v in model.state_dict().items()},
                    "config": cfg, "history": {k: v for k, v in history.items() if k != "step_loss"}}, out)
    return model, history


def load_locality_vit(path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The shipped learned-locality ViT as a torchvision ``VisionTransformer``, in eval mode.

    Args:
        path: a checkpoint of ``train_locality`` (default: ``lectures/assets/locality_vit.pt``).
        device: where to put it.

    Returns:
        the model; ``model.locality_config`` is its ``LocalityConfig`` (canvas, patch size, ...).
    """
    state = torch.load(path or LOCALITY_CHECKPOINT, map_location="cpu", weights_only=True)
    cfg = dict(state["config"])
    cfg["train"] = TrainConfig(**{**cfg["train"], "betas": tuple(cfg["train"]["betas"])})
    config = LocalityConfig(**cfg)
    model = build_model(config)
    model.load_state_dict(state["model"], strict=True)
    model.locality_config = config
    return model.to(device).eval()
