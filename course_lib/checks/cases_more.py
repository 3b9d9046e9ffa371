"""The self-check's cases of Exercises 3-5 (embeddings, the ViT, analysis); see ``cases.py``."""
from __future__ import annotations

import numbers

import torch

from course_lib import analysis, embeddings, vit
from course_lib.checks.cases import PropertyFailure, case, like, prop, randn, set_params


@case("3.1", "patchify", "images (B=2, C=3, H=8, W=12), P=4")
def _patchify(dev, out):
    x = randn(2, 3, 8, 12, seed=25, device=dev)
    out["patches"] = p = embeddings.patchify(x, 4)
    prop(tuple(p.shape) == (2, 6, 48), f"8x12 images, P=4: expected (B=2, N=6, C*P*P=48), got {tuple(p.shape)}")
    like(p, x, "patches")


@case("3.2", "patch_embedding", "PatchEmbedding(C=3, P=4, D=8), images (2, 3, 8, 12)")
def _patch_embed(dev, out):
    m = set_params(embeddings.PatchEmbedding(3, 4, 8), 26, dev)
    out["tokens"] = m(randn(2, 3, 8, 12, seed=27, device=dev))


@case("3.3", "sinusoidal", "N=10 positions, D=16; N=3, D=4 with base 100")
def _sin(dev, out):
    out["pe"] = pe = embeddings.sinusoidal_position_embedding(10, 16)
    prop(pe.dtype == torch.get_default_dtype(), f"expected the default dtype {torch.get_default_dtype()}, got {pe.dtype}")
    out["pe_base_100"] = embeddings.sinusoidal_position_embedding(3, 4, base=100.0)


@case("3.4", "sincos_2d", "a 3 x 4 grid (gh=3, gw=4), D=16; a 2 x 2 grid, D=8, temperature 100")
def _sincos(dev, out):
    out["pe"] = pe = embeddings.sincos_2d_position_embedding(3, 4, 16)
    prop(pe.dtype == torch.get_default_dtype(), f"expected the default dtype {torch.get_default_dtype()}, got {pe.dtype}")
    out["pe_small"] = embeddings.sincos_2d_position_embedding(2, 2, 8, temperature=100.0)


@case("3.5", "cls_pos", "ClassTokenPositionEmbedding(N=6, D=8), tokens (B=2, N=6, D=8)")
def _cls(dev, out):
    m = set_params(embeddings.ClassTokenPositionEmbedding(6, 8), 28, dev)
    x = randn(2, 6, 8, seed=29, device=dev)
    out["tokens"] = t = m(x)
    prop(tuple(t.shape) == (2, 7, 8), f"expected (B=2, N+1=7, D=8), got {tuple(t.shape)}")
    x2 = x.clone()
    x2[1] += 5
    prop(bool((m(x2)[0] - t[0]).abs().max() == 0), "an image's tokens must not depend on the other images in the batch")


@case("4.1", "vit", "VisionTransformer(vit_config('test')): 8x8 RGB images (B=2), P=4, D=16, 2 blocks, K=5; return_attention; forward_head on tokens (2, 5, 16)")
def _vit(dev, out):
    m = set_params(vit.VisionTransformer(vit.vit_config("test")), 30, dev, scale=0.2)
    x = randn(2, 3, 8, 8, seed=31, device=dev)
    out["logits"] = m(x)
    out["tokens"] = m.forward_features(x)
    out["head"] = m.forward_head(randn(2, 5, m.config.dim, seed=40, device=dev))
    logits, atts = m(x, return_attention=True)
    out["logits_with_attention"] = logits
    prop(isinstance(atts, (list, tuple)) and len(atts) == 2 and tuple(atts[0].shape) == (2, 2, 5, 5),
         f"return_attention: expected 2 blocks of weights (2, 2, 5, 5), got {[tuple(a.shape) for a in atts] if isinstance(atts, (list, tuple)) else type(atts).__name__}")
    out["attention_last"] = atts[-1]


@case("5.1", "attention_distance", "random attention (B=2, h=3, T=17, T) on a 4 x 4 grid of 8 px patches; uniform attention on ViT-B/16 (h=12, 197, 197)")
def _distance(dev, out):
    w = torch.softmax(randn(2, 3, 17, 17, seed=32, device=dev) * 2, dim=-1)
    out["distance"] = d = analysis.mean_attention_distance(w, 4, 8)
    prop(d.dtype == torch.float64 and tuple(d.shape) == (3,), f"expected (h=3,) float64, got {tuple(d.shape)} {d.dtype}")
    try:
        out["distance_no_cls"] = analysis.mean_attention_distance(w[..., 1:, 1:].contiguous(), 4, 8, has_cls=False)
    except RuntimeError as e:
        raise PropertyFailure(f"has_cls=False (attention (2, 3, 16, 16), no class token to drop) failed: {e}") from e
    uniform = torch.full((12, 197, 197), 1 / 197, device=dev)
    out["uniform_b16"] = u = analysis.mean_attention_distance(uniform, 14, 16)
    prop(abs(float(u[0]) - 116.49) < 0.01, f"uniform attention on ViT-B/16's 14x14 grid of 16 px patches must give 116.49 px, got {float(u[0]):.2f}")


@case("5.2", "power_law", "9 points N = 1e6 .. 1e10 of Kaplan's L(N) = (8.8e13 / N)^0.076 with 0.2% noise, as a float64 tensor and as lists")
def _power(dev, out):
    n = torch.logspace(6, 10, 9, dtype=torch.float64)
    noise = 1 + 0.002 * torch.randn(9, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    result = analysis.fit_power_law(n, (8.8e13 / n) ** 0.076 * noise)
    prop(isinstance(result, tuple) and len(result) == 2, f"expected the tuple (x_c, alpha), got {type(result).__name__}")
    x_c, alpha = result
    out["alpha"], out["log10_x_c"] = torch.tensor(float(alpha)), torch.tensor(float(x_c)).log10()
    prop(isinstance(x_c, float) and isinstance(alpha, float), f"x_c and alpha must be Python floats, got {type(x_c).__name__} and {type(alpha).__name__} (use float(...) or .item())")
    out["alpha_lists"] = torch.tensor(float(analysis.fit_power_law([1.0, 10.0, 100.0], [4.0, 2.0, 1.0])[1]))


def _counts(fn, names, what) -> torch.Tensor:
    counts = [fn(vit.vit_config(n)) for n in names]
    prop(all(isinstance(c, numbers.Integral) for c in counts), f"{what} must return an integer, got {sorted({type(c).__name__ for c in counts})}")
    return torch.tensor(counts, dtype=torch.float64)


@case("5.3", "parameters", "configs Ti/16, B/16, B/32, L/16, digits, test")
def _params(dev, out):
    out["counts"] = _counts(analysis.count_parameters, ["Ti/16", "B/16", "B/32", "L/16", "digits", "test"], "count_parameters")


@case("5.4", "flops", "configs Ti/16, B/16, B/32, digits, test")
def _flops(dev, out):
    out["flops"] = _counts(analysis.count_flops, ["Ti/16", "B/16", "B/32", "digits", "test"], "count_flops")
