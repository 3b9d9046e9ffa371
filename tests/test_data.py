"""course_lib.data: the digits split, CIFAR-10 loading (on files the test writes), TensorLoader."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from course_lib import data

DEVICE = torch.device(os.environ.get("COURSE_TEST_DEVICE", "cpu"))


def test_digits_split_is_fixed_stratified_and_normalised():
    x_train, y_train, x_test, y_test = data.load_digits()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    # stratified: every class has 36 +- 1 test images (the 10 classes have 174..183 images)
    counts = torch.bincount(y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37, counts
    # standardised with the training set's statistics
    assert abs(x_train.mean().item()) < 1e-5 and abs(x_train.std().item() - 1) < 1e-5
    again = data.load_digits()
    assert all(torch.equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test), again))


def test_digits_datasets():
    train, test = data.digits_datasets()
    assert len(train) == 1437 and len(test) == 360
    x, y = train[0]
    assert x.shape == (1, 8, 8) and 0 <= int(y) < 10


def _write_cifar(root: str, per_batch: int = 4, test: int = 6) -> tuple[np.ndarray, list[int]]:
    """Write a tiny CIFAR-10 in the python-pickle layout torchvision reads; return batch 1."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    first = None
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = test if name == "test_batch" else per_batch
        images = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(os.path.join(folder, name), "wb") as f:
            # str keys: the real files are Python 2 pickles whose keys unpickle (latin1) as str
            pickle.dump({"data": images, "labels": labels, "batch_label": name}, f)
        first = first or (images, labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES), "num_cases_per_batch": per_batch}, f)
    return first


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    # torchvision checks the files' MD5 sums against the real download's; these files differ.
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    return str(tmp_path), _write_cifar(str(tmp_path))


def test_cifar_format_round_trip(tiny_cifar):
    from torchvision.datasets import CIFAR10

    root, (images, labels) = tiny_cifar
    ds = CIFAR10(root, train=True, download=False)
    assert len(ds) == 20 and ds.classes == list(data.CIFAR10_CLASSES)
    x_train, y_train, x_test, y_test = data.load_cifar10(root, download=False)
    assert x_train.shape == (20, 3, 32, 32) and x_train.dtype == torch.uint8 and x_test.shape == (6, 3, 32, 32)
    expected = torch.from_numpy(images.reshape(-1, 3, 32, 32))  # (B, C, H, W)
    assert torch.equal(x_train[:4], expected)
    assert y_train[:4].tolist() == labels and y_test.dtype == torch.int64


def test_cifar10_datasets_transforms(tiny_cifar):
    root, _ = tiny_cifar
    train, test = data.cifar10_datasets(root, download=False)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    x_test, _ = test[0]
    raw = torch.from_numpy(test.data[0]).permute(2, 0, 1).float() / 255  # (C, H, W)
    mean, std = torch.tensor(data.CIFAR10_MEAN).view(3, 1, 1), torch.tensor(data.CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(x_test, (raw - mean) / std)


def test_missing_cifar_without_download_raises(tmp_path):
    with pytest.raises(RuntimeError):
        data.load_cifar10(str(tmp_path), download=False)


@pytest.mark.parametrize("policy", ["autoaugment", "trivial", "randaugment", "none"])
def test_cifar_augment_keeps_shape_and_dtype(policy):
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, device=DEVICE)
    out = data.GroupedTransform(data.cifar_augment(policy), group_size=2)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    with pytest.raises(ValueError, match="policy"):
        data.cifar_augment("bogus")


def test_grouped_transform_draws_per_group():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 8, 8)
    out = data.GroupedTransform(data.digits_augment(translate=0.25), group_size=1)(x)
    assert out.shape == x.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1  # different shifts per image


def test_tensor_loader_epochs_batches_and_shards():
    x, y = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    loader = data.TensorLoader(x, y, batch_size=4, shuffle=True, seed=3)
    assert len(loader) == 3 and [len(b[1]) for b in loader] == [4, 4, 2]
    loader.set_epoch(0)
    first = torch.cat([b[1] for b in loader])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([b[1] for b in loader]))  # same epoch, same order
    loader.set_epoch(1)
    assert not torch.equal(first, torch.cat([b[1] for b in loader]))
    # two ranks with batch 2 see, together, what one process with batch 4 sees
    full = data.TensorLoader(x, y, batch_size=4, drop_last=True, seed=3)
    ranks = [data.TensorLoader(x, y, batch_size=2, drop_last=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for (_, yb), (_, y0), (_, y1) in zip(full, *ranks):
        assert torch.equal(yb, torch.cat([y0, y1]))
    assert len(full) == len(ranks[0]) == 2


def test_tensor_loader_normalises_uint8():
    x = torch.full((4, 3, 2, 2), 255, dtype=torch.uint8)
    loader = data.TensorLoader(x, torch.zeros(4, dtype=torch.long), 4, shuffle=False,
                               normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    xb, _ = next(iter(loader))
    assert xb.dtype == torch.float32 and torch.allclose(xb, torch.full_like(xb, 2.0))
    with pytest.raises(ValueError, match="labels"):
        data.TensorLoader(x, torch.zeros(3), 2)


def test_crop_at_matches_pad_and_slice():
    from course_lib.augment import crop_at

    x = torch.randn(3, 2, 5, 6, device=DEVICE)
    top, left = torch.tensor([0, 2, 4], device=DEVICE), torch.tensor([4, 2, 1], device=DEVICE)
    out = crop_at(x, 2, top, left, fill=-1.0)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(3):
        torch.testing.assert_close(out[i], padded[i, :, top[i]:top[i] + 5, left[i]:left[i] + 6])
    assert torch.equal(crop_at(x, 2, torch.full((3,), 2, device=DEVICE), torch.full((3,), 2, device=DEVICE)), x)


def test_batch_shifts_are_per_image_with_the_documented_distribution():
    from course_lib.augment import random_crop, random_shift

    x = torch.zeros(4000, 1, 3, 3, device=DEVICE)
    x[:, :, 1, 1] = 1.0  # a dot in the centre: where it lands is the shift
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for fn, p_still in ((random_crop, 1 / 3), (random_shift, 1 / 2)):
        out = fn(x, 1, 0.0, g)
        still = (out[:, 0, 1, :].sum(-1) == 1).float().mean().item()  # the dot stayed on its row
        assert abs(still - p_still) < 0.03, (fn.__name__, still)
        assert len({tuple(o.flatten().tolist()) for o in out}) == 9  # every shift of -1..1 occurs


def test_batch_crop_flip_is_reproducible_and_flips_half():
    from course_lib.augment import BatchCropFlip

    x = torch.arange(16.0, device=DEVICE).view(1, 1, 4, 4).repeat(1000, 1, 1, 1)
    a, b = BatchCropFlip(0, seed=3)(x), BatchCropFlip(0, seed=3)(x)
    assert torch.equal(a, b) and a.shape == x.shape
    flipped = (a[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.45 < flipped < 0.55 and torch.equal(a[a[:, 0, 0, 0] == 3][0], x[0].flip(-1))
    with pytest.raises(ValueError, match="shifts"):
        BatchCropFlip(1, shifts="bogus")
