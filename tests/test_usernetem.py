"""The Gilbert-Elliott loss model of the user-space netem: its averages, its bursts."""

from __future__ import annotations

import random

import pytest

from tests.usernetem import GilbertElliott


def runs_of_loss(model: GilbertElliott, packets: int) -> tuple[float, list[int]]:
    lost = [model.lose() for _ in range(packets)]
    runs: list[int] = []
    for i, gone in enumerate(lost):
        if gone:
            if i and lost[i - 1]:
                runs[-1] += 1
            else:
                runs.append(1)
    return sum(lost) / packets, runs


@pytest.mark.parametrize(("loss", "burst"), [(0.05, 3), (0.15, 3), (0.05, 5), (0.15, 5)])
def test_average_loss_and_mean_burst_are_what_was_asked(loss: float, burst: float) -> None:
    rate, runs = runs_of_loss(GilbertElliott(loss, burst, random.Random(1)), 200_000)
    assert rate == pytest.approx(loss, rel=0.08)
    assert sum(runs) / len(runs) == pytest.approx(burst, rel=0.08)
    # Geometric bursts: about (1 - 1/burst) of them go on past each length.
    longer = sum(r > burst for r in runs) / len(runs)
    assert longer == pytest.approx((1 - 1 / burst) ** int(burst), abs=0.03)


def test_a_burst_of_one_or_less_is_random_loss() -> None:
    rate, runs = runs_of_loss(GilbertElliott(0.15, 0, random.Random(2)), 100_000)
    assert rate == pytest.approx(0.15, rel=0.05)
    # Independent losses: runs average 1 / (1 - p) = 1.18 packets.
    assert sum(runs) / len(runs) == pytest.approx(1 / 0.85, rel=0.05)


def test_a_seed_repeats_the_pattern_and_no_loss_loses_nothing() -> None:
    a = GilbertElliott(0.15, 3, random.Random(9))
    b = GilbertElliott(0.15, 3, random.Random(9))
    assert [a.lose() for _ in range(1000)] == [b.lose() for _ in range(1000)]
    assert not any(GilbertElliott(0.0, 3, random.Random(1)).lose() for _ in range(1000))
    assert all(GilbertElliott(1.0, 3, random.Random(1)).lose() for _ in range(1000))
    with pytest.raises(ValueError):
        GilbertElliott(1.5, 3, random.Random(1))
