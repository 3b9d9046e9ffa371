"""The self-check's cases: small fixed inputs for every task, and the properties each must have.

A case fills ``out`` with the outputs that ``course_lib.selfcheck`` compares with the stored
reference (``reference.pt`` beside this file) and with stored outputs of common mistakes
(``mistakes.pt``), and raises ``PropertyFailure`` when a documented property breaks (dtype,
device, Python return types, train vs eval behaviour, ...). Outputs filled before a failure are
still compared, so a failure can be named. Parameters are overwritten with seeded values, so a
case never depends on initialisation order. Exercises 3-5 are in ``cases_more.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from course_lib import attention, encoder


class PropertyFailure(AssertionError):
    """A property of the task does not hold; the message says which."""


@dataclass(frozen=True)
class Case:
    task: str  # "1.1"
    name: str  # unique, the key of the stored outputs
    inputs: str  # what the case runs, with the shapes
    fn: Callable  # fn(device, out) fills out
    hand_written: tuple[str, ...] = ()  # forbidden.forbid groups while it runs


CASES: dict[str, Case] = {}


def case(task: str, name: str, inputs: str, hand_written: tuple[str, ...] = ()):
    def register(fn):
        CASES[name] = Case(task, name, inputs, fn, hand_written)
        return fn
    return register


# --- inputs and properties ------------------------------------------------------------------

def randn(*shape: int, seed: int, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def set_params(module: torch.nn.Module, seed: int, device, scale: float = 0.3) -> torch.nn.Module:
    """Overwrite every parameter with seeded values, so the check does not depend on init order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.to(device).eval()


def prop(ok: bool, message: str) -> None:
    if not ok:
        raise PropertyFailure(message)


def pair(result, what: str) -> tuple:
    prop(isinstance(result, (tuple, list)) and len(result) == 2, f"{what}: expected a tuple of two tensors, got {type(result).__name__}")
    return tuple(result)


def rows_sum_to_one(w: torch.Tensor, what: str) -> None:
    total = w.sum(-1)
    worst = float(total.flatten()[(total - 1).abs().argmax()])
    prop(abs(worst - 1) < 1e-3, f"{what}: every row of the attention weights must sum to 1; one sums to {worst:.3g}")


def equivariant(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, what: str) -> None:
    perm = torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
    err = (f(x[:, perm]) - f(x)[:, perm]).abs().max().item()
    prop(err < 1e-3, f"{what}: permuting the tokens must permute the outputs the same way (permutation equivariance); largest difference {err:.3g}")


