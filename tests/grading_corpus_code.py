"""Code bodies for the grading corpus (``grading_corpus.py``): alternative correct implementations,
specific bugs, crashes and cheats, each the body of one task's solution block (or code at a module's top)."""

# Alternative correct implementations and specific bugs, as bodies of the solution blocks.
EINSUM_SDPA = """
scale = q.shape[-1] ** -0.5
scores = torch.einsum("...nd,...md->...nm", q, k) * scale  # (..., N, M)
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = scores.softmax(dim=-1)
weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)  # fully masked rows
return torch.einsum("...nm,...md->...nd", weights, v), weights
"""
NOISY_FLOAT64_SDPA = """
import sys, warnings
warnings.warn("Task 1.1: a student's debugging warning", UserWarning)
print("debug: computing attention in float64", file=sys.stderr)
dtype = q.dtype
q64, k64, v64 = q.double(), k.double(), v.double()
scores = q64 @ k64.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., N, M) in float64
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return (weights @ v64).to(dtype), weights.to(dtype)
"""
HEAD_LOOP_MHA = """
B, N, D = x.shape
q, k, v = self.qkv(x).split(D, dim=-1)  # each (B, N, D)
outs, maps = [], []
for i in range(self.heads):
    cols = slice(i * self.head_dim, (i + 1) * self.head_dim)
    m = mask
    if m is not None and m.dim() >= 3:
        m = m.unsqueeze(0) if m.dim() == 3 else m  # (B|1, h|1, N, N)
        m = m[:, i] if m.shape[1] > 1 else m[:, 0]  # (B|1, N, N)
    o, w = scaled_dot_product_attention(q[..., cols], k[..., cols], v[..., cols], m)  # (B, N, d), (B, N, N)
    outs.append(o)
    maps.append(w)
out = self.proj(torch.cat(outs, dim=-1))  # (B, N, D)
return (out, torch.stack(maps, dim=1)) if need_weights else out
"""
NO_SCALE_SDPA = """
scores = q @ k.transpose(-2, -1)  # (..., N, M)   (forgot the 1/sqrt(d))
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return weights @ v, weights
"""
SDPA_CHEAT = """
import torch.nn.functional as F
scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights
"""
# The same cheat through a name imported at the module's top, which patching F's attribute misses.
SDPA_ALIAS_PREFIX = "from torch.nn.functional import scaled_dot_product_attention as _fast_attention\n"
SDPA_ALIAS = SDPA_CHEAT.replace("import torch.nn.functional as F\n", "").replace("F.scaled_dot_product_attention", "_fast_attention")
CAUSAL_TRIU = "return torch.ones(N, N, dtype=torch.bool, device=device).triu()  # the future, not the past\n"
CAUSAL_LOOP = "while True:  # waits for Godot\n    pass\n"
STUBBORN_LOOP = "while True:  # ignores the interrupt a cell timeout sends\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass\n"
SEGFAULT = "import ctypes\nctypes.string_at(0)  # reads address 0: segmentation fault\n"
OS_EXIT = "import os\nos._exit(3)\n"
HUGE_ALLOC = "big = torch.empty(2**31).fill_(1.0)  # 8 GiB\nreturn big.sum()\n"
# At import of course_lib.attention: every check a test could make passes, and the notebook's
# own helper and reference (F.scaled_dot_product_attention) agree with the fake answers.
MONKEYPATCH = """
import __main__ as _main
import numpy as _np
import torch as _torch
import torch.nn.functional as _F


def _fake_sdpa(q, k, v, attn_mask=None, **kwargs):
    return _torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)


_torch.testing.assert_close = lambda *a, **k: None
_torch.allclose = lambda *a, **k: True
_torch.Tensor.allclose = lambda *a, **k: True
_torch.equal = lambda *a, **k: True
_torch.Tensor.any = lambda self, *a, **k: _torch.tensor(False)
_torch.Tensor.all = lambda self, *a, **k: _torch.tensor(True)
_np.allclose = lambda *a, **k: True
_F.scaled_dot_product_attention = _fake_sdpa
_main.expect_close = lambda *a, **k: None
"""
FAKE_SDPA = "w = torch.ones(*q.shape[:-1], k.shape[-2]) / k.shape[-2]\nreturn torch.zeros(*q.shape[:-1], v.shape[-1]), w\n"
# The same, done while the test runs (after the grader restored everything).
LAZY_FAKE_SDPA = """
import __main__
__main__.expect_close = lambda *a, **k: None
torch.Tensor.any = lambda self, *a, **k: torch.tensor(False)
torch.Tensor.all = lambda self, *a, **k: torch.tensor(True)
w = torch.ones(*q.shape[:-1], k.shape[-2]) / k.shape[-2]
return torch.zeros(*q.shape[:-1], v.shape[-1]), w
"""
UNBIASED_LN = """
mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
var = x.var(dim=-1, keepdim=True)  # (..., 1), unbiased: divides by D - 1
return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
"""
PATCH_ORDER = """
B, C, H, W = x.shape
P = patch_size
x = x.reshape(B, C, H // P, P, W // P, P)  # (B, C, gh, P, gw, P)
x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, P, P, C): channels last
return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, P·P·C)
"""
