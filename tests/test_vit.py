"""Task 4.1 and the config: variants, errors, and parity with torchvision's VisionTransformer."""
import pytest
import torch
import torchvision

from course_lib.torchvision_compat import (
    from_torchvision_state_dict, to_torchvision_state_dict, torchvision_attention_weights, torchvision_from_vit, vit_from_torchvision,
)
from course_lib.vit import SIZES, VisionTransformer, ViTConfig, vit_config


def test_variants_from_strings():
    b16 = vit_config("B/16")
    assert (b16.dim, b16.depth, b16.heads, b16.mlp_dim, b16.patch_size) == (768, 12, 12, 3072, 16)
    assert b16.num_patches + 1 == 197 and b16.head_dim == 64
    assert vit_config("H/14").num_patches == 256
    assert vit_config("B/32", num_classes=10).num_classes == 10
    assert set(SIZES) >= {"Ti", "S", "B", "L", "H"}
    digits, cifar = vit_config("digits"), vit_config("cifar")
    assert (digits.image_size, digits.in_channels, cifar.image_size, cifar.in_channels) == (8, 1, 32, 3)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown ViT variant 'B16'"):
        vit_config("B16")
    with pytest.raises(ValueError, match="image_size=30 is not divisible by patch_size=16"):
        ViTConfig(image_size=30)
    with pytest.raises(ValueError, match="D=100 is not divisible by heads h=12"):
        vit_config("B/16", dim=100)


def test_init_std():
    """0.02 by default (timm, big_vision); None: 1/sqrt(fan_in) for every Linear, the head included;
    pos_std: the position embedding's."""
    torch.manual_seed(0)
    default = VisionTransformer(vit_config("digits", dim=64, mlp_dim=256))
    fan_in = VisionTransformer(vit_config("digits", dim=64, mlp_dim=256, init_std=None))
    for model, fc2_std, head_std in ((default, 0.02, 0.02), (fan_in, 256 ** -0.5, 64 ** -0.5)):
        assert model.blocks[0].mlp.fc2.weight.std().item() == pytest.approx(fc2_std, rel=0.05)
        assert model.head.weight.std().item() == pytest.approx(head_std, rel=0.1)
        assert model.blocks[0].attn.qkv.bias.abs().max().item() == 0.0
    assert default.embed.pos_embedding.std().item() == pytest.approx(0.02, rel=0.1)
    wide = VisionTransformer(vit_config("digits", pos_std=0.5))
    assert wide.embed.pos_embedding.std().item() == pytest.approx(0.5, rel=0.1)


@pytest.mark.task4_1
def test_forward_shapes_and_attention(device):
    m = VisionTransformer(vit_config("test")).to(device).eval()
    x = torch.randn(3, 3, 8, 8, device=device)
    assert m(x).shape == (3, 5)
    tokens = m.forward_features(x)
    assert tokens.shape == (3, 5, 16)
    torch.testing.assert_close(m.forward_head(tokens), m(x))
    logits, atts = m(x, return_attention=True)
    assert len(atts) == 2 and all(a.shape == (3, 2, 5, 5) for a in atts)
    torch.testing.assert_close(logits, m(x), rtol=1e-4, atol=1e-5)


@pytest.mark.task4_1
def test_input_errors_name_the_shapes():
    m = VisionTransformer(vit_config("test"))
    with pytest.raises(ValueError, match=r"\(B, C=3, H=8, W=8\).*\(1, 3, 16, 16\)"):
        m(torch.randn(1, 3, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.task4_1
def test_fused_and_hand_written_models_agree(device):
    fused = VisionTransformer(vit_config("test")).to(device).eval()
    manual = VisionTransformer(vit_config("test", fused=False)).to(device).eval()
    manual.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 8, 8, device=device)
    torch.testing.assert_close(manual(x), fused(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.task4_1
def test_torchvision_vit_b_16_round_trip(device):
    """A course_lib ViT built from a random torchvision vit_b_16 gives the same logits within 1e-5."""
    torch.manual_seed(0)
    tv = torchvision.models.vit_b_16().to(device).eval()
    ours = vit_from_torchvision(tv).to(device).eval()
    x = torch.randn(1, 3, 224, 224, device=device)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    tol = 1e-5 if device.type == "cpu" else 2e-3
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    back = torchvision_from_vit(ours).to(device).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x), expected, rtol=0, atol=tol)


def test_state_dict_conversion_is_strict():
    ours = VisionTransformer(vit_config("test")).state_dict()
    tv = to_torchvision_state_dict(ours)
    assert from_torchvision_state_dict(tv).keys() == ours.keys()
    with pytest.raises(KeyError, match="unexpected"):
        to_torchvision_state_dict({**ours, "extra.weight": torch.zeros(1)})
    ours.pop("head.bias")
    with pytest.raises(KeyError, match="missing"):
        to_torchvision_state_dict(ours)


@pytest.mark.task4_1
def test_grey_images_round_trip_and_attention_weights():
    ours = VisionTransformer(vit_config("digits")).eval()
    tv = torchvision_from_vit(ours).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), ours(x), rtol=1e-4, atol=1e-5)
    weights = torchvision_attention_weights(tv, x)
    _, ours_weights = VisionTransformer.forward(ours, x, return_attention=True)
    assert len(weights) == ours.config.depth
    for theirs, mine in zip(weights, ours_weights):
        torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-5)
