"""Requests to the BridgeActor (registered as ``bridge``), and its answers.

The ChainActor asks it for the deposits the next block credits (:class:`GetPegInsForBlock`)
and to verify the peg-ins a received block claims (:class:`VerifyPegIns`), and tells it which
deposits an imported block credited (:class:`PegInsCredited`, a cast).
"""

from __future__ import annotations

from typing import Any

import attrs

import otp

from ..types.pegin import Deposit  # noqa: F401 (named in a reply type)
from ..workflows.chain import PegIn


def _claims(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not all(
            isinstance(c, tuple) and len(c) == 2
            and all(type(h) is bytes and len(h) == 32 for h in c) for c in value):
        raise ValueError(f"{type(inst).__name__}.{attribute.name}: a tuple of (txid, block "
                         f"hash) pairs of 32 bytes each, not {value!r:.80}")


def _txids(inst: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, tuple) or not all(type(t) is bytes and len(t) == 32
                                               for t in value):
        raise ValueError(f"{type(inst).__name__}.{attribute.name}: a tuple of 32-byte txids")


@attrs.frozen
class GetPegInsForBlock(otp.Request["tuple[Deposit, ...]"]):
    """Confirmed, uncredited deposits for the next block (at most 16 distinct EVM
    addresses), oldest first, leaving out ``exclude`` (txids known to be credited)."""

    exclude: tuple[bytes, ...] = attrs.field(default=(), validator=_txids)


@attrs.frozen
class VerifyPegIns(otp.Request["PegInVerdict"]):
    """Check the peg-ins a block claims: from the bridge's own records where it has them,
    else by asking Bitcoin (``getblockheader`` confirmations, ``getrawtransaction(txid,
    blockhash)``)."""

    claimed: tuple[tuple[bytes, bytes], ...] = attrs.field(validator=_claims)


@attrs.frozen
class PegInVerdict:
    #: The claims that hold, with what they credit.
    verified: dict[tuple[bytes, bytes], PegIn]
    #: The claims that do not, and why.
    problems: dict[tuple[bytes, bytes], str]


@attrs.frozen
class PegInsCredited:
    """Cast by the ChainActor after it imported the block ``block_hash`` at ``height``,
    which credited ``claimed``."""

    claimed: tuple[tuple[bytes, bytes], ...] = attrs.field(validator=_claims)
    block_hash: bytes
    height: int


@attrs.frozen
class GetBridgeStatus(otp.Request["BridgeStatus"]):
    pass


@attrs.frozen
class BridgeStatus:
    scan_height: int
    bitcoin_tip: int | None
    #: Deposits by state name.
    deposits: dict[str, int]
    refusals: int
    #: Why the last poll failed, or None.
    bitcoin_problem: str | None
