"""course_lib.autoaugment: AutoAugment's CIFAR-10 policy per image, batched, against torchvision's ops.

The reference for one image is torchvision's own AutoAugment op dispatch
(``_apply_image_or_video_transform``, which calls ``v2.functional``) with the magnitude from
its own bins, so the batched ops are checked against what ``v2.AutoAugment`` does, not
against a reading of it. Runs on CUDA with COURSE_TEST_DEVICE=cuda.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2

from course_lib import autoaugment as A

DEVICE = torch.device(os.environ.get("COURSE_TEST_DEVICE", "cpu"))

_TV = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
_SPACE = {**v2.RandAugment._AUGMENTATION_SPACE, **v2.AutoAugment._AUGMENTATION_SPACE}  # RandAugment's has Identity
# Geometric ops sample with nearest neighbours: where a source coordinate lands on a half pixel,
# float rounding (bmm order, FMA) can pick the other neighbour. None do on the CPU today; allow 1%.
GEOMETRIC_TOLERANCE = 0.01


def torchvision_op(img: torch.Tensor, op: str, bin: int | None, negative: bool) -> torch.Tensor:
    """torchvision's AutoAugment applying ``op`` at magnitude ``bin`` (negated if signed and ``negative``)."""
    magnitudes, signed = _SPACE[op]
    table = magnitudes(10, img.shape[-2], img.shape[-1])
    m = 0.0 if table is None else float(table[bin])
    m = -m if signed and negative else m
    return _TV._apply_image_or_video_transform(img, op, m, interpolation=_TV.interpolation, fill=_TV._fill)


def images(B: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, 32, 32) uint8 with per-image ranges, a gradient and noise, plus edge cases for the histogram ops."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.randint(0, 200, (B, 1, 1, 1), generator=g)
    span = torch.randint(1, 256, (B, 1, 1, 1), generator=g)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    noise = torch.rand(B, 3, 32, 32, generator=g)
    x = (lo + span * (0.5 * (xx + yy) / 62 + 0.5 * noise)).clamp(max=255).to(torch.uint8)
    x[0] = 7  # flat: AutoContrast and Equalize keep it
    x[1, 0] = 200  # one flat channel
    x[2] = torch.where(noise[2] < 0.9, 10, 250).to(torch.uint8)  # two levels
    return x.to(DEVICE)


def assert_matches(out: torch.Tensor, ref: torch.Tensor, geometric: bool, what: str) -> None:
    differ = (out != ref).float().mean().item()
    if geometric:
        assert differ <= GEOMETRIC_TOLERANCE, f"{what}: {differ:.2%} of the pixels differ"
    else:
        assert differ == 0, f"{what}: {differ:.2%} of the pixels differ"


def test_policy_is_torchvisions():
    assert [tuple(tuple(step) for step in sub) for sub in _TV._policies] == list(A.CIFAR10_POLICY)
    assert set(_SPACE) == set(A.OPS) and A.OPS[1:6] == A.GEOMETRIC


