"""When to claim next (fondation_agent/queue/claim_schedule.py), alone: polling, backing off while
Convex is unreachable, and with a subscription, once per value, at its due time, with a herd delay."""

import time
from dataclasses import dataclass

from fondation_agent.queue.claim_schedule import MAX_UNREACHABLE_BACKOFF, ClaimSchedule
from fondation_agent.queue.wake import DOWN, UP, Due


@dataclass
class Pacing:
    poll_interval: float = 2.0
    safety_poll_interval: float = 60.0
    wake_jitter: float = 0.1


class FakeWake:
    def __init__(self, due: Due):
        self.due = due

    def current(self) -> Due:
        return self.due


def due_now(version: int) -> Due:
    return Due(UP, version, time.time() * 1000 - 1)


def test_polling_claims_every_poll_interval_after_an_answer() -> None:
    schedule = ClaimSchedule(Pacing())
    assert schedule.next_at() == 0.0, "the first claim is due at once"
    attempt = schedule.claiming()
    assert schedule.answered(attempt, found_job=False) == 0
    assert attempt.started_at + 2.0 * 0.8 <= schedule.next_at() <= attempt.started_at + 2.0 * 1.2


def test_failures_back_off_up_to_a_cap_and_the_first_answer_says_how_many_it_ends() -> None:
    schedule = ClaimSchedule(Pacing())
    for failures in range(1, 13):
        before = time.monotonic()
        assert schedule.failed(schedule.claiming()) == failures
        delay = min(MAX_UNREACHABLE_BACKOFF, 2.0 * 2 ** min(failures, 10))
        assert before + delay / 2 <= schedule.next_at() <= time.monotonic() + delay
    assert schedule.answered(schedule.claiming(), found_job=True) == 12
    assert schedule.answered(schedule.claiming(), found_job=False) == 0


def test_a_value_said_due_is_claimed_for_once_then_retried_only_after_poll_interval() -> None:
    schedule = ClaimSchedule(Pacing(wake_jitter=0.0), FakeWake(due_now(1)))
    assert schedule.next_at() <= time.monotonic()
    attempt = schedule.claiming()
    schedule.answered(attempt, found_job=False)
    assert schedule.next_at() >= attempt.started_at + 2.0 * 0.8  # no second claim for the same value but a retry


def test_an_empty_claim_for_a_value_not_said_due_waits_for_the_next_value_or_the_safety_poll() -> None:
    wake = FakeWake(Due(UP, 1, None))
    schedule = ClaimSchedule(Pacing(), wake)
    attempt = schedule.claiming()
    schedule.answered(attempt, found_job=False)
    assert schedule.next_at() == attempt.started_at + 60.0 * schedule.safety_poll_factor
    wake.due = due_now(2)
    schedule.jitter = (2, 0.0)
    assert schedule.next_at() <= time.monotonic()


def test_a_lost_race_widens_the_herd_delay_and_a_new_value_is_claimed_for() -> None:
    wake = FakeWake(due_now(1))
    schedule = ClaimSchedule(Pacing(), wake)
    schedule.jitter = (1, 0.0)
    schedule.answered(schedule.claiming(), found_job=False)
    assert schedule.herd.spread == 2 * 0.1
    wake.due = due_now(2)
    schedule.jitter = (2, 0.0)
    assert schedule.next_at() <= time.monotonic()
    schedule.answered(schedule.claiming(), found_job=True)
    assert schedule.herd.spread == 0.1, "a won job narrows it again"


def test_a_future_due_time_is_when_to_claim_and_nothing_due_is_the_safety_poll() -> None:
    wake = FakeWake(Due(UP, 1, time.time() * 1000 + 30_000))
    schedule = ClaimSchedule(Pacing(), wake)
    schedule.last_claim_at = time.monotonic()  # the claim every agent makes at start
    at = schedule.next_at() - time.monotonic()
    assert 29 < at < 30 + 0.1 + 1
    wake.due = Due(UP, 2, None)
    assert schedule.next_at() == schedule.last_claim_at + 60.0


def test_while_the_subscription_is_not_up_the_schedule_polls() -> None:
    schedule = ClaimSchedule(Pacing(), FakeWake(Due(DOWN, 3, None)))
    schedule.next_poll = 12345.0
    assert schedule.next_at() == 12345.0


def test_a_refused_claim_is_not_repeated_at_once() -> None:
    schedule = ClaimSchedule(Pacing(), FakeWake(due_now(1)))
    schedule.jitter = (1, 0.0)
    schedule.failed(schedule.claiming())
    assert schedule.next_at() > time.monotonic() + 1.0
