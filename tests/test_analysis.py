"""Tasks 5.1-5.4: attention distance, power-law fits, parameter and FLOP counts against torch/torchvision."""
import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from course_lib.analysis import count_flops, count_parameters, fit_power_law, mean_attention_distance
from course_lib.vit import VisionTransformer, vit_config


@pytest.mark.task5_1
def test_uniform_attention_on_vit_b16_is_116_49_px():
    d = mean_attention_distance(torch.full((2, 12, 197, 197), 1 / 197), 14, 16)
    assert d.shape == (12,)
    assert abs(d[0].item() - 116.49) < 0.005


@pytest.mark.task5_1
def test_one_hot_attention_distance():
    attn = torch.zeros(1, 2, 4, 4)  # 2x2 grid, no class token
    attn[0, 0] = torch.eye(4)  # head 0 looks at itself: distance 0
    attn[0, 1, :, :] = torch.eye(4)[[3, 2, 1, 0]]  # head 1 looks at the opposite corner: diagonal of 10 px patches
    d = mean_attention_distance(attn, 2, 10, has_cls=False)
    torch.testing.assert_close(d, torch.tensor([0.0, 200**0.5], dtype=torch.float64))


@pytest.mark.task5_1
def test_attention_distance_shape_error():
    with pytest.raises(ValueError, match="T = 14\\*14 \\+ 1 = 197"):
        mean_attention_distance(torch.rand(12, 196, 196), 14, 16)


@pytest.mark.task5_2
def test_power_law_recovers_kaplan_exponent():
    n = torch.logspace(6, 11, 12, dtype=torch.float64)
    noise = 1 + 0.003 * torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x_c, alpha = fit_power_law(n, (8.8e13 / n) ** 0.076 * noise)
    assert abs(alpha / 0.076 - 1) < 0.01
    x_c, alpha = fit_power_law([1e8, 1e9], [(8.8e13 / 1e8) ** 0.076, (8.8e13 / 1e9) ** 0.076])
    assert abs(alpha - 0.076) < 1e-9 and abs(x_c / 8.8e13 - 1) < 1e-5
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2], [1, -1])


@pytest.mark.task5_3
@pytest.mark.parametrize("name,builder", [("B/16", "vit_b_16"), ("B/32", "vit_b_32"), ("L/16", "vit_l_16"), ("H/14", "vit_h_14")])
def test_parameter_counts_match_torchvision(name, builder):
    with torch.device("meta"):  # no memory, no init cost
        tv = getattr(torchvision.models, builder)()
    assert count_parameters(vit_config(name, image_size=tv.image_size)) == sum(p.numel() for p in tv.parameters())


@pytest.mark.task5_3
@pytest.mark.parametrize("name,expected", [("Ti/16", 5_717_416), ("S/16", 22_050_664), ("B/16", 86_567_656)])
def test_parameter_counts_match_the_course_table(name, expected):
    with torch.device("meta"):
        assert sum(p.numel() for p in VisionTransformer(vit_config(name)).parameters()) == expected
    assert count_parameters(vit_config(name)) == expected


@pytest.mark.task5_4
@pytest.mark.parametrize("name", ["test", "digits", "Ti/16"])
def test_flops_match_flop_counter(name):
    config = vit_config(name, fused=False)
    model = VisionTransformer(config).eval()
    x = torch.randn(1, config.in_channels, config.image_size, config.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    assert count_flops(config) == counter.get_total_flops()
