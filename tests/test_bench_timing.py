"""benchmarks/timing.py: the ABBA order and the estimators, on made-up unit times (nothing is timed)."""
from __future__ import annotations

import itertools
import math

import pytest

from benchmarks import timing


def fake_units(a_time: float, b_time: float):
    """run_a / run_b that log their calls and return fixed times, except every 5th call, 3x slower (a load spike)."""
    log: list[str] = []
    count = itertools.count(1)

    def unit(name: str, t: float):
        def run() -> float:
            log.append(name)
            return 3 * t if next(count) % 5 == 0 else t
        return run

    return unit("A", a_time), unit("B", b_time), log


def test_abba_order_and_counts():
    run_a, run_b, log = fake_units(1.0, 1.0)
    timed = timing.abba(run_a, run_b, blocks=2, quads=2)
    assert "".join(log) == "ABBA" "BAAB" "ABBA" "BAAB"
    assert len(timed["a"]) == len(timed["b"]) == 8
    assert len(timed["pairs"]) == 8 and len(timed["blocks"]) == 2


def test_median_of_pairs_shrugs_off_spikes():
    run_a, run_b, _ = fake_units(1.0, 1.1)  # A is 10% faster
    timed = timing.abba(run_a, run_b, blocks=6, quads=4)
    s = timing.summarize(timed)
    assert s["ratio"] == pytest.approx(1.1)
    assert s["ratio_iqr"] == pytest.approx([1.1, 1.1])
    assert s["ratio_of_minima"] == pytest.approx(1.1)
    assert min(timed["pairs"]) < 1.0 < 1.1 < max(timed["pairs"])  # single pairs are hit by the spikes
    assert s["blocks"] == 6 and s["pairs"] == 48
    assert {"ratio", "ratio_iqr", "ratio_range", "pairs"} <= s.keys()  # results.json's old fields


@pytest.mark.parametrize("n", [5, 6, 10, 20, 41])
def test_median_ci_is_the_binomial_interval(n):
    values = [float(i) for i in range(n)]
    lo, hi = timing.median_ci(values)
    j = int(lo) + 1  # the CI is (x_(j), x_(n+1-j)), 1-based
    assert hi == n - j
    below = sum(math.comb(n, i) for i in range(j)) / 2**n  # P(Binomial(n, 1/2) < j)
    if n >= 6:  # enough samples for a 95% interval narrower than the range
        assert below <= 0.025 < below + math.comb(n, j) / 2**n
    else:
        assert (lo, hi) == (0.0, n - 1.0)


def test_warm_up_stops_when_steady():
    times = iter([5.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0] + [2.0] * 50)
    steps = timing.warm_up({"m": lambda: next(times)}, min_steps=3, max_steps=20)
    assert steps == {"m": 4}  # round 4 is the first, after the minimum, that no longer improves by > 3%
