"""Data for the training demos: scikit-learn's digits (offline) and CIFAR-10 (Colab).

Two ways to feed a model:

* ``TensorLoader``: the whole data set lives as tensors on the device and is
  batched by index. For small data sets (digits: 1.4k images, CIFAR-10: 150 MiB
  as uint8) this is much faster than a ``DataLoader``: no worker processes, no
  per-image Python, no host-to-device copies. Augmentations from
  ``torchvision.transforms.v2`` run on the batch, on the device.
* ``cifar10_datasets``: the classic ``torchvision.datasets.CIFAR10`` with
  per-image transforms, for a ``torch.utils.data.DataLoader``.

Nothing here is an exercise; every notebook may use it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

if TYPE_CHECKING:  # torchvision is imported where it is used: the digits path never needs it (2 s of start-up)
    from torchvision.transforms import v2

# Channel statistics of the CIFAR-10 training set (pixels scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# The digits split: 1797 images -> 1437 train / 360 test, stratified by class.
DIGITS_TEST_SIZE = 360


def load_digits(test_size: int = DIGITS_TEST_SIZE, seed: int = 0,
                device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits as normalised image tensors (no download).

    The split is fixed and stratified (``train_test_split(..., stratify=y,
    random_state=seed)``): 1437 training and 360 test images, 10 classes. Pixels
    (0..16) are scaled to [0, 1], then standardised with the training set's
    mean and standard deviation (one scalar each, like a grey-scale channel).

    Args:
        test_size: number of test images.
        seed: seed of the split (0 is the course's split).
        device: where the tensors live (default CPU).

    Returns:
        x_train (1437, 1, 8, 8) float32, y_train (1437,) int64,
        x_test (360, 1, 8, 8) float32, y_test (360,) int64.
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    images, labels = _sk_load_digits(return_X_y=True)  # (1797, 64) floats 0..16, (1797,)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=test_size,
                                              stratify=labels, random_state=seed)
    x_train = torch.tensor(x_tr, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16  # (B, 1, 8, 8)
    x_test = torch.tensor(x_te, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16  # (B, 1, 8, 8)
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = torch.tensor(y_tr), torch.tensor(y_te)
    return tuple(t.to(device) for t in (x_train, y_train, x_test, y_test))  # type: ignore[return-value]


def digits_datasets(**kwargs) -> tuple[TensorDataset, TensorDataset]:
    """``load_digits`` as (train, test) ``TensorDataset`` s, for a ``DataLoader``."""
    x_train, y_train, x_test, y_test = load_digits(**kwargs)
    return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)


def digits_augment(translate: float = 0.125, degrees: float = 0.0, scale: tuple[float, float] | None = None,
                   fill: float = 0.0, bilinear: bool = False) -> v2.Transform:
    """Small random shifts (optionally rotations, zooms) for 8x8 digits, on float tensors.

    ``translate=0.125`` moves an 8x8 image by up to one pixel (whole pixels).
    ``fill`` is the value of the pixels shifted in: the background, i.e.
    ``x_train.min()`` for ``load_digits``'s standardised images. ``bilinear``
    interpolates rotated/zoomed pixels (default: nearest). Use per group of
    images with ``GroupedTransform``.
    """
    from torchvision.transforms import v2

    mode = v2.InterpolationMode.BILINEAR if bilinear else v2.InterpolationMode.NEAREST
    return v2.RandomAffine(degrees=degrees, translate=(translate, translate), scale=scale, fill=fill,
                           interpolation=mode)


def cifar_policy(policy: str = "autoaugment") -> v2.Transform:
    """An augmentation policy on uint8 images: ``"autoaugment"`` (AutoAugment's CIFAR-10
    policy), ``"trivial"`` (TrivialAugmentWide), ``"randaugment"`` (RandAugment, 2 ops,
    magnitude 9) or ``"none"``."""
    from torchvision.transforms import v2

    policies = {
        "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
        "trivial": v2.TrivialAugmentWide,
        "randaugment": lambda: v2.RandAugment(num_ops=2, magnitude=9),
        "none": lambda: v2.Identity(),
    }
    if policy not in policies:
        raise ValueError(f"policy must be one of {sorted(policies)}, got {policy!r}")
    return policies[policy]()


def cifar_augment(policy: str = "autoaugment") -> v2.Transform:
    """CIFAR-10 training augmentation on uint8 images (B, 3, 32, 32) or (3, 32, 32), per call.

    Random crop with 4 pixels of zero padding, horizontal flip, then ``cifar_policy(policy)``.
    For batches on a GPU, ``augment.BatchCropFlip`` does the crop and flip per image in one go.
    """
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), cifar_policy(policy)])


def cifar10_datasets(root: str = "data", download: bool = True, policy: str = "autoaugment"):
    """CIFAR-10 as ``torchvision.datasets.CIFAR10`` (train, test) with per-image transforms.

    Args:
        root: folder that holds (or will hold) ``cifar-10-batches-py``.
        download: fetch the 170 MB archive if it is missing (needs internet).
        policy: augmentation policy for the training set, see ``cifar_augment``.

    Returns:
        (train, test) data sets yielding (float image (3, 32, 32) normalised, label).
    """
    from torchvision.datasets import CIFAR10
    from torchvision.transforms import v2

    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    train_tf = v2.Compose([v2.ToImage(), cifar_augment(policy), *to_float])
    test_tf = v2.Compose([v2.ToImage(), *to_float])
    return (CIFAR10(root, train=True, download=download, transform=train_tf),
            CIFAR10(root, train=False, download=download, transform=test_tf))


def load_cifar10(root: str = "data", download: bool = True,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All of CIFAR-10 as uint8 tensors (150 MiB), e.g. on the GPU for ``TensorLoader``.

    Returns:
        x_train (50000, 3, 32, 32) uint8, y_train (50000,) int64,
        x_test (10000, 3, 32, 32) uint8, y_test (10000,) int64.
    """
    from torchvision.datasets import CIFAR10

    out = []
    for train in (True, False):
        ds = CIFAR10(root, train=train, download=download)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (B, H, W, C) -> (B, C, H, W)
        out += [x.to(device), torch.tensor(ds.targets, dtype=torch.int64, device=device)]
    return tuple(out)  # type: ignore[return-value]