@pytest.mark.parametrize("op", A.OPS)
def test_each_op_matches_torchvision_per_image(op):
    """Image i gets bin bins[i % 4] with sign (i // 4) % 2, all in one batch: torchvision's op on image i."""
    bins = (None,) if _SPACE[op][0](10, 32, 32) is None else (0, 3, 6, 9)
    aug = A.BatchAutoAugment([((op, 1.0, b), ("Identity", 1.0, None)) for b in bins])
    x = images(48)
    i = torch.arange(48, device=DEVICE)
    index = i % len(bins)
    negative = ((i // len(bins)) % 2 == 1).expand(2, 48)
    out = aug.apply(x, index, torch.ones(2, 48, dtype=torch.bool, device=DEVICE), negative)
    ref = torch.stack([torchvision_op(x[k], op, bins[index[k]], bool(negative[0, k])) for k in range(48)])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert_matches(out, ref, op in A.GEOMETRIC, op)
    if op not in ("Identity", "AutoContrast", "Equalize"):  # those two keep some of these images
        assert (out != x).any()


def test_whole_policy_matches_torchvision_image_by_image():
    """Random draws (sub-policy, coins, signs) per image; each image against torchvision's two steps in turn."""
    aug = A.BatchAutoAugment(seed=5)
    x = images(200, seed=1)
    index, applied, negative = aug.draw(x)
    out = aug.apply(x, index, applied, negative)
    for k in range(200):
        ref, geometric = x[k], False
        for s, (op, _, bin) in enumerate(A.CIFAR10_POLICY[index[k]]):
            if applied[s, k]:
                ref = torchvision_op(ref, op, bin, bool(negative[s, k]))
                geometric |= op in A.GEOMETRIC
        assert_matches(out[k], ref, geometric, f"image {k}, sub-policy {int(index[k])}")


def test_draws_are_per_image_and_uniform():
    aug = A.BatchAutoAugment(seed=0)
    n = 25 * 400
    index, applied, negative = aug.draw(torch.zeros(n, 1, 2, 2, dtype=torch.uint8, device=DEVICE))
    counts = torch.bincount(index.cpu(), minlength=25).double()
    chi2 = ((counts - n / 25) ** 2 / (n / 25)).sum().item()
    assert chi2 < 60, chi2  # 24 degrees of freedom: mean 24, P(chi2 > 60) < 1e-4
    prob = torch.tensor([[p for _, p, _ in sub] for sub in A.CIFAR10_POLICY], dtype=torch.float64)
    for s in range(2):  # each step applies with its probability
        freq = torch.zeros(25, dtype=torch.float64).index_add_(0, index.cpu(), applied[s].cpu().double()) / counts
        assert (freq - prob[:, s]).abs().max() < 0.1
    assert abs(negative.float().mean().item() - 0.5) < 0.02
    # one batch: many sub-policies, and one image copied 64 times comes out in many versions
    index, _, _ = aug.draw(torch.zeros(64, 3, 32, 32, dtype=torch.uint8, device=DEVICE))
    assert len(index.unique()) >= 15
    out = aug(images(4)[3:4].expand(64, -1, -1, -1).contiguous())
    assert len({tuple(img.flatten().tolist()) for img in out.cpu()}) >= 15


def test_output_dtype_shape_device_and_input_untouched():
    x = images(16)
    before = x.clone()
    out = A.BatchAutoAugment()(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.device == x.device
    assert torch.equal(x, before)
    with pytest.raises(ValueError):
        A.BatchAutoAugment()(x.float())
    with pytest.raises(ValueError):
        A.BatchAutoAugment([(("Bogus", 1.0, 0), ("Identity", 1.0, None))])


def test_reproducible_for_a_seed():
    x = images(64)
    a, b = A.BatchAutoAugment(seed=3), A.BatchAutoAugment(seed=3)
    first = a(x)
    assert torch.equal(first, b(x)) and torch.equal(a(x), b(x))
    assert not torch.equal(first, a(x))  # fresh draws every call
    assert not torch.equal(first, A.BatchAutoAugment(seed=4)(x))


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def test_no_loop_over_images_and_no_host_sync():
    """The same aten ops, as often, for 4 and for 64 images; none that reads a value back to the host."""
    aug = A.BatchAutoAugment()
    aug(images(4))  # builds the tables
    counts = []
    for B in (4, 64):
        x = images(B)
        with _RecordOps() as record:
            aug(x)
        counts.append(record.ops)
    assert counts[0] == counts[1]
    assert not {"aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.is_nonzero"} & set(counts[0])


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA only")
def test_no_cuda_sync():
    aug = A.BatchAutoAugment()
    x = images(256)
    aug(x)  # builds the tables (copies from the host)
    torch.cuda.set_sync_debug_mode("error")
    try:
        aug(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
