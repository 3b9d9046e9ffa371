"""Paired A/B timing that holds on a shared machine (used by ``benchmarks/run.py``).

A comparison of two training steps A and B is measured like this:

1. **A steady process** (``steady_process``): one torch thread, the process pinned to
   the core it is on (no migrations to a cold cache), and glibc's allocator told to
   keep the memory it frees (``mallopt``). Without that, glibc returns large freed
   blocks to the kernel and the next step page-faults them back in: we measured
   0 to 5,900 minor page faults per step, varying from run to run and model to model
   with the order of the allocations (up to 6% of a step in kernel time). That cost
   belongs to the allocator, not to the model, and it is the largest single source of
   noise on a quiet machine.
2. **A warm-up that reaches steady state** (``warm_up``): all sides in turn until
   each one's step time stops improving (the heap has grown to the largest peak,
   oneDNN has built its primitives), at least ``min_steps`` each.
3. **ABBA quads, grouped in blocks** (``abba``): A B B A, then B A A B, ...; a unit is one
   training step (about 0.17 s on one core), timed in process CPU time (on a GPU: wall time
   after a synchronize), so both sides of a pair see nearly the same load (under load the
   times of neighbouring steps correlate at 0.6-0.85), and a load that rises or falls
   through a quad hits A and B alike. Each pair of neighbouring units gives a ratio
   time(B) / time(A) = speed(A) / speed(B); a block's ratio is the median of its 16 pairs
   (8 quads, about 6 s). ``gc`` is off while timing.
4. **Robust estimators** (``summarize``): the headline ``ratio`` is the median of the
   block ratios; next to it the blocks' quartiles and range (how far one 6-second
   measurement can be off), a distribution-free 95% confidence interval of that median
   (binomial order statistics: how far the headline can be off), and the raw pairs'
   quartiles. Medians, not means, because interference makes the step times heavy-tailed
   (a step that shared its core with a burst of another job's work). A single pair is
   noisy under load (the middle half of the pair ratios spans about 6%), so the blocks
   take the median of 16 pairs: in 400 pairs of course_lib vs timm measured at a load
   average of 3.5 on 2 cores, the blocks' IQR was 1.5% wide, against 6.3% for single pairs
   and 3.0% for 8-pair blocks.
   Also reported: the ratio of the per-side minima of the unit times. Interference only
   ever adds time (cache and memory-bandwidth contention, another job's context switches,
   a hypervisor's stolen cycles counted as ours), so each side's fastest unit is the
   closest to its cost on an idle machine, and this ratio ignores how often each side was
   unlucky. It rests on two single samples, so it is the less stable of the two; when it
   and the median disagree by more than the IQR, the load was uneven and neither should
   be quoted alone.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import statistics
import time
from collections.abc import Callable

import torch


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory in the heap: no trimming, and no mmap for
    blocks under 32 MiB (the largest threshold it accepts). Returns whether it took."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): leave the allocator alone
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def current_cpu() -> int | None:
    """The core this process last ran on (Linux), or None."""
    try:
        stat = open(f"/proc/{os.getpid()}/stat").read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[36])  # field 39, "processor"


def steady_process(threads: int | None = 1, pin: bool = True) -> dict:
    """Set up this process for CPU timing (see the module docstring); returns what was done."""
    done = {"threads": torch.get_num_threads(), "malloc_keeps_freed_memory": keep_freed_memory(), "pinned_cpu": None}
    if threads:
        torch.set_num_threads(threads)
        done["threads"] = threads
    if pin and hasattr(os, "sched_setaffinity"):
        cpu = current_cpu()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
            done["pinned_cpu"] = cpu
    return done


def warm_up(runs: dict[str, Callable[[], float]], min_steps: int = 5, max_steps: int = 20, tol: float = 0.03) -> dict[str, int]:
    """Run every side in turn, ``min_steps`` times at least, then until a round in which no
    side beat its best so far by more than ``tol`` (or ``max_steps``). ``runs`` map a name to
    a function that runs one unit and returns its time. Returns the steps each side ran."""
    best = {name: math.inf for name in runs}
    for step in range(1, max_steps + 1):
        settled = True
        for name, run in runs.items():
            t = run()
            settled &= t >= (1 - tol) * best[name]  # still getting faster: not steady yet
            best[name] = min(best[name], t)
        if step >= min_steps and settled:
            break
    return {name: step for name in runs}


def abba(run_a: Callable[[], float], run_b: Callable[[], float], blocks: int, quads: int = 8) -> dict[str, list[float]]:
    """``blocks`` blocks of ``quads`` quads each, the quads alternating A B B A and B A A B.
    ``run_a`` and ``run_b`` run one unit and return its time. Every quad gives two pairs of
    neighbouring units, (A, B) and (B, A), and each pair the ratio time(B) / time(A) (> 1: A
    is faster); a block's ratio is the median of its 2 * ``quads`` pair ratios.

    Returns the per-unit times ``a`` and ``b``, the ``pairs``' ratios and the ``blocks``' ratios."""
    out: dict[str, list[float]] = {"a": [], "b": [], "pairs": [], "blocks": []}
    gc.collect()
    gc.disable()
    try:
        for _ in range(blocks):
            block = []
            for quad in range(quads):
                if quad % 2 == 0:
                    a1, b1, b2, a2 = run_a(), run_b(), run_b(), run_a()
                else:
                    b1, a1, a2, b2 = run_b(), run_a(), run_a(), run_b()
                out["a"] += [a1, a2]
                out["b"] += [b1, b2]
                block += [b1 / a1, b2 / a2]
            out["pairs"] += block
            out["blocks"].append(statistics.median(block))
    finally:
        gc.enable()
    return out


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics
    x_(j), x_(n+1-j) with the largest j such that P(Binomial(n, 1/2) < j) <= (1 - level) / 2."""
    xs, n = sorted(values), len(values)
    alpha, cdf, j = (1 - level) / 2, 0.0, 0
    while j < n // 2:
        p = math.comb(n, j) / 2**n  # P(exactly j of the n fall below the median)
        if cdf + p > alpha:
            break
        cdf += p
        j += 1
    if j == 0:  # too few samples for this level: the range is all we can say
        return xs[0], xs[-1]
    return xs[j - 1], xs[n - j]


def quartiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=4, method="inclusive")[0::2] if len(values) > 1 else values * 2


def summarize(timed: dict[str, list[float]]) -> dict:
    """The estimators of the module docstring, as results.json fields: ``ratio`` (the median of
    the block ratios), ``ratio_iqr``, ``ratio_range`` and ``ratio_ci95`` (over the ``blocks``, the
    unit of replication), ``ratio_of_minima``, and ``pair_ratio_iqr`` over the ``pairs`` (single
    neighbouring units: the raw noise a block's median smooths)."""
    blocks = sorted(timed["blocks"])
    return {"ratio": statistics.median(blocks), "ratio_iqr": quartiles(blocks), "ratio_range": [blocks[0], blocks[-1]],
            "ratio_ci95": list(median_ci(blocks)), "ratio_of_minima": min(timed["b"]) / min(timed["a"]),
            "blocks": len(blocks), "pairs": len(timed["pairs"]), "pair_ratio_iqr": quartiles(timed["pairs"])}


def clock(device: torch.device) -> Callable[[], float]:
    """Process CPU time on a CPU (time spent waiting for a shared core does not count),
    wall time after a synchronize on a GPU."""
    if device.type == "cuda":
        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return wall
    return time.process_time
