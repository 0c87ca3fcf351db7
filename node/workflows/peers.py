"""Peer management rules: scoring, bans, flood limits, redialling bootnodes, admission.

Plain synchronous code over frozen values, no I/O and no clock of its own: every function
takes ``now`` (seconds, any monotonic origin: the network actor passes Trio's clock, virtual
in a simulation) and returns new values.

* **Scores.** A peer starts at 0. Each :class:`Offence` costs its :data:`PENALTIES` points;
  the score recovers toward 0 at ``decay`` points a second. At or below ``ban_threshold``
  (-100) the peer is disconnected and banned. An invalid block, a malformed frame or
  flooding cost 100 points each, so one of them bans at once; a timeout or a useless
  answer costs less and bans only when repeated faster than the score recovers.
* **Bans** last ``ban_seconds`` (``network.ban_seconds``) from the offence and are keyed by
  node id; :func:`is_banned` is false from the instant the ban expires.
* **Flooding.** Each peer has a token bucket of ``burst`` frames refilled at ``rate`` frames
  a second; a frame finding it empty is flooding.
* **Redialling a bootnode**, as the original: after the ``n``-th failure in a row wait
  ``2 ** min(n, 12)`` seconds; after :data:`MAX_DIAL_ATTEMPTS` (12) failures in a row give
  up. A success resets the count.
* **Admission.** A peer is refused when it is this node itself, is already connected, is
  banned, or the node has ``max_peers`` peers already.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = [
    "BAN_THRESHOLD",
    "MAX_DIAL_ATTEMPTS",
    "PENALTIES",
    "Bans",
    "Offence",
    "Redial",
    "Score",
    "TokenBucket",
    "admit",
    "backoff_delay",
    "penalise",
]


class Offence(enum.Enum):
    """What a peer did wrong."""

    #: It sent a block that failed validation (reported by the chain or sync actor).
    INVALID_BLOCK = "invalid_block"
    #: A frame that does not decode, or a gossip payload that does not.
    MALFORMED_FRAME = "malformed_frame"
    #: More frames than its rate allows.
    FLOODING = "flooding"
    #: It did not answer a request (or a ping) in time.
    TIMEOUT = "timeout"
    #: An answer that does not fit the request (blocks out of range, not chained).
    BAD_RESPONSE = "bad_response"
    #: A frame that makes no sense at this point (an answer to no request, a second hello).
    PROTOCOL_VIOLATION = "protocol_violation"


#: Points each offence costs.
PENALTIES: Final[Mapping[Offence, float]] = {
    Offence.INVALID_BLOCK: 100.0,
    Offence.MALFORMED_FRAME: 100.0,
    Offence.FLOODING: 100.0,
    Offence.TIMEOUT: 20.0,
    Offence.BAD_RESPONSE: 50.0,
    Offence.PROTOCOL_VIOLATION: 50.0,
}
#: At or below this score a peer is disconnected and banned.
BAN_THRESHOLD: Final = -100.0
#: Points a second a score recovers toward 0.
DECAY_PER_SECOND: Final = 0.5
#: Failed dials in a row after which a bootnode is given up (as the original).
MAX_DIAL_ATTEMPTS: Final = 12
#: The exponent's cap: 2 ** 12 s is the longest wait between dials.
MAX_BACKOFF_EXPONENT: Final = 12


@attrs.frozen
class Score:
    """A peer's score at time ``at``."""

    value: float = 0.0
    at: float = 0.0

    def now(self, now: float, decay: float = DECAY_PER_SECOND) -> float:
        """The score at ``now``: recovered toward 0 since ``at`` (never past 0)."""
        elapsed = max(now - self.at, 0.0)
        if self.value >= 0.0:
            return self.value
        return min(self.value + elapsed * decay, 0.0)


def penalise(score: Score, offence: Offence, now: float,
             decay: float = DECAY_PER_SECOND) -> Score:
    """``score`` after ``offence`` at ``now``."""
    return Score(score.now(now, decay) - PENALTIES[offence], now)


def should_ban(score: Score, now: float, threshold: float = BAN_THRESHOLD) -> bool:
    return score.now(now) <= threshold


@attrs.frozen
class Bans:
    """Banned node ids and when each ban ends."""

    until: Mapping[str, float] = attrs.field(factory=dict)

    def ban(self, peer: str, now: float, seconds: float) -> Bans:
        end = max(now + seconds, self.until.get(peer, -math.inf))
        return Bans({**self.until, peer: end})

    def is_banned(self, peer: str, now: float) -> bool:
        return self.until.get(peer, -math.inf) > now

    def expire(self, now: float) -> Bans:
        """Without the bans that have ended (so the mapping does not grow for ever)."""
        return Bans({p: t for p, t in self.until.items() if t > now})


@attrs.frozen
class TokenBucket:
    """A flood limit: ``tokens`` left at ``at``, refilled at ``rate`` a second up to
    ``burst``."""

    rate: float
    burst: float
    tokens: float
    at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float, cost: float = 1.0) -> tuple[TokenBucket, bool]:
        """The bucket after a frame at ``now``, and whether the frame was within the limit
        (False: flooding; the bucket is then left empty, not negative)."""
        tokens = min(self.burst, self.tokens + max(now - self.at, 0.0) * self.rate)
        if tokens >= cost:
            return TokenBucket(self.rate, self.burst, tokens - cost, now), True
        return TokenBucket(self.rate, self.burst, 0.0, now), False


def backoff_delay(failures: int) -> float:
    """Seconds to wait before dialling again after ``failures`` failures in a row:
    ``2 ** min(failures, 12)`` (the original's)."""
    return float(2 ** min(max(failures, 0), MAX_BACKOFF_EXPONENT))


@attrs.frozen
class Redial:
    """A bootnode's dial state: failures in a row and when to dial next (None: given up)."""

    failures: int = 0
    next_at: float | None = 0.0

    def failed(self, now: float, max_attempts: int = MAX_DIAL_ATTEMPTS) -> Redial:
        failures = self.failures + 1
        if failures >= max_attempts:
            return Redial(failures, None)
        return Redial(failures, now + backoff_delay(failures))

    def connected(self) -> Redial:
        return Redial(0, None)

    def disconnected(self, now: float) -> Redial:
        """The connection ended: dial again after the first backoff step."""
        return Redial(0, now + backoff_delay(0))

    @property
    def given_up(self) -> bool:
        return self.next_at is None and self.failures >= MAX_DIAL_ATTEMPTS


def admit(peer: str, *, self_id: str, connected: frozenset[str] | set[str], bans: Bans,
          now: float, max_peers: int) -> str | None:
    """Why ``peer`` may not be taken on, or None if it may."""
    if peer == self_id:
        return "connected to itself"
    if peer in connected:
        return "already connected"
    if bans.is_banned(peer, now):
        return f"banned for {bans.until[peer] - now:.0f} s more"
    if len(connected) >= max_peers:
        return f"too many peers ({max_peers})"
    return None
