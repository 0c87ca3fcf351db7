"""The node's errors: one tree, so a caller can tell the node's own problems from otp's.

:class:`NodeError` is the base of every error the node raises on its own account. otp's
errors (:class:`otp.NoProcess`, :class:`otp.CallError`, :class:`otp.CallTimeout`) still say
what happened to a call between actors; a sibling that stays away past the caller's wait is
:class:`SiblingUnavailable`.
"""

from __future__ import annotations

from typing import Any, Final

import otp


class NodeError(Exception):
    """Base class of every error the node raises on its own account."""


class StorageError(NodeError):
    """A problem with the node's database."""


class StorageCorrupt(StorageError):
    """A stored record does not decode or contradicts another one."""

    def __init__(self, key: bytes, problem: str) -> None:
        super().__init__(f"corrupt storage record {key!r}: {problem}")
        self.key = key
        self.problem = problem


class StorageRequestError(StorageError, ValueError):
    """A request the storage refuses: a field out of range (a height beyond ``u64``, a hash
    that is not 32 bytes) or a write that would break an invariant. The message says what
    and where; the actor carries on."""


class MissingBlock(StorageError):
    """A block the chain needs is not in the database."""


class SiblingUnavailable(NodeError):
    """A sibling actor stayed unavailable (restarting) for longer than the caller would
    wait."""

    def __init__(self, target: Any, waited: float, last: BaseException) -> None:
        super().__init__(f"{target!r} is unavailable (restarting?) after waiting {waited:g} s: "
                         f"{last}")
        self.target = target
        self.waited = waited
        self.last = last


class KeyFileError(NodeError):
    """The node's authority key file cannot be used."""


class EngineSetupError(NodeError):
    """The execution engine cannot be used as configured (no JWT secret for an HTTP engine,
    an execution client that lacks the blocks it must have)."""


class MinerProcessDied(NodeError):
    """The dev miner's grinding process exited on its own."""


#: What a call to a sibling actor may fail with: otp's errors (it died, it is not registered,
#: it timed out) and the node's own (it stayed away past the wait, it refused the request).
CALL_FAILURES: Final = (otp.OtpError, NodeError)
