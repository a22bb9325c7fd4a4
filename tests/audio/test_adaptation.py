"""The sender's plan follows the worst recent loss report."""

from __future__ import annotations

import pytest

from bangor.audio.adaptation import SendAdapter, SendPlan


def test_clean_network_costs_nothing_once_a_listener_reports() -> None:
    adapter = SendAdapter(40_000)
    assert adapter.plan(0.0) == SendPlan(2, 0, 40_000)  # nothing known yet: protect
    adapter.report(1, 0.0, 1.0)
    assert adapter.plan(1.0) == SendPlan(0, 0, 40_000)


def test_without_reports_the_startup_protection_ends() -> None:
    adapter = SendAdapter(40_000, startup=5.0)
    assert adapter.initial().depth == 2
    assert adapter.plan(100.0).depth == 2
    assert adapter.plan(104.0).depth == 2
    assert adapter.plan(105.0).depth == 0  # alone in the room, say: stop paying for it


@pytest.mark.parametrize(
    ("loss", "depth"), [(0.005, 0), (0.01, 1), (0.02, 1), (0.05, 2), (0.15, 2), (0.5, 2)]
)
def test_redundancy_deepens_with_loss(loss: float, depth: int) -> None:
    adapter = SendAdapter(40_000, startup=0.0)
    adapter.report(1, loss, 0.0)
    assert adapter.plan(0.0).depth == depth


def test_deeper_redundancy_when_allowed() -> None:
    adapter = SendAdapter(40_000, max_depth=3)
    adapter.report(1, 0.15, 0.0)
    assert adapter.plan(0.0).depth == 3


def test_fec_only_while_redundancy_is_off() -> None:
    light = SendAdapter(40_000)
    light.report(1, 0.005, 0.0)
    assert light.plan(0.0) == SendPlan(0, 0, 40_000)  # rounds to 0 %: no FEC bits
    no_red = SendAdapter(40_000, max_depth=0)
    no_red.report(1, 0.08, 0.0)
    assert no_red.plan(0.0) == SendPlan(0, 8, 40_000)
    heavy = SendAdapter(40_000, max_depth=0)
    heavy.report(1, 0.6, 0.0)
    assert heavy.plan(0.0).expected_loss == 25  # capped
    no_fec = SendAdapter(40_000, fec=False, max_depth=0)
    no_fec.report(1, 0.08, 0.0)
    assert no_fec.plan(0.0).expected_loss == 0
    with_red = SendAdapter(40_000)
    with_red.report(1, 0.08, 0.0)
    assert with_red.plan(0.0) == SendPlan(2, 0, 40_000)


def test_worst_listener_decides_and_goes_down_only_after_hold() -> None:
    adapter = SendAdapter(40_000, hold=10.0, startup=0.0)
    adapter.report(1, 0.0, 0.0)
    adapter.report(2, 0.05, 0.0)
    assert adapter.plan(0.0).depth == 2
    for t in range(1, 10):
        adapter.report(2, 0.0, float(t))
    assert adapter.plan(9.0).depth == 2  # the bad report is still recent
    assert adapter.plan(10.5).depth == 0


def test_a_listener_that_left_stops_counting() -> None:
    adapter = SendAdapter(40_000, startup=0.0)
    adapter.report(2, 0.2, 0.0)
    adapter.forget(2)
    assert adapter.plan(0.0).depth == 0


def test_room_cap_limits_the_bitrate() -> None:
    adapter = SendAdapter(64_000)
    adapter.set_max_bitrate(24_000)
    assert adapter.plan(0.0).bitrate == 24_000
    adapter.set_max_bitrate(0)
    assert adapter.plan(0.0).bitrate == 64_000


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SendAdapter(40_000, max_depth=4)
    with pytest.raises(ValueError):
        SendAdapter(40_000, thresholds=(0.1, 0.01))


def bursty(adapter: SendAdapter, listener: int, loss: float, burst: float, now: float) -> None:
    adapter.joined(listener)
    adapter.report(listener, loss, now, burst)


def test_bursts_spread_the_copies_up_to_about_three_bursts_back() -> None:
    adapter = SendAdapter(40_000, startup=0.0)
    bursty(adapter, 1, 0.15, 3.0, 0.0)
    # Reach min(8, ceil(8.1)); a third copy from 10 % loss on, beyond max_depth (2).
    assert adapter.plan(0.0) == SendPlan(3, 0, 40_000, (3, 5, 8))
    adapter = SendAdapter(40_000, startup=0.0, max_spread_depth=2)
    bursty(adapter, 1, 0.15, 3.0, 0.0)
    assert adapter.plan(0.0) == SendPlan(2, 0, 40_000, (4, 8))
    adapter = SendAdapter(40_000, startup=0.0)
    bursty(adapter, 1, 0.15, 2.0, 0.0)
    assert adapter.plan(0.0).spread == (2, 4, 6)  # reach ceil(5.4)
    bursty(adapter, 1, 0.05, 3.0, 1.0)
    assert adapter.plan(11.0).spread == (4, 8)  # 5 %: two copies
    adapter = SendAdapter(40_000, startup=0.0)
    bursty(adapter, 1, 0.02, 5.0, 0.0)
    assert adapter.plan(0.0).spread == (8,)  # one copy, far back


def test_random_loss_keeps_the_copies_consecutive() -> None:
    adapter = SendAdapter(40_000, startup=0.0)
    bursty(adapter, 1, 0.15, 1.2, 0.0)  # 15 % random: runs of 1.18 on average
    assert adapter.plan(0.0) == SendPlan(2, 0, 40_000)
    bursty(adapter, 2, 0.0, 0.0, 0.0)
    assert adapter.worst_burst(0.0) == pytest.approx(1.2)


def test_one_listener_that_cannot_read_spread_frames_keeps_them_consecutive() -> None:
    adapter = SendAdapter(40_000, startup=0.0)
    bursty(adapter, 1, 0.15, 3.0, 0.0)
    adapter.joined(2)  # joined, has not reported yet: it may be an old client
    assert adapter.plan(0.0).spread == ()
    adapter.report(2, 0.0, 0.5)  # an old client's report: no burst
    assert adapter.plan(0.5).spread == ()
    adapter.forget(2)
    assert adapter.plan(0.5).spread == (3, 5, 8)
    no_spread = SendAdapter(40_000, startup=0.0, spread_burst=0)
    bursty(no_spread, 1, 0.15, 3.0, 0.0)
    assert no_spread.plan(0.0).spread == ()


def test_bursts_are_pooled_over_a_listeners_reports_and_expire() -> None:
    adapter = SendAdapter(40_000, startup=0.0, hold=10.0)
    bursty(adapter, 1, 0.10, 1.0, 0.0)  # 10 runs of 1 per 100 packets
    adapter.report(1, 0.10, 1.0, 4.0)  # 2.5 runs of 4
    assert adapter.worst_burst(1.0) == pytest.approx(0.20 / (0.10 + 0.025))
    assert adapter.worst_burst(10.5) == pytest.approx(4.0)  # the first one expired
    assert adapter.worst_burst(11.5) == 0.0
