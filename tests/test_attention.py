"""Tasks 1.1-1.6 against torch's own attention: F.scaled_dot_product_attention and nn.MultiheadAttention."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.attention import (
    CrossAttention, GatedCrossAttention, MultiHeadAttention, SingleHeadAttention, causal_mask, scaled_dot_product_attention,
)


def qkv(device, B=2, h=3, N=5, M=7, d=8):
    return (torch.randn(B, h, N, d, device=device), torch.randn(B, h, M, d, device=device), torch.randn(B, h, M, d, device=device))


@pytest.mark.task1_1
def test_sdpa_matches_torch(device, tol):
    q, k, v = qkv(device)
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **tol)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, device=device), **tol)


@pytest.mark.task1_1
def test_sdpa_bool_and_additive_masks(device, tol):
    q, k, v = qkv(device)
    mask = torch.rand(5, 7, device=device) > 0.5
    mask[:, 0] = True
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **tol)
    additive = torch.randn(5, 7, device=device)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, additive)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=additive), **tol)


@pytest.mark.task1_1
def test_sdpa_fully_masked_row_is_zero_not_nan(device):
    q, k, v = qkv(device)
    mask = torch.ones(5, 7, dtype=torch.bool, device=device)
    mask[2] = False
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and (out[:, :, 2] == 0).all() and (w[:, :, 2] == 0).all()


@pytest.mark.task1_1
def test_sdpa_single_token(device, tol):
    q, k, v = qkv(device, N=1, M=1)
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, v, **tol)
    assert (w == 1).all()


@pytest.mark.task1_1
def test_sdpa_gradcheck():
    q, k, v = (t.double().requires_grad_() for t in qkv("cpu", B=1, h=2, N=3, M=4, d=2))
    assert torch.autograd.gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c)[0], (q, k, v))


@pytest.mark.task1_1
def test_sdpa_errors_name_the_shapes():
    q, k, v = qkv("cpu")
    with pytest.raises(ValueError, match=r"q \(2, 3, 5, 8\) and k \(2, 3, 7, 4\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(TypeError, match="floating-point"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(TypeError, match="mask must be bool"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7, dtype=torch.long))


@pytest.mark.task1_2
def test_causal_mask_matches_is_causal(device, tol):
    q, k, v = qkv(device, M=5)
    mask = causal_mask(5, device=device)
    assert mask.dtype == torch.bool and mask.shape == (5, 5) and mask.device.type == device.type
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), expected, **tol)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask)[0], expected, **tol)


@pytest.mark.task1_3
def test_single_head_by_hand(device, tol):
    m = SingleHeadAttention(16, 8).to(device)
    z = torch.randn(2, 5, 16, device=device)
    out, w = m(z)
    q, k, v = (z @ m.qkv.weight.T + m.qkv.bias).split(8, dim=-1)
    expected_w = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1)
    torch.testing.assert_close(w, expected_w, **tol)
    torch.testing.assert_close(out, expected_w @ v, **tol)
    perm = torch.randperm(5, device=device)
    torch.testing.assert_close(m(z[:, perm])[0], out[:, perm], **tol)


def _torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(ours.dim, ours.heads, batch_first=True).to(ours.qkv.weight.device)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    return ref


@pytest.mark.task1_4
@pytest.mark.parametrize("fused", [True, False])
def test_multi_head_matches_nn_multihead_attention(device, tol, fused):
    ours = MultiHeadAttention(24, 4, fused=fused).to(device)
    ref = _torch_mha(ours)
    x = torch.randn(3, 6, 24, device=device)
    expected, expected_w = ref(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(ours(x), expected, **tol)
    out, w = ours(x, need_weights=True)
    torch.testing.assert_close(out, expected, **tol)
    torch.testing.assert_close(w, expected_w, **tol)
    mask = causal_mask(6, device=device)
    torch.testing.assert_close(ours(x, mask=mask), ref(x, x, x, attn_mask=~mask)[0], **tol)  # torch's bool mask: True = blocked


@pytest.mark.task1_4
def test_fused_and_manual_paths_agree(device, tol):
    m = MultiHeadAttention(32, 4).to(device)
    x = torch.randn(2, 9, 32, device=device)
    m.fused = True
    fused = m(x)
    m.fused = False
    torch.testing.assert_close(m(x), fused, **tol)


@pytest.mark.task1_4
def test_multi_head_parameter_count():
    m = MultiHeadAttention(768, 12)
    assert sum(p.numel() for p in m.parameters()) == 4 * 768**2 + 4 * 768 == 2_362_368


@pytest.mark.task1_4
def test_multi_head_gradcheck():
    m = MultiHeadAttention(4, 2, fused=False).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.task1_4
def test_multi_head_errors():
    with pytest.raises(ValueError, match="D=10 is not divisible by heads h=3"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, N, D=8\).*got a tensor of shape \(2, 5, 6\)"):
        MultiHeadAttention(8, 2)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"3 dimensions.*\(5, 8\)"):
        MultiHeadAttention(8, 2)(torch.randn(5, 8))


@pytest.mark.task1_5
@pytest.mark.parametrize("fused", [True, False])
def test_cross_attention_matches_nn_multihead_attention(device, tol, fused):
    ours = CrossAttention(16, 4, context_dim=12, fused=fused).to(device)
    ref = nn.MultiheadAttention(16, 4, kdim=12, vdim=12, batch_first=True).to(device)
    with torch.no_grad():
        ref.q_proj_weight.copy_(ours.q.weight)
        ref.k_proj_weight.copy_(ours.kv.weight[:16])
        ref.v_proj_weight.copy_(ours.kv.weight[16:])
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x, ctx = torch.randn(2, 5, 16, device=device), torch.randn(2, 9, 12, device=device)
    expected, expected_w = ref(x, ctx, ctx, average_attn_weights=False)
    torch.testing.assert_close(ours(x, ctx), expected, **tol)
    out, w = ours(x, ctx, need_weights=True)
    assert w.shape == (2, 4, 5, 9)
    torch.testing.assert_close(w, expected_w, **tol)


@pytest.mark.task1_5
def test_cross_attention_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="same batch size"):
        CrossAttention(8, 2)(torch.randn(2, 3, 8), torch.randn(3, 4, 8))


@pytest.mark.task1_6
def test_gated_cross_attention_is_identity_at_init(device, tol):
    m = GatedCrossAttention(16, 4, context_dim=12).to(device)
    y, ctx = torch.randn(2, 5, 16, device=device), torch.randn(2, 9, 12, device=device)
    assert torch.equal(m(y, ctx), y)
    with torch.no_grad():
        m.alpha.fill_(0.5)
    torch.testing.assert_close(m(y, ctx), y + torch.tanh(torch.tensor(0.5)) * m.xattn(y, ctx), **tol)


@pytest.mark.task1_6
def test_gated_cross_attention_alpha_gets_gradient():
    m = GatedCrossAttention(8, 2)
    m(torch.randn(1, 3, 8), torch.randn(1, 4, 8)).sum().backward()
    assert m.alpha.grad is not None and m.alpha.grad.abs() > 0
