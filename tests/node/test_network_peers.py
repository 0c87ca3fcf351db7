"""The peer rules (node.workflows.peers): plain values, no Trio."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.workflows import peers as rules
from node.workflows.peers import Bans, Offence, Redial, Score, TokenBucket

times = st.floats(0, 1e6, allow_nan=False)
offences = st.sampled_from(list(Offence))


def test_backoff_is_the_originals() -> None:
    assert [rules.backoff_delay(n) for n in (0, 1, 2, 3, 12, 13, 100)] == [
        1, 2, 4, 8, 4096, 4096, 4096]


def test_a_bootnode_is_given_up_after_twelve_failures_in_a_row() -> None:
    state, now, delays = Redial(), 0.0, []
    while True:
        state = state.failed(now)
        if state.next_at is None:
            break
        delays.append(state.next_at - now)
        now = state.next_at
    assert state.failures == rules.MAX_DIAL_ATTEMPTS and state.given_up
    assert delays == [2.0 ** n for n in range(1, 12)]
    assert Redial(5, 10.0).connected() == Redial(0, None)
    assert Redial(5, 10.0).disconnected(100.0) == Redial(0, 101.0)


@given(st.integers(0, 200))
def test_backoff_never_exceeds_2_to_the_12(n: int) -> None:
    assert 1 <= rules.backoff_delay(n) <= 4096


@given(offences, times)
def test_invalid_blocks_malformed_frames_and_flooding_ban_at_once(offence: Offence,
                                                                  now: float) -> None:
    score = rules.penalise(Score(0.0, now), offence, now)
    severe = offence in (Offence.INVALID_BLOCK, Offence.MALFORMED_FRAME, Offence.FLOODING)
    assert rules.should_ban(score, now) == severe


def test_timeouts_ban_only_when_repeated_faster_than_the_score_recovers() -> None:
    score = Score()
    for i in range(6):
        score = rules.penalise(score, Offence.TIMEOUT, i * 0.1)
    assert rules.should_ban(score, 0.5)
    slow = Score()
    for i in range(20):
        slow = rules.penalise(slow, Offence.TIMEOUT, i * 60.0)
    assert not rules.should_ban(slow, 19 * 60.0)


@given(st.lists(st.tuples(offences, st.floats(0, 100, allow_nan=False)), max_size=20))
def test_a_score_recovers_toward_zero_and_never_beyond(events: list[tuple[Offence, float]]
                                                       ) -> None:
    score, now = Score(), 0.0
    for offence, gap in events:
        now += gap
        before = score.now(now)
        score = rules.penalise(score, offence, now)
        assert score.value == before - rules.PENALTIES[offence]
    later = [score.now(now + dt) for dt in (0.0, 1.0, 10.0, 1e9)]
    assert later == sorted(later) and later[-1] == 0.0 and all(v <= 0 for v in later)


@given(times, st.floats(1, 1e5, allow_nan=False), st.floats(0, 2e5, allow_nan=False))
def test_a_ban_lasts_exactly_its_time(now: float, seconds: float, dt: float) -> None:
    bans = Bans().ban("aa", now, seconds)
    assert bans.is_banned("aa", now + dt) == (now + dt < now + seconds)
    assert not bans.is_banned("bb", now)
    assert ("aa" in bans.expire(now + dt).until) == bans.is_banned("aa", now + dt)


def test_a_longer_ban_is_not_shortened_by_a_later_one() -> None:
    bans = Bans().ban("aa", 0.0, 100.0).ban("aa", 10.0, 5.0)
    assert bans.until["aa"] == 100.0


@given(st.floats(1, 1000, allow_nan=False), st.floats(1, 1000, allow_nan=False),
       st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=300))
def test_the_flood_limit_admits_no_more_than_burst_plus_rate_times_time(
        rate: float, burst: float, gaps: list[float]) -> None:
    bucket, now, admitted = TokenBucket.full(rate, burst, 0.0), 0.0, 0
    for gap in gaps:
        now += gap
        bucket, ok = bucket.take(now)
        admitted += ok
        assert 0.0 <= bucket.tokens <= burst
    assert admitted <= burst + rate * now + 1e-6


def test_a_burst_is_flooding_and_a_steady_rate_is_not() -> None:
    bucket = TokenBucket.full(10.0, 20.0, 0.0)
    results = []
    for _ in range(21):
        bucket, ok = bucket.take(0.0)
        results.append(ok)
    assert results == [True] * 20 + [False]
    steady = TokenBucket.full(10.0, 20.0, 0.0)
    for i in range(1000):
        steady, ok = steady.take(i * 0.1)
        assert ok


def test_admission() -> None:
    bans = Bans().ban("cc", 0.0, 60.0)
    kw = {"self_id": "aa", "bans": bans, "now": 1.0, "max_peers": 2}
    assert rules.admit("bb", connected=set(), **kw) is None  # type: ignore[arg-type]
    assert rules.admit("aa", connected=set(), **kw) == "connected to itself"  # type: ignore[arg-type]
    assert rules.admit("bb", connected={"bb"}, **kw) == "already connected"  # type: ignore[arg-type]
    assert "banned" in (rules.admit("cc", connected=set(), **kw) or "")  # type: ignore[arg-type]
    assert "too many peers" in (rules.admit("dd", connected={"x", "y"}, **kw) or "")  # type: ignore[arg-type]
