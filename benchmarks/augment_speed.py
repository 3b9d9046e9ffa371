"""Time per batch of the CIFAR-10 recipe's augmentation: AutoAugment per group of 16 vs per image, batched.

    python -m benchmarks.augment_speed                       # CPU, one thread
    python -m benchmarks.augment_speed --device cuda --out gpu_out/augment_speed.json

On batches of 256 CIFAR-shaped uint8 images (random pixels) on the device:
* old: ``BatchCropFlip`` then ``GroupedTransform(v2.AutoAugment(CIFAR10), 16)`` (16 AutoAugment calls per batch);
* new: ``BatchCropFlip`` then ``BatchAutoAugment`` (a sub-policy per image, a fixed number of batch ops).
The two run in pairs, interleaved (old new, new old, ...) in one process, each measurement
``--steps`` batches; ratio = old time / new time (> 1: the batched one is faster): the median of
the pair ratios, their quartiles and range. On a CPU the clock is the process's CPU time on one
thread (waiting for a core shared with other jobs does not count); on a GPU, wall time, synchronised.
Also, the mean over 20 batches, the aten ops a batch dispatches (views included) and the tensors it
makes from Python data: on a GPU, each op is a kernel launch from Python and each such tensor a
copy from the host that waits for the GPU, so the host cannot queue work ahead of the model.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2

from course_lib.augment import BatchCropFlip
from course_lib.autoaugment import BatchAutoAugment
from course_lib.data import GroupedTransform
from course_lib.device import describe_device


class CountOps(TorchDispatchMode):
    """Counts the aten ops dispatched (views included: an upper bound on a GPU's kernel launches) and
    the tensors made from Python data (``torch.tensor``): on a GPU, each is a copy from the host that
    waits for the GPU to finish its queue."""

    def __init__(self):
        super().__init__()
        self.ops = self.from_host = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.from_host += func.overloadpacket == torch.ops.aten.lift_fresh
        return func(*args, **(kwargs or {}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="batches per measurement")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--out", help="also write the results as JSON")
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    clock = time.process_time if device.type == "cpu" else time.perf_counter

    x = torch.randint(0, 256, (a.batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    pipelines = {
        "old": v2.Compose([BatchCropFlip(4, seed=0), GroupedTransform(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), 16)]),
        "new": v2.Compose([BatchCropFlip(4, seed=0), BatchAutoAugment(seed=1)]),
    }

    def seconds_per_batch(name: str, steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = clock()
        for _ in range(steps):
            pipelines[name](x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (clock() - t0) / steps

    for name in pipelines:  # warm-up: tables, allocator, kernels
        seconds_per_batch(name, 3)
    ops, from_host = {}, {}
    for name, pipeline in pipelines.items():  # the old pipeline's counts depend on the sub-policies drawn
        with CountOps() as counter:
            for _ in range(20):
                pipeline(x)
        ops[name], from_host[name] = counter.ops / 20, counter.from_host / 20
    times: dict[str, list[float]] = {"old": [], "new": []}
    for pair in range(a.pairs):
        for name in ("old", "new") if pair % 2 == 0 else ("new", "old"):
            times[name].append(seconds_per_batch(name, a.steps))
    ratios = sorted(o / n for o, n in zip(times["old"], times["new"]))
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    result = {
        "device": describe_device(device), "batch": a.batch, "steps": a.steps, "pairs": a.pairs,
        "clock": "process CPU time, 1 thread" if device.type == "cpu" else "wall time",
        "ms_per_batch": {name: 1e3 * statistics.median(t) for name, t in times.items()}, "aten_ops_per_batch": ops,
        "tensors_from_host_per_batch": from_host,
        "ratio_old_over_new": median, "ratio_iqr": [q1, q3], "ratio_range": [ratios[0], ratios[-1]],
    }
    print(f"augmentation of {a.batch} CIFAR-shaped uint8 images per batch on {result['device']} ({result['clock']})\n")
    print("| pipeline | ms / batch (median) | images / s | aten ops / batch | tensors from host data / batch |")
    print("|---|---|---|---|---|")
    labels = {"old": "BatchCropFlip + GroupedTransform(v2.AutoAugment(CIFAR10), 16)",
              "new": "BatchCropFlip + BatchAutoAugment"}
    for name, label in labels.items():
        ms = result["ms_per_batch"][name]
        print(f"| {label} | {ms:.2f} | {a.batch / ms * 1e3:,.0f} | {ops[name]:.0f} | {from_host[name]:.1f} |")
    print(f"\nold / new time: median {median:.2f} (IQR {q1:.2f}-{q3:.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}, "
          f"{a.pairs} interleaved pairs of {a.steps} batches)")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
