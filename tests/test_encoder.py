"""Tasks 2.1-2.4 against nn.GELU/nn.LayerNorm/nn.TransformerEncoderLayer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.encoder import MLP, EncoderBlock, LayerNorm, PostNormEncoderBlock


@pytest.mark.task2_1
def test_mlp_matches_sequential(device, tol):
    m = MLP(16, 64).to(device)
    ref = nn.Sequential(m.fc1, nn.GELU(), m.fc2)
    x = torch.randn(2, 5, 16, device=device)
    torch.testing.assert_close(m(x), ref(x), **tol)
    assert sum(p.numel() for p in MLP(768, 3072).parameters()) == 2 * 768 * 3072 + 3072 + 768 == 4_722_432


@pytest.mark.task2_1
def test_mlp_uses_exact_gelu():
    m = MLP(1, 1)
    with torch.no_grad():
        m.fc1.weight.fill_(1), m.fc1.bias.zero_(), m.fc2.weight.fill_(1), m.fc2.bias.zero_()
    x = torch.linspace(-3, 3, 13)[:, None]
    torch.testing.assert_close(m(x), F.gelu(x), rtol=0, atol=1e-7)  # tanh approximation is off by up to ~5e-4


@pytest.mark.task2_2
def test_layernorm_matches_torch(device, tol):
    ours = LayerNorm(32, eps=1e-6, fused=False).to(device)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    ref = nn.LayerNorm(32, eps=1e-6).to(device)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 7, 32, device=device) * 5 + 3
    torch.testing.assert_close(ours(x), ref(x), **tol)
    ours.fused = True
    torch.testing.assert_close(ours(x), ref(x), **tol)


@pytest.mark.task2_2
def test_layernorm_statistics_are_per_token(device):
    x = torch.randn(8, 3, 16, device=device) * 4 + 2
    y = LayerNorm(16, fused=False).to(device)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(8, 3, device=device), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(8, 3, device=device), atol=1e-3, rtol=0)


@pytest.mark.task2_2
def test_layernorm_gradcheck():
    m = LayerNorm(5, fused=False).double()
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.task2_2
def test_layernorm_error_names_the_width():
    with pytest.raises(ValueError, match=r"D=8.*\(2, 7\)"):
        LayerNorm(8)(torch.randn(2, 7))


def _torch_layer(ours: EncoderBlock, norm_first: bool) -> nn.TransformerEncoderLayer:
    D = ours.attn.dim
    ref = nn.TransformerEncoderLayer(D, ours.attn.heads, ours.mlp.fc1.out_features, dropout=0.0, activation="gelu",
                                     layer_norm_eps=1e-6, batch_first=True, norm_first=norm_first)
    ref.load_state_dict({
        "self_attn.in_proj_weight": ours.attn.qkv.weight, "self_attn.in_proj_bias": ours.attn.qkv.bias,
        "self_attn.out_proj.weight": ours.attn.proj.weight, "self_attn.out_proj.bias": ours.attn.proj.bias,
        "linear1.weight": ours.mlp.fc1.weight, "linear1.bias": ours.mlp.fc1.bias,
        "linear2.weight": ours.mlp.fc2.weight, "linear2.bias": ours.mlp.fc2.bias,
        "norm1.weight": ours.norm1.weight, "norm1.bias": ours.norm1.bias,
        "norm2.weight": ours.norm2.weight, "norm2.bias": ours.norm2.bias,
    })
    return ref.to(ours.attn.qkv.weight.device).eval()


def _randomise(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.3)
    return m.eval()


@pytest.mark.task2_3
@pytest.mark.parametrize("fused", [True, False])
def test_pre_norm_block_matches_transformer_encoder_layer(device, tol, fused):
    ours = _randomise(EncoderBlock(16, 4, 32, fused=fused)).to(device)
    x = torch.randn(2, 6, 16, device=device)
    expected = _torch_layer(ours, norm_first=True)(x)
    torch.testing.assert_close(ours(x), expected, **tol)
    out, w = ours(x, need_weights=True)
    torch.testing.assert_close(out, expected, **tol)
    assert w.shape == (2, 4, 6, 6)


@pytest.mark.task2_4
def test_post_norm_block_matches_transformer_encoder_layer(device, tol):
    ours = _randomise(PostNormEncoderBlock(16, 4, 32)).to(device)
    x = torch.randn(2, 6, 16, device=device)
    torch.testing.assert_close(ours(x), _torch_layer(ours, norm_first=False)(x), **tol)


@pytest.mark.task2_3
def test_block_gradcheck():
    m = EncoderBlock(4, 2, 8, fused=False).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
