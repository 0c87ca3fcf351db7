"""The embedded engine's side of snap sync: serving trie nodes and code by hash (and nothing
else), storing downloaded values, refusing a pivot whose state is incomplete, making a pivot
block the head so that the next block executes (BLOCKHASH included) to the same state as on
the node that executed everything, and a download interrupted by a restart."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from node.execution.db import MemoryStore
from node.execution.embedded import (
    PIVOT_ANCESTORS,
    EmbeddedEngine,
    PivotError,
    contract_address,
    header_of_payload,
)
from node.types.execution import ZERO_HASH, ExecutionPayload, ForkchoiceState, PayloadStatusKind
from node.workflows import state_sync as ss

from .state_helpers import SENDERS, download, next_block, recipient, rich_state, slot_value

#: Runtime code: SSTORE(slot 0, BLOCKHASH(calldata[0:32])); STOP.
BLOCKHASH_CODE = bytes.fromhex("600035" "40" "600055" "00")
BLOCKHASH_INIT = bytes([0x67]) + BLOCKHASH_CODE + bytes.fromhex("600052" "6008" "6018" "f3")


def tx(sender: object, nonce: int, **fields: object) -> bytes:
    body = {"value": 0, "gas": 100_000, "chainId": 121212, "nonce": nonce,
            "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, **fields}
    return bytes(Account.sign_transaction(body, SENDERS[3].private_key if sender is None
                                          else sender.private_key).raw_transaction)  # type: ignore[attr-defined]


def payloads_of(engine: EmbeddedEngine, first: int, last: int) -> list[ExecutionPayload]:
    out = []
    for n in range(first, last + 1):
        p = engine.block_by_number(n)
        assert p is not None
        out.append(p)
    return out


def copy_state(source: EmbeddedEngine, target: EmbeddedEngine, root: bytes) -> ss.StateDownload:
    d, stored = download(root, source.state_values)
    target.put_state_values(list(stored.items()))
    return d


async def test_a_pivot_with_its_state_becomes_the_head_and_the_next_block_executes() -> None:
    a = EmbeddedEngine()
    contract, _ = await rich_state(a, accounts=60, slots=30)
    watcher_sender = SENDERS[3]
    nonce = a.nonce_of(watcher_sender.address)
    a.add_transaction(tx(watcher_sender, nonce, data=BLOCKHASH_INIT, gas=200_000))
    await next_block(a)
    watcher = contract_address(watcher_sender.address, nonce)
    for _ in range(4):
        await next_block(a)
    pivot = a.head
    b = EmbeddedEngine()
    genesis_head = b.head
    # No state yet: refused, nothing changes.
    with pytest.raises(PivotError, match="incomplete: account trie node 0x"):
        await b.set_pivot(payloads_of(a, 1, pivot.block_number))
    assert b.head == genesis_head and b.pivot is None
    copy_state(a, b, pivot.state_root)
    assert await b.set_pivot(payloads_of(a, 1, pivot.block_number)) == pivot.block_hash
    assert b.head == pivot and b.pivot == (pivot.block_number, pivot.block_hash)
    assert b.forkchoice == ForkchoiceState(pivot.block_hash, ZERO_HASH, ZERO_HASH)
    assert b.balance_of(recipient(5)) == 10**15 + 5
    assert b.state_at(b.head_header).get_storage(contract, 1000 + 3) == slot_value(3)
    # Block P+1 built by A — a BLOCKHASH read 3 blocks back, a storage write, transfers —
    # executes on B to the same state.
    a.add_transaction(tx(watcher_sender, nonce + 1, to=to_checksum_address(watcher),
                         data=(pivot.block_number - 3).to_bytes(32, "big")))
    a.add_transaction(tx(SENDERS[0], a.nonce_of(SENDERS[0].address),
                         to=to_checksum_address(contract),
                         data=(5).to_bytes(32, "big") + (1000 + 3).to_bytes(32, "big")))
    child = await next_block(a)
    status = await b.new_payload(child)
    assert status.status is PayloadStatusKind.VALID, status
    await b.forkchoice_updated(ForkchoiceState(child.block_hash, ZERO_HASH, ZERO_HASH))
    assert b.head == child and b.head_header.state_root == a.head_header.state_root
    stored = b.state_at(b.head_header).get_storage(watcher, 0)
    assert stored == int.from_bytes(payloads_of(a, pivot.block_number - 3,
                                                pivot.block_number - 3)[0].block_hash, "big")
    # Blocks before the pivot: whole blocks, no receipts.
    assert b.block_by_number(2) == a.block_by_number(2)
    with pytest.raises(KeyError, match="before the block whose state was downloaded"):
        await b.receipts(payloads_of(a, 2, 2)[0].block_hash)
    a.close()
    b.close()


async def test_a_pivot_needs_256_blocks_unless_they_reach_a_known_block() -> None:
    a = EmbeddedEngine()
    for _ in range(PIVOT_ANCESTORS + 4):
        await next_block(a)
    pivot = a.head
    b = EmbeddedEngine()
    copy_state(a, b, pivot.state_root)
    n = pivot.block_number
    with pytest.raises(PivotError, match="at least 255 ancestors"):
        await b.set_pivot(payloads_of(a, n - 9, n))
    broken = payloads_of(a, n - PIVOT_ANCESTORS + 1, n)
    broken[5] = broken[6]
    with pytest.raises(PivotError, match="is not the child of payload"):
        await b.set_pivot(broken)
    forged = payloads_of(a, n - PIVOT_ANCESTORS + 1, n)
    forged[-1] = attrs.evolve(forged[-1], gas_used=1)
    with pytest.raises(PivotError, match="hashes to 0x"):
        await b.set_pivot(forged)
    with pytest.raises(PivotError, match="no payloads"):
        await b.set_pivot([])
    with pytest.raises(PivotError, match="finalized block 0x"):
        await b.set_pivot(payloads_of(a, n - PIVOT_ANCESTORS + 1, n),
                          finalized=b"\x42" * 32)
    assert b.head_number == 0
    window = payloads_of(a, n - PIVOT_ANCESTORS + 1, n)
    await b.set_pivot(window, safe=window[-10].block_hash, finalized=window[-10].block_hash)
    assert b.head == pivot and b.block_by_number(n - PIVOT_ANCESTORS) is None
    # The next block executes: BLOCKHASH's 256 blocks are all there.
    child = await next_block(a)
    assert (await b.new_payload(child)).status is PayloadStatusKind.VALID
    a.close()
    b.close()


async def test_a_chain_not_finalized_since_genesis_names_genesis_safe_and_finalized() -> None:
    """The ChainActor passes its finalized payload, genesis on a chain without PoW yet, which
    is no pivot window's member past 256 blocks: genesis is everyone's ancestor, and the
    forkchoice of the next block may name it."""
    a = EmbeddedEngine()
    for _ in range(PIVOT_ANCESTORS + 4):
        await next_block(a)
    b = EmbeddedEngine()
    copy_state(a, b, a.head.state_root)
    n = a.head.block_number
    genesis = b.genesis_hash
    window = payloads_of(a, n - PIVOT_ANCESTORS + 1, n)
    await b.set_pivot(window, safe=genesis, finalized=genesis, state_whole=True)
    assert b.head == a.head
    child = await next_block(a)
    assert (await b.new_payload(child)).status is PayloadStatusKind.VALID
    await b.forkchoice_updated(ForkchoiceState(child.block_hash, genesis, genesis))
    assert b.head == child
    a.close()
    b.close()


async def test_serving_answers_only_values_that_hash_to_their_key_within_a_byte_bound() -> None:
    store = MemoryStore()
    engine = EmbeddedEngine(store=store)
    root = engine.head_header.state_root
    secret = b"\x01" * 32
    store.data[secret] = b"not a node"  # a record under a 32-byte key that is not its hash
    values = engine.state_values([root, secret, b"\x02" * 32, b"short", root])
    assert values[0] == values[4] != b"" and keccak(values[0]) == root
    assert values[1:4] == [b"", b"", b""]
    _, stored = download(root, engine.state_values)
    big = sorted(stored, key=lambda h: -len(stored[h]))[:3]
    sizes = [len(stored[h]) for h in big]
    assert engine.state_values(big, max_bytes=sizes[0] + sizes[1]) == [stored[h] for h in big[:2]]
    assert engine.state_values(big, max_bytes=1) == [stored[big[0]]]  # the first always
    with pytest.raises(ValueError, match="does not hash to its key"):
        engine.put_state_values([(b"\x03" * 32, b"abc")])
    before = dict(store.data)
    with pytest.raises(ValueError, match="value 1 does not hash"):
        engine.put_state_values([(keccak(b"x"), b"x"), (keccak(b"y"), b"z")])
    assert store.data == before
    engine.close()


async def test_an_interrupted_download_resumes_from_what_was_stored(tmp_path: Path) -> None:
    a = EmbeddedEngine()
    await rich_state(a, accounts=80, slots=20)
    pivot = a.head
    _, everything = download(pivot.state_root, a.state_values)
    b = EmbeddedEngine(path=tmp_path / "evm")
    # A first run stores a part, batch by batch, and is killed (closed) between batches.
    d = ss.start(pivot.state_root)
    for _ in range(3):
        d, wants = ss.next_batch(d, 16)
        answer = ss.answered(d, wants, a.state_values([w.hash for w in wants]))
        b.put_state_values(answer.store)
        d = answer.download
    b.close()
    b = EmbeddedEngine(path=tmp_path / "evm")
    with pytest.raises(PivotError, match="incomplete"):
        await b.set_pivot(payloads_of(a, 1, pivot.block_number))
    assert b.head_number == 0 and b.pivot is None
    # The next run starts from the root again, reading its own store first: it asks for
    # what it lacks only (the first run's values, and the genesis state's it shares).
    present = {h for h in everything if b.state_values([h]) != [b""]}
    assert len(present) > 16  # the root, its children, more (and genesis code)
    asked: list[bytes] = []

    def local_first(hashes: list[bytes]) -> list[bytes]:
        have = b.state_values(hashes)
        have += [b""] * (len(hashes) - len(have))
        lacking = [h for h, v in zip(hashes, have, strict=True) if not v]
        asked.extend(lacking)
        fetched = dict(zip(lacking, a.state_values(lacking), strict=False))
        b.put_state_values([(h, v) for h, v in fetched.items() if v])
        return [v or fetched.get(h, b"") for h, v in zip(hashes, have, strict=True)]

    d, _ = download(pivot.state_root, local_first)
    assert d.done and set(asked) == set(everything) - present and len(asked) == len(set(asked))
    await b.set_pivot(payloads_of(a, 1, pivot.block_number))
    b.close()
    b = EmbeddedEngine(path=tmp_path / "evm")
    assert b.head == pivot and b.pivot == (pivot.block_number, pivot.block_hash)
    child = await next_block(a)
    assert (await b.new_payload(child)).status is PayloadStatusKind.VALID
    a.close()
    b.close()


async def test_a_snap_sync_under_way_is_recorded_across_a_restart_and_ended_by_the_pivot(
        tmp_path: Path) -> None:
    a = EmbeddedEngine()
    await rich_state(a, accounts=20, slots=5)
    pivot = a.head
    b = EmbeddedEngine(path=tmp_path / "evm")
    assert b.snap_target is None
    b.record_snap(pivot.block_number)
    b.close()
    b = EmbeddedEngine(path=tmp_path / "evm")  # durable
    assert b.snap_target == pivot.block_number
    copy_state(a, b, pivot.state_root)
    await b.set_pivot(payloads_of(a, 1, pivot.block_number))
    assert b.snap_target is None  # ended in the pivot's own batch
    b.record_snap(7)
    b.record_snap(None)
    assert b.snap_target is None
    b.close()
    a.close()


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers().filter(lambda n: not 0 < n < 2**64), st.booleans(),
                 st.floats(allow_nan=True), st.text(max_size=3), st.binary(max_size=9),
                 st.lists(st.integers(), max_size=2)))
def test_a_snap_record_refuses_what_is_not_a_height(value: object) -> None:
    engine = EmbeddedEngine()
    with pytest.raises(ValueError, match="a snap sync's pivot is a height from 1 to 2\\*\\*64-1"):
        engine.record_snap(value)  # type: ignore[arg-type]
    assert engine.snap_target is None
    engine.close()


def test_payload_header_round_trip_used_by_the_pivot() -> None:
    engine = EmbeddedEngine()
    assert header_of_payload(engine.head).hash == engine.head.block_hash
    engine.close()
