"""fondation_agent/queue/wake.py: what the subscription's value means, and the herd delay's range."""

from fondation_agent.queue.wake import CONNECTING, MAX_HERD_SPREAD, UP, Due, HerdDelay, due_at_ms


def test_the_due_time_is_the_earliest_pending_job():
    assert due_at_ms({"pendingAvailableAt": None}) is None
    assert due_at_ms({"pendingAvailableAt": 1000.0}) == 1000.0


def test_only_an_up_subscription_says_a_job_is_due():
    assert Due(UP, 1, 100.0).says_due(100.0)
    assert not Due(UP, 1, 101.0).says_due(100.0)
    assert not Due(UP, 1, None).says_due(100.0)
    assert not Due(CONNECTING, 1, 100.0).says_due(100.0)


def test_the_herd_delay_widens_with_lost_races_and_narrows_with_won_jobs():
    herd = HerdDelay(0.1)
    assert 0 <= herd.draw(0.1) <= 0.1
    for _ in range(3):
        herd.lost(0.1)
    assert herd.spread == 0.8
    for _ in range(10):
        herd.lost(0.1)
    assert herd.spread == MAX_HERD_SPREAD
    assert all(0 <= herd.draw(0.1) <= MAX_HERD_SPREAD for _ in range(100))
    for _ in range(10):
        herd.won(0.1)
    assert herd.spread == 0.1
    herd.lost(5.0)  # wake_jitter reloaded above the ceiling: the floor wins
    assert herd.spread == 5.0
