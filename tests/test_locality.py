"""The learned-locality recipe (course_lib.locality) and the checkpoint lecture 12 ships."""
from __future__ import annotations

import torch
from torchvision.models import VisionTransformer

from course_lib.locality import (LOCALITY_CHECKPOINT, LocalityConfig, load_locality_vit, locality_images,
                                 train_locality)
from course_lib.torchvision_compat import torchvision_attention_weights


def head_distances(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(L, h) mean attention distance in pixels (class token dropped, rows renormalised), and uniform's."""
    grid, p = model.image_size // model.patch_size, model.patch_size
    ij = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1)
    centres = ij.reshape(-1, 2).double() * p + p / 2  # (N, 2)
    dist = torch.cdist(centres, centres)  # (N, N)
    rows = []
    for a in torchvision_attention_weights(model, images):  # (B, h, 1+N, 1+N) per layer
        a = a[..., 1:, 1:].double()
        a = a / a.sum(-1, keepdim=True)
        rows.append((a * dist).sum(-1).mean(dim=(0, 2)))  # (h,)
    return torch.stack(rows), dist.mean()


def test_recipe_runs_saves_and_loads_as_torchvision_vit(tmp_path):
    config = LocalityConfig(canvas=16, patch_size=2, dim=16, depth=2, heads=2, mlp_dim=32, batch_size=4, steps=3)
    model, history = train_locality(config, out=tmp_path / "loc.pt", progress=False)
    assert len(history["loss"]) == 2 and history["cpu_s"][0] > 0
    loaded = load_locality_vit(tmp_path / "loc.pt")
    assert isinstance(loaded, VisionTransformer) and not loaded.training
    assert loaded.locality_config == config and config.grid == 8
    x = locality_images(3, config)
    assert x.shape == (3, 1, 16, 16)
    torch.testing.assert_close(x, locality_images(3, config))  # fixed evaluation images
    maps = torchvision_attention_weights(loaded, x)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 65, 65)
    torch.testing.assert_close(loaded(x), model(x))


def test_shipped_checkpoint_shows_learned_locality():
    """Small enough to ship; early heads far below uniform, distance growing with depth (ViT Fig. 7's picture)."""
    assert LOCALITY_CHECKPOINT.stat().st_size <= 5 * 2**20
    torch.manual_seed(0)
    model = load_locality_vit()
    config = model.locality_config
    assert config.grid >= 8
    assert model.locality_history["loss"][-1] < 0.3  # the trivial prediction (all zeros) scores 1.0
    with torch.no_grad():
        dist, uniform = head_distances(model, locality_images(64, config))
    per_layer = dist.mean(-1)
    assert dist[0].min() < 0.5 * uniform, (dist, uniform)
    assert per_layer[-1] > 1.5 * per_layer[0], per_layer
    assert (dist < uniform).all()  # no head is more global than uniform attention