class GroupedTransform:
    """Apply a batch transform to groups of ``group_size`` images.

    torchvision's v2 transforms draw ONE set of random parameters per call, so
    a (B, C, H, W) batch would get the same crop for every image. Calling the
    transform on groups gives B / group_size independent draws: ``group_size=1``
    is exact per-image augmentation (slowest), larger groups trade diversity
    within a batch for speed (every image still sees fresh draws every epoch).
    """

    def __init__(self, transform: Callable[[Tensor], Tensor], group_size: int = 1):
        self.transform, self.group_size = transform, group_size

    def __call__(self, x: Tensor) -> Tensor:
        return torch.cat([self.transform(chunk) for chunk in x.split(self.group_size)])


class TensorLoader:
    """Shuffled mini-batches from tensors in memory, batched by index.

    Every epoch's order is a permutation drawn from ``seed + epoch`` (call
    ``set_epoch`` like ``DistributedSampler``), so a resumed run sees the same
    batches. With ``world_size > 1`` each global batch of
    ``batch_size * world_size`` indices is split between ranks: rank r gets
    slice r, i.e. data-parallel training sees the same data as one process
    with the larger batch.

    Args:
        x: images (B, C, H, W), float or uint8.
        y: labels (B,).
        batch_size: images per batch (per rank).
        shuffle: draw a new order every epoch.
        drop_last: skip the last incomplete global batch.
        transform: batch augmentation, e.g. ``GroupedTransform(cifar_augment(), 16)``.
        normalize: (mean, std) per channel; uint8 images are scaled to [0, 1]
            first, after the transform.
        seed: base seed of the permutation.
        rank, world_size: this process's slice of each global batch.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, transform: Callable[[Tensor], Tensor] | None = None,
                 normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} images but y has {y.shape[0]} labels")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.mean = self.std = None
        if normalize is not None:
            self.mean = torch.tensor(normalize[0], device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
            self.std = torch.tensor(normalize[1], device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Choose the permutation of ``epoch`` (deterministic given ``seed``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        n = len(self.x)
        return n // global_batch if self.drop_last else -(-n // global_batch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, global_batch = len(self.x), self.batch_size * self.world_size
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen).to(self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for i in range(len(self)):
            idx = order[i * global_batch:(i + 1) * global_batch]
            idx = idx[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            if xb.dtype == torch.uint8:
                xb = xb.float().div_(255)
            if self.mean is not None:
                xb = (xb - self.mean) / self.std
            yield xb, yb