def like(t: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    prop(t.dtype == ref.dtype and t.device == ref.device, f"{what}: expected dtype {ref.dtype} on {ref.device}, got {t.dtype} on {t.device}")


# --- Exercise 1 ------------------------------------------------------------------------------

def _qkv(dev, dtype=torch.float32):
    return (randn(2, 3, 5, 4, seed=1, device=dev, dtype=dtype), randn(2, 3, 6, 4, seed=2, device=dev, dtype=dtype),
            randn(2, 3, 6, 3, seed=3, device=dev, dtype=dtype))


QKV = "q (B=2, h=3, N=5, d=4), k (2, 3, M=6, 4), v (2, 3, 6, d_v=3)"


@case("1.1", "sdpa", f"{QKV}, no mask", ("attention",))
def _sdpa(dev, out):
    q, k, v = _qkv(dev)
    out["out"], out["weights"] = pair(attention.scaled_dot_product_attention(q, k, v), "return value")
    rows_sum_to_one(out["weights"], "no mask")


@case("1.1", "sdpa_bool_mask", f"{QKV}, bool mask (5, 6), True = attend", ("attention",))
def _sdpa_bool(dev, out):
    q, k, v = _qkv(dev)
    mask = randn(5, 6, seed=4, device=dev) > 0
    mask[:, 0] = True  # no fully masked row here
    out["out"], out["weights"] = pair(attention.scaled_dot_product_attention(q, k, v, mask), "return value")
    prop(bool(out["weights"].masked_select(~mask.expand_as(out["weights"])).abs().max() == 0), "bool mask: masked keys (False) must get weight 0")


@case("1.1", "sdpa_additive_mask", f"{QKV}, additive float mask (5, 6) with finite values and -inf", ("attention",))
def _sdpa_add(dev, out):
    q, k, v = _qkv(dev)
    mask = randn(5, 6, seed=5, device=dev)
    mask[2, 3:] = float("-inf")
    out["out"], out["weights"] = pair(attention.scaled_dot_product_attention(q, k, v, mask), "return value")


@case("1.1", "sdpa_fully_masked_row", f"{QKV}, bool mask (5, 6) whose first row is all False", ("attention",))
def _sdpa_full(dev, out):
    q, k, v = _qkv(dev)
    mask = torch.zeros(5, 6, dtype=torch.bool, device=dev)
    mask[1:] = True
    out["out"], out["weights"] = pair(attention.scaled_dot_product_attention(q, k, v, mask), "return value")
    prop(bool(torch.isfinite(out["out"]).all()), "a query whose every key is masked must give weights 0 and output 0, not NaN")


@case("1.1", "sdpa_float64", f"{QKV} in float64, no leading dimensions: q (5, 4)", ("attention",))
def _sdpa_64(dev, out):
    q, k, v = (t[0, 0] for t in _qkv(dev, torch.float64))
    o, w = pair(attention.scaled_dot_product_attention(q, k, v), "return value")
    like(o, q, "float64 inputs: out")
    like(w, q, "float64 inputs: weights")
    out["out"], out["weights"] = o, w


@case("1.2", "causal_mask", "N=5, device='cpu' (a string), and N=3 on torch.device('meta')")
def _causal(dev, out):
    m = attention.causal_mask(5, device=str(dev))
    prop(isinstance(m, torch.Tensor) and m.dtype == torch.bool and tuple(m.shape) == (5, 5),
         f"expected a bool tensor (5, 5), got {getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    out["mask"] = m.float()
    x = randn(1, 5, 4, seed=6, device=dev)
    y = x.clone()
    y[:, 3:] += 1.0  # change the future of position 2
    a, b = (torch.nn.functional.scaled_dot_product_attention(t, t, t, attn_mask=m) for t in (x, y))
    prop(bool(m.diagonal().all()), "every token must attend to itself (the diagonal must be True)")
    prop(bool((a[:, :3] - b[:, :3]).abs().max() < 1e-5), "outputs before position t must not depend on tokens after t (the future)")
    meta = attention.causal_mask(3, device=torch.device("meta"))
    prop(meta.device.type == "meta", f"the mask must be created on the device given (asked for meta, got {meta.device})")


@case("1.3", "single_head", "SingleHeadAttention(D=8, d=4), z (B=2, N=5, D=8), no mask", ("attention",))
def _single(dev, out):
    m = set_params(attention.SingleHeadAttention(8, 4), 7, dev)
    z = randn(2, 5, 8, seed=8, device=dev)
    out["out"], out["weights"] = pair(m(z), "return value")
    rows_sum_to_one(out["weights"], "SingleHeadAttention")
    equivariant(lambda t: m(t)[0], z, "SingleHeadAttention")


@case("1.3", "single_head_mask", "SingleHeadAttention(D=8, d=4), z (B=2, N=5, D=8), bool mask (5, 5)", ("attention",))
def _single_mask(dev, out):
    m = set_params(attention.SingleHeadAttention(8, 4), 7, dev)
    mask = torch.ones(5, 5, dtype=torch.bool, device=dev).tril()
    out["out"], out["weights"] = pair(m(randn(2, 5, 8, seed=8, device=dev), mask), "return value")


@case("1.4", "multi_head", "MultiHeadAttention(D=8, h=2), x (B=2, N=5, D=8); need_weights False and True")
def _multi(dev, out):
    m = set_params(attention.MultiHeadAttention(8, 2), 9, dev)
    x = randn(2, 5, 8, seed=10, device=dev)
    out["out"] = m(x)
    out["out_need_weights"], out["weights"] = pair(m(x, need_weights=True), "need_weights=True")
    prop(tuple(out["weights"].shape) == (2, 2, 5, 5), f"need_weights=True: expected weights (B=2, h=2, N=5, N=5), got {tuple(out['weights'].shape)}")
    rows_sum_to_one(out["weights"], "MultiHeadAttention")
    equivariant(m, x, "MultiHeadAttention")


@case("1.4", "multi_head_mask", "MultiHeadAttention(D=8, h=2), x (2, 5, 8); causal bool mask and additive mask (5, 5), fused and not")
def _multi_mask(dev, out):
    m = set_params(attention.MultiHeadAttention(8, 2), 9, dev)
    x = randn(2, 5, 8, seed=10, device=dev)
    out["out_causal"] = m(x, mask=torch.ones(5, 5, dtype=torch.bool, device=dev).tril())
    m.fused = False
    out["out_additive"] = m(x, mask=randn(5, 5, seed=34, device=dev))
    out["out_causal_manual"] = m(x, mask=torch.ones(5, 5, dtype=torch.bool, device=dev).tril())


@case("1.5", "cross", "CrossAttention(D=8, h=2, context_dim=6), x (B=2, N=4, 8), context (2, M=7, 6); bool mask (4, 7)")
def _cross(dev, out):
    m = set_params(attention.CrossAttention(8, 2, context_dim=6), 11, dev)
    x, ctx = randn(2, 4, 8, seed=12, device=dev), randn(2, 7, 6, seed=13, device=dev)
    out["out"] = m(x, ctx)
    out["out_need_weights"], out["weights"] = pair(m(x, ctx, need_weights=True), "need_weights=True")
    prop(tuple(out["weights"].shape) == (2, 2, 4, 7), f"expected weights (B=2, h=2, N=4, M=7), got {tuple(out['weights'].shape)}")
    mask = randn(4, 7, seed=35, device=dev) > 0
    mask[:, 0] = True
    out["out_mask"] = m(x, ctx, mask=mask)


class _StandIn(torch.nn.Module):
    """A fixed function of (y, context) in place of CrossAttention: Task 1.6 is checked on its own."""

    def __init__(self, dev):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(6, 8)
        set_params(self, 36, dev)
        self.masks = []

    def forward(self, x, context, mask=None, need_weights=False):
        self.masks.append(mask)
        return torch.tanh(self.a(x)) + self.b(context).mean(dim=1, keepdim=True)


@case("1.6", "gated_cross", "GatedCrossAttention(D=8, h=2, context_dim=6) with a stand-in for CrossAttention, y (2, 4, 8), context (2, 7, 6)")
def _gated(dev, out):
    m = attention.GatedCrossAttention(8, 2, context_dim=6).to(dev)
    m.xattn = stand_in = _StandIn(dev)
    y, ctx = randn(2, 4, 8, seed=15, device=dev), randn(2, 7, 6, seed=16, device=dev)
    prop(float(m.alpha) == 0, f"alpha must start at 0, got {float(m.alpha)}")
    out["out_alpha_0"] = m(y, ctx)
    with torch.no_grad():
        m.alpha.fill_(0.7)
    out["out"] = m(y, ctx)
    mask = randn(4, 7, seed=37, device=dev) > 0
    m(y, ctx, mask)
    prop(stand_in.masks[-1] is mask, "the mask must be passed on to self.xattn")
    prop(bool((out["out_alpha_0"] - y).abs().max() == 0), "with alpha = 0 the gated layer must be the identity")


# --- Exercise 2 ------------------------------------------------------------------------------

@case("2.1", "mlp", "MLP(D=8, D_mlp=16), x (B=2, N=5, D=8) in eval() mode, then with dropout p=0.5 (eval) and p=1 (train)")
def _mlp(dev, out):
    m = set_params(encoder.MLP(8, 16), 17, dev)
    x = randn(2, 5, 8, seed=18, device=dev)
    out["out"] = m(x)
    dropout = set_params(encoder.MLP(8, 16, dropout=0.5), 17, dev).eval()
    out["out_eval_dropout"] = dropout(x)
    prop(bool((dropout(x) - out["out_eval_dropout"]).abs().max() == 0), "in eval() mode dropout must do nothing: two calls gave different outputs")
    drop_all = set_params(encoder.MLP(8, 16, dropout=1.0), 17, dev).train()(x)
    prop(bool(drop_all.abs().max() == 0), "with dropout p=1 in train() mode the output must be 0 (dropout after fc2, as the docstring says)")


@case("2.2", "layernorm", "LayerNorm(D=8, fused=False), x (B=2, N=5, D=8) with mean 1 and std 3; weight 1 / bias 0, then seeded", ("layer_norm",))
def _ln(dev, out):
    m = encoder.LayerNorm(8, fused=False).to(dev)
    x = randn(2, 5, 8, seed=19, device=dev) * 3 + 1
    out["out_unit"] = y = m(x)
    set_params(m, 20, dev)
    out["out"] = m(x)
    prop(bool(y.mean(-1).abs().max() < 1e-4), "with weight 1 and bias 0 every token must have mean 0 over its features")
    x2 = x.clone()
    x2[1] *= 100.0  # another image in the batch changes
    prop(bool((m(x2)[0] - m(x)[0]).abs().max() < 1e-5), "a token's output must not depend on other images in the batch (that is BatchNorm)")


@case("2.2", "layernorm_eps", "LayerNorm(D=4, eps=0.5, fused=False), x (3, 4) and a constant token", ("layer_norm",))
def _ln_eps(dev, out):
    m = set_params(encoder.LayerNorm(4, eps=0.5, fused=False), 38, dev)
    out["out"] = m(randn(3, 4, seed=39, device=dev))
    out["out_constant"] = m(torch.full((1, 4), 2.5, device=dev))


def _block(cls, seed, dev, out):
    m = set_params(cls(8, 2, 16), seed, dev)
    x = randn(2, 5, 8, seed=seed + 1, device=dev)
    out["out"] = m(x)
    out["out_need_weights"], w = pair(m(x, need_weights=True), "need_weights=True")
    prop(tuple(w.shape) == (2, 2, 5, 5), f"need_weights=True: expected weights (2, 2, 5, 5), got {tuple(w.shape)}")
    out["out_mask"] = m(x, mask=torch.ones(5, 5, dtype=torch.bool, device=dev).tril())


BLOCK = "(D=8, h=2, D_mlp=16), x (B=2, N=5, D=8); need_weights; causal bool mask (5, 5)"


@case("2.3", "encoder_block", f"EncoderBlock{BLOCK}")
def _pre(dev, out):
    _block(encoder.EncoderBlock, 21, dev, out)


@case("2.4", "post_norm_block", f"PostNormEncoderBlock{BLOCK}")
def _post(dev, out):
    _block(encoder.PostNormEncoderBlock, 23, dev, out)


from course_lib.checks import cases_more  # noqa: E402,F401 - registers the cases of Exercises 3-5
