"""Tasks 3.1-3.5: patches against F.unfold, the conv against a linear map, position embeddings by formula."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.embeddings import (
    ClassTokenPositionEmbedding, PatchEmbedding, patchify, sincos_2d_position_embedding, sinusoidal_position_embedding,
)


@pytest.mark.task3_1
def test_patchify_matches_unfold(device):
    x = torch.randn(2, 3, 8, 12, device=device)
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    torch.testing.assert_close(p, F.unfold(x, 4, stride=4).transpose(1, 2), rtol=0, atol=0)
    # patch 1 is the second patch of the first row; its first value is pixel (0, 4) of channel 0
    assert p[0, 1, 0] == x[0, 0, 0, 4]


@pytest.mark.task3_1
def test_patchify_error_names_the_leftover():
    with pytest.raises(ValueError, match=r"divisible by the patch size P=16.*\(1, 3, 30, 32\)"):
        patchify(torch.randn(1, 3, 30, 32), 16)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify(torch.randn(3, 32, 32), 16)
    with pytest.raises(TypeError, match="uint8"):
        patchify(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 16)


@pytest.mark.task3_2
def test_patch_embedding_is_a_linear_map_of_patches(device, tol):
    m = PatchEmbedding(3, 4, 10).to(device)
    x = torch.randn(2, 3, 8, 12, device=device)
    tokens = m(x)
    assert tokens.shape == (2, 6, 10)
    linear = patchify(x, 4) @ m.proj.weight.reshape(10, -1).T + m.proj.bias
    torch.testing.assert_close(tokens, linear, **tol)


@pytest.mark.task3_2
def test_patch_embedding_checks_channels():
    with pytest.raises(ValueError, match=r"C=3.*\(1, 1, 8, 8\)"):
        PatchEmbedding(3, 4, 10)(torch.randn(1, 1, 8, 8))


@pytest.mark.task3_3
def test_sinusoidal_matches_formula():
    pe = sinusoidal_position_embedding(50, 16)
    assert pe.shape == (50, 16) and pe.dtype == torch.get_default_dtype()
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    with pytest.raises(ValueError, match="D=7 must be even"):
        sinusoidal_position_embedding(4, 7)


@pytest.mark.task3_4
def test_sincos_2d_layout():
    pe = sincos_2d_position_embedding(3, 4, 16)
    assert pe.shape == (12, 16)
    omega = 1 / 10000 ** (torch.arange(4, dtype=torch.float64) / 3)
    for n in (0, 5, 11):
        y, x = divmod(n, 4)
        expected = torch.cat([torch.sin(x * omega), torch.cos(x * omega), torch.sin(y * omega), torch.cos(y * omega)])
        torch.testing.assert_close(pe[n].double(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="D=18 must be divisible by 4"):
        sincos_2d_position_embedding(2, 2, 18)


@pytest.mark.task3_5
def test_class_token_first_then_positions(device, tol):
    m = ClassTokenPositionEmbedding(6, 8).to(device)
    with torch.no_grad():
        m.cls_token.normal_()
    x = torch.randn(2, 6, 8, device=device)
    z = m(x)
    assert z.shape == (2, 7, 8)
    torch.testing.assert_close(z[:, 0], (m.cls_token[0, 0] + m.pos_embedding[0, 0]).expand(2, 8), **tol)
    torch.testing.assert_close(z[:, 1:], x + m.pos_embedding[:, 1:], **tol)
    with pytest.raises(ValueError, match=r"N=6.*\(2, 5, 8\)"):
        m(torch.randn(2, 5, 8, device=device))
