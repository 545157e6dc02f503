"""The alert state machine, as a table of (state, sample, time) -> (state, transitions)."""

from __future__ import annotations

import pytest

from watchkeeper.rules.state import (
    RESOLVED_RETENTION_MS,
    AlertState,
    State,
    mark_sent,
    needs_sending,
    step_alert,
)

L = (("alertname", "A"),)
N, P, F = State.INACTIVE, State.PENDING, State.FIRING


def run(samples: list[tuple[int, float | None]], *, for_ms: int = 0, keep_ms: int = 0
        ) -> list[tuple[int, State | None, list[tuple[State, State]]]]:
    state: AlertState | None = None
    out = []
    for t, v in samples:
        state, trans = step_alert(state, v, now_ms=t, for_ms=for_ms, keep_firing_for_ms=keep_ms, labels=L)
        out.append((t, None if state is None else state.state, [(x.from_state, x.to_state) for x in trans]))
    return out


def test_for_zero_fires_at_once() -> None:
    assert run([(0, 1.0)]) == [(0, F, [(N, P), (P, F)])]


def test_pending_then_firing_after_for() -> None:
    assert run([(0, 1.0), (30_000, 1.0), (60_000, 1.0)], for_ms=60_000) == [
        (0, P, [(N, P)]), (30_000, P, []), (60_000, F, [(P, F)]),
    ]


def test_pending_that_clears_is_forgotten() -> None:
    assert run([(0, 1.0), (30_000, None)], for_ms=60_000) == [(0, P, [(N, P)]), (30_000, None, [(P, N)])]


def test_firing_resolves_then_is_kept_for_the_retention() -> None:
    rows = run([(0, 1.0), (60_000, None), (60_000 + RESOLVED_RETENTION_MS, None),
                (60_001 + RESOLVED_RETENTION_MS, None)])
    assert rows[1] == (60_000, N, [(F, N)])
    assert rows[2][1] is N            # still kept (re-sent as resolved)
    assert rows[3] == (60_001 + RESOLVED_RETENTION_MS, None, [])


def test_condition_back_after_resolution_starts_a_new_pending_instance() -> None:
    state, _ = step_alert(None, 1.0, now_ms=0, for_ms=0, keep_firing_for_ms=0, labels=L)
    state, _ = step_alert(state, None, now_ms=10, for_ms=0, keep_firing_for_ms=0)
    state, trans = step_alert(state, 2.0, now_ms=20, for_ms=5, keep_firing_for_ms=0)
    assert state is not None and state.state is P and state.active_at_ms == 20
    assert [(t.from_state, t.to_state) for t in trans] == [(N, P)]


def test_keep_firing_for_holds_a_firing_alert() -> None:
    rows = run([(0, 1.0), (10_000, None), (20_000, None), (30_000, None)], keep_ms=20_000)
    assert [r[1] for r in rows] == [F, F, F, N]
    assert rows[3][2] == [(F, N)]


def test_keep_firing_since_resets_when_the_condition_returns() -> None:
    state, _ = step_alert(None, 1.0, now_ms=0, for_ms=0, keep_firing_for_ms=10_000, labels=L)
    state, _ = step_alert(state, None, now_ms=5_000, for_ms=0, keep_firing_for_ms=10_000)
    assert state is not None and state.keep_firing_since_ms == 5_000
    state, _ = step_alert(state, 1.0, now_ms=6_000, for_ms=0, keep_firing_for_ms=10_000)
    assert state is not None and state.keep_firing_since_ms is None and state.state is F


def test_keep_firing_for_does_not_apply_to_pending() -> None:
    assert run([(0, 1.0), (1_000, None)], for_ms=60_000, keep_ms=60_000)[1] == (1_000, None, [(P, N)])


def test_value_and_annotations_follow_the_latest_evaluation() -> None:
    state, _ = step_alert(None, 1.0, now_ms=0, for_ms=0, keep_firing_for_ms=0, labels=L,
                          annotations=(("s", "one"),))
    state, _ = step_alert(state, 2.0, now_ms=1, for_ms=0, keep_firing_for_ms=0, annotations=(("s", "two"),))
    assert state is not None
    assert (state.value, state.annotations, state.active_at_ms) == (2.0, (("s", "two"),), 0)


@pytest.mark.parametrize(
    ("state", "last_sent", "resolved_at", "now", "expected"),
    [
        (P, None, None, 0, False),       # pending alerts are never sent
        (F, None, None, 0, True),        # first send
        (F, 0, None, 60_000, False),     # within the resend delay
        (F, 0, None, 60_001, True),      # resend delay passed
        (N, 0, 1_000, 2_000, True),      # resolved since last send: at once
        (N, 2_000, 1_000, 3_000, False),
    ],
)
def test_needs_sending(state: State, last_sent: int | None, resolved_at: int | None, now: int,
                       expected: bool) -> None:
    a = AlertState(L, (), state, 0, 1.0, last_sent_ms=last_sent, resolved_at_ms=resolved_at)
    assert needs_sending(a, now_ms=now, resend_delay_ms=60_000) is expected


def test_valid_until_is_four_times_the_larger_of_interval_and_resend_delay() -> None:
    a = AlertState(L, (), F, 0, 1.0)
    assert mark_sent(a, now_ms=1_000, resend_delay_ms=60_000, interval_ms=15_000).valid_until_ms == 241_000
    assert mark_sent(a, now_ms=1_000, resend_delay_ms=60_000, interval_ms=120_000).valid_until_ms == 481_000
