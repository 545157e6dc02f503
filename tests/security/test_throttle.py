"""Login throttling by user name: a window of failures, cleared by success, bounded in memory."""

from __future__ import annotations

from watchkeeper.security.throttle import LoginThrottle


def test_the_lock_lasts_until_the_oldest_counted_failure_leaves_the_window() -> None:
    t = LoginThrottle(max_failures=3, window_seconds=100)
    for now in (0, 10, 20):
        assert t.retry_after("bob", now_seconds=now) is None
        t.fail("bob", now_seconds=now)
    assert t.retry_after("bob", now_seconds=20) == 80
    assert t.retry_after("bob", now_seconds=99.5) == 1
    assert t.retry_after("bob", now_seconds=100) is None  # 0 left the window: two failures count
    t.fail("bob", now_seconds=100)
    assert t.retry_after("bob", now_seconds=101) == 9  # 10, 20, 100: until 10 leaves
    assert t.retry_after("alice", now_seconds=101) is None


def test_success_clears_and_memory_is_bounded() -> None:
    t = LoginThrottle(max_failures=1, window_seconds=100, max_names=2)
    t.fail("a", now_seconds=0)
    assert t.retry_after("a", now_seconds=1) == 99
    t.succeed("a")
    assert t.retry_after("a", now_seconds=1) is None
    for name in ("x", "y", "z"):
        t.fail(name, now_seconds=0)
    assert t.retry_after("x", now_seconds=1) is None  # forgotten, the oldest of three names
    assert t.retry_after("z", now_seconds=1) == 99
