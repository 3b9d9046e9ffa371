"""The self-check's cases: small fixed inputs for every task, and the properties each must have.

Each case returns the outputs that ``course_lib.selfcheck`` compares with the stored reference
(``reference.pt`` beside this file) and raises ``PropertyFailure`` when a property breaks.
Parameters are overwritten with seeded values, so a case never depends on initialisation order.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from course_lib import analysis, attention, embeddings, encoder, vit


class PropertyFailure(AssertionError):
    """A property of the task does not hold; the message says which."""


# --- inputs ---------------------------------------------------------------------------------

def _randn(*shape: int, seed: int, device) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


def _set_params(module: torch.nn.Module, seed: int, device, scale: float = 0.3) -> torch.nn.Module:
    """Overwrite every parameter with seeded values, so the check does not depend on init order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.to(device).eval()


def _property(ok: bool, message: str) -> None:
    if not ok:
        raise PropertyFailure(message)


def _rows_sum_to_one(w: torch.Tensor, what: str) -> None:
    err = (w.sum(-1) - 1).abs().max().item()
    _property(err < 1e-3, f"{what}: rows of the attention weights must sum to 1, one sums to 1 {'+-'[err < 0]} {err:.3g}")


def _equivariant(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, what: str) -> None:
    perm = torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    err = (f(x[:, perm]) - f(x)[:, perm]).abs().max().item()
    _property(err < 1e-3, f"{what}: permuting the tokens must permute the outputs the same way (permutation equivariance); largest difference {err:.3g}")


# --- cases: each returns the outputs compared with the reference ----------------------------

CASES: dict[str, tuple[str, Callable]] = {}


def case(task_id: str, name: str):
    def register(fn):
        CASES[name] = (task_id, fn)
        return fn
    return register


@case("1.1", "sdpa")
def _sdpa(dev):
    q, k, v = _randn(2, 3, 5, 4, seed=1, device=dev), _randn(2, 3, 6, 4, seed=2, device=dev), _randn(2, 3, 6, 3, seed=3, device=dev)
    out, w = attention.scaled_dot_product_attention(q, k, v)
    _rows_sum_to_one(w, "no mask")
    bool_mask = _randn(5, 6, seed=4, device=dev) > 0
    bool_mask[:, 0] = True  # no fully masked row here
    out_b, w_b = attention.scaled_dot_product_attention(q, k, v, bool_mask)
    _property(bool(w_b.masked_select(~bool_mask.expand_as(w_b)).abs().max() == 0), "bool mask: masked keys (False) must get weight 0")
    out_a, _ = attention.scaled_dot_product_attention(q, k, v, _randn(5, 6, seed=5, device=dev))
    full = torch.zeros(5, 6, dtype=torch.bool, device=dev)
    full[1:] = True
    out_f, w_f = attention.scaled_dot_product_attention(q, k, v, full)
    _property(bool(torch.isfinite(out_f).all()), "a query whose every key is masked must give weights 0 and output 0, not NaN")
    return {"out": out, "weights": w, "out_bool_mask": out_b, "out_additive_mask": out_a, "out_fully_masked_row": out_f}


@case("1.2", "causal_mask")
def _causal(dev):
    m = attention.causal_mask(5, device=dev)
    _property(m.dtype == torch.bool and tuple(m.shape) == (5, 5), f"expected a bool (5, 5) mask, got {m.dtype} {tuple(m.shape)}")
    x = _randn(1, 5, 4, seed=6, device=dev)
    y = x.clone()
    y[:, 3:] += 1.0  # change the future of position 2
    a = torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=m)
    b = torch.nn.functional.scaled_dot_product_attention(y, y, y, attn_mask=m)
    _property(bool((a[:, :3] - b[:, :3]).abs().max() < 1e-5), "outputs before position t must not depend on tokens after t")
    return {"mask": m.float()}


@case("1.3", "single_head")
def _single(dev):
    m = _set_params(attention.SingleHeadAttention(8, 4), 7, dev)
    z = _randn(2, 5, 8, seed=8, device=dev)
    out, w = m(z)
    _rows_sum_to_one(w, "SingleHeadAttention")
    _equivariant(lambda t: m(t)[0], z, "SingleHeadAttention")
    return {"out": out, "weights": w}


@case("1.4", "multi_head")
def _multi(dev):
    m = _set_params(attention.MultiHeadAttention(8, 2), 9, dev)
    x = _randn(2, 5, 8, seed=10, device=dev)
    out = m(x)
    out_w, w = m(x, need_weights=True)
    _property(tuple(w.shape) == (2, 2, 5, 5), f"need_weights=True: expected weights (B=2, h=2, N=5, N=5), got {tuple(w.shape)}")
    _rows_sum_to_one(w, "MultiHeadAttention")
    _equivariant(m, x, "MultiHeadAttention")
    mask = torch.ones(5, 5, dtype=torch.bool, device=dev).tril()
    return {"out": out, "out_need_weights": out_w, "weights": w, "out_causal": m(x, mask=mask)}


@case("1.5", "cross")
def _cross(dev):
    m = _set_params(attention.CrossAttention(8, 2, context_dim=6), 11, dev)
    x, ctx = _randn(2, 4, 8, seed=12, device=dev), _randn(2, 7, 6, seed=13, device=dev)
    out_w, w = m(x, ctx, need_weights=True)
    _property(tuple(w.shape) == (2, 2, 4, 7), f"expected weights (B=2, h=2, N=4, M=7), got {tuple(w.shape)}")
    return {"out": m(x, ctx), "weights": w}


