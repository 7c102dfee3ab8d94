"""The CPU benchmarks' shared timing helpers (benchmarks/_common.py): the alternation and the
per-round ratio spread that every peer ratio is printed with."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import _common  # noqa: E402


def test_ratio_quartiles_of_per_round_ratios():
    ours = [1.0, 1.0, 1.0, 1.0, 1.0]
    peer = [0.9, 1.3, 1.0, 1.1, 1.2]  # per-round ratios 0.9 .. 1.3
    assert _common.ratio_quartiles(ours, peer) == pytest.approx((1.0, 1.1, 1.2))
    # Pairs are taken round by round, not sorted apart: a slow round slows both calls.
    assert _common.ratio_quartiles([1.0, 2.0, 3.0], [1.1, 2.2, 3.3]) == pytest.approx(
        (1.1, 1.1, 1.1))
    assert _common.ratio_quartiles([2.0], [3.0]) == (1.5, 1.5, 1.5)


def test_ratio_text_is_the_median_round_with_quartiles():
    # Per-round ratios 1.0, 1.2, 1.1, 1.3, 1.4: their median 1.2, inside its own brackets.
    assert (_common.ratio_text([1.0, 1.0, 1.0, 1.0, 2.0], [1.0, 1.2, 1.1, 1.3, 2.8])
            == "1.20 [1.10-1.30]")
    # Rounds 1.0, 1.5, 1.0: the median round reads 1.00, where the ratio of the two sides' medians
    # (1.5 / 1.0) would read 1.50, outside the quartiles.
    assert _common.ratio_text([1.0, 1.0, 3.0], [1.0, 1.5, 3.0]) == "1.00 [1.00-1.25]"


def test_alternating_times_rounds_and_order(monkeypatch):
    monkeypatch.setattr(_common, "SETTLE_S", 0.0)
    monkeypatch.setattr(_common, "WARM_S", 0.0)
    calls = []
    times = _common.alternating_times([lambda: calls.append("a"), lambda: calls.append("b")], 3)
    assert [len(ts) for ts in times] == [3, 3]
    assert all(t >= 0 for ts in times for t in ts)
    # Each round: a warm-up call then the timed one, for each contender in turn.
    assert calls == ["a", "a", "b", "b"] * 3