@case("1.6", "gated_cross")
def _gated(dev):
    m = _set_params(attention.GatedCrossAttention(8, 2, context_dim=6), 14, dev)
    y, ctx = _randn(2, 4, 8, seed=15, device=dev), _randn(2, 7, 6, seed=16, device=dev)
    with torch.no_grad():
        m.alpha.zero_()
    _property(bool((m(y, ctx) - y).abs().max() == 0), "with alpha = 0 the gated layer must be the identity")
    with torch.no_grad():
        m.alpha.fill_(0.7)
    return {"out": m(y, ctx)}


@case("2.1", "mlp")
def _mlp(dev):
    m = _set_params(encoder.MLP(8, 16), 17, dev)
    return {"out": m(_randn(2, 5, 8, seed=18, device=dev))}


@case("2.2", "layernorm")
def _ln(dev):
    m = encoder.LayerNorm(8, fused=False).to(dev)
    x = _randn(2, 5, 8, seed=19, device=dev) * 3 + 1
    y = m(x)
    _property(bool(y.mean(-1).abs().max() < 1e-4), "with weight 1 and bias 0 every token must have mean 0 over its features")
    x2 = x.clone()
    x2[1] *= 100.0  # another image in the batch changes
    _property(bool((m(x2)[0] - y[0]).abs().max() < 1e-5), "a token's output must not depend on other images in the batch (that is BatchNorm)")
    _set_params(m, 20, dev)
    return {"out": m(x), "out_unit": y}


def _block(cls, seed, dev):
    m = _set_params(cls(8, 2, 16), seed, dev)
    x = _randn(2, 5, 8, seed=seed + 1, device=dev)
    out_w, w = m(x, need_weights=True)
    _property(tuple(w.shape) == (2, 2, 5, 5), f"need_weights=True: expected weights (2, 2, 5, 5), got {tuple(w.shape)}")
    return {"out": m(x), "out_need_weights": out_w}


@case("2.3", "encoder_block")
def _pre(dev):
    return _block(encoder.EncoderBlock, 21, dev)


@case("2.4", "post_norm_block")
def _post(dev):
    return _block(encoder.PostNormEncoderBlock, 23, dev)


@case("3.1", "patchify")
def _patchify(dev):
    p = embeddings.patchify(_randn(2, 3, 8, 12, seed=25, device=dev), 4)
    _property(tuple(p.shape) == (2, 6, 48), f"8x12 images, P=4: expected (B=2, N=6, C*P*P=48), got {tuple(p.shape)}")
    return {"patches": p}


@case("3.2", "patch_embedding")
def _patch_embed(dev):
    m = _set_params(embeddings.PatchEmbedding(3, 4, 8), 26, dev)
    return {"tokens": m(_randn(2, 3, 8, 12, seed=27, device=dev))}


@case("3.3", "sinusoidal")
def _sin(dev):
    return {"pe": embeddings.sinusoidal_position_embedding(10, 16)}


@case("3.4", "sincos_2d")
def _sincos(dev):
    return {"pe": embeddings.sincos_2d_position_embedding(3, 4, 16)}


@case("3.5", "cls_pos")
def _cls(dev):
    m = _set_params(embeddings.ClassTokenPositionEmbedding(6, 8), 28, dev)
    return {"tokens": m(_randn(2, 6, 8, seed=29, device=dev))}


@case("4.1", "vit")
def _vit(dev):
    m = _set_params(vit.VisionTransformer(vit.vit_config("test")), 30, dev, scale=0.2)
    x = _randn(2, 3, 8, 8, seed=31, device=dev)
    logits, atts = m(x, return_attention=True)
    _property(len(atts) == 2 and tuple(atts[0].shape) == (2, 2, 5, 5),
              f"return_attention: expected 2 blocks of weights (2, 2, 5, 5), got {[tuple(a.shape) for a in atts]}")
    return {"logits": m(x), "logits_with_attention": logits, "tokens": m.forward_features(x), "attention_last": atts[-1]}


@case("5.1", "attention_distance")
def _distance(dev):
    w = torch.softmax(_randn(2, 3, 17, 17, seed=32, device=dev) * 2, dim=-1)
    uniform = torch.full((12, 197, 197), 1 / 197, device=dev)
    d = analysis.mean_attention_distance(uniform, 14, 16)
    _property(abs(float(d[0]) - 116.49) < 0.01, f"uniform attention on ViT-B/16's 14x14 grid of 16 px patches must give 116.49 px, got {float(d[0]):.2f}")
    return {"distance": analysis.mean_attention_distance(w, 4, 8), "uniform_b16": d}


@case("5.2", "power_law")
def _power(dev):
    n = torch.logspace(6, 10, 9, dtype=torch.float64)
    noise = 1 + 0.002 * torch.randn(9, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    x_c, alpha = analysis.fit_power_law(n, (8.8e13 / n) ** 0.076 * noise)
    return {"alpha": torch.tensor(alpha), "log10_x_c": torch.tensor(x_c).log10()}


@case("5.3", "parameters")
def _params(dev):
    names = ["Ti/16", "B/16", "B/32", "L/16", "digits", "test"]
    return {"counts": torch.tensor([analysis.count_parameters(vit.vit_config(n)) for n in names], dtype=torch.float64)}


@case("5.4", "flops")
def _flops(dev):
    names = ["Ti/16", "B/16", "B/32", "digits", "test"]
    return {"flops": torch.tensor([analysis.count_flops(vit.vit_config(n)) for n in names], dtype=torch.float64)}
