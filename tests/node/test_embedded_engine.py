"""The embedded execution engine: genesis, building, validation, forkchoice, balances and
persistence (snapshot/restore and deltas)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.execution.embedded import (
    DEFAULT_GAS_LIMIT,
    EMPTY_RECEIPTS_ROOT,
    GWEI,
    EmbeddedEngine,
    EmbeddedEngineConfig,
    EngineStateError,
    block_hash_of,
    state_root_of,
)
from node.integration.engine import build_block, commit_block
from node.types.execution import (
    DEFAULT_FEE_RECIPIENT,
    ENGINE_CAPABILITIES,
    INVALID_FORKCHOICE_STATE,
    INVALID_PARAMS,
    INVALID_PAYLOAD_ATTRIBUTES,
    UNKNOWN_PAYLOAD,
    ZERO_HASH,
    EngineError,
    ExecutionEngine,
    ExecutionPayload,
    ForkchoiceState,
    PayloadAttributes,
    PayloadStatusKind,
    Withdrawal,
)

ALICE = bytes.fromhex("aa" * 20)
BOB = bytes.fromhex("bb" * 20)
CAROL = bytes.fromhex("cc" * 20)


def fc(head: bytes, safe: bytes = ZERO_HASH, finalized: bytes = ZERO_HASH) -> ForkchoiceState:
    return ForkchoiceState(head, safe, finalized)


def pay(address: bytes, gwei: int) -> Withdrawal:
    return Withdrawal(0, 0, address, gwei)


async def extend(
    engine: EmbeddedEngine,
    parent: ExecutionPayload,
    withdrawals: Sequence[Withdrawal] = (),
    *,
    finalized: bytes | None = None,
    commit: bool = True,
) -> ExecutionPayload:
    """Build a child of ``parent`` (one second later) and, by default, make it the head."""
    payload = await build_block(
        engine,
        parent.block_hash,
        finalized,
        parent.timestamp + 1,
        DEFAULT_FEE_RECIPIENT,
        withdrawals,
    )
    if commit:
        assert await commit_block(engine, payload, finalized) == payload.block_hash
    return payload


def reseal(engine: EmbeddedEngine, payload: ExecutionPayload, **changes: Any) -> ExecutionPayload:
    """``payload`` with ``changes`` and a correct block hash for them."""
    changed = attrs.evolve(payload, **changes)
    return attrs.evolve(changed, block_hash=block_hash_of(changed, engine.config.chain_id))


# ----------------------------------------------------------------- genesis and building


async def test_genesis() -> None:
    config = EmbeddedEngineConfig(chain_id=121212, genesis_timestamp=1700, alloc={ALICE: 5})
    engine = EmbeddedEngine(config)
    g = engine.genesis
    assert isinstance(engine, ExecutionEngine)
    assert (g.block_number, g.parent_hash, g.timestamp) == (0, ZERO_HASH, 1700)
    assert g.gas_limit == DEFAULT_GAS_LIMIT == 0x1C9C380
    assert g.block_hash == block_hash_of(g, 121212)
    assert g.state_root == state_root_of({ALICE: 5})
    assert engine.block_by_number(0) == engine.block_by_hash(g.block_hash) == g
    assert engine.block_by_number(1) is None
    assert engine.forkchoice == fc(g.block_hash)
    assert engine.balance_of(ALICE) == 5 and engine.balance_of(BOB) == 0
    # The chain id is in every hash: another chain has another genesis.
    other = EmbeddedEngine(attrs.evolve(config, chain_id=727272))
    assert other.genesis.block_hash != g.block_hash
    assert EmbeddedEngine(config, chain_id=727272).genesis == other.genesis
    assert EmbeddedEngine(genesis_timestamp=1700, alloc={ALICE: 5}).config == attrs.evolve(
        config, chain_id=EmbeddedEngineConfig().chain_id
    )
    assert engine.genesis_payload() == g and engine.head_number == 0
    assert await engine.exchange_capabilities(["engine_newPayloadV1"]) == list(ENGINE_CAPABILITIES)


async def test_built_payloads_follow_the_attributes() -> None:
    engine = EmbeddedEngine()
    g = engine.genesis
    attributes = PayloadAttributes(42, b"\x07" * 32, BOB, (pay(ALICE, 3),))
    result = await engine.forkchoice_updated(fc(g.block_hash), attributes)
    assert result.payload_status.status is PayloadStatusKind.VALID
    assert result.payload_status.latest_valid_hash == g.block_hash
    assert result.payload_id is not None
    got = await engine.get_payload(result.payload_id)
    p = got.execution_payload
    assert got.block_value == 0
    assert (p.block_number, p.parent_hash, p.timestamp) == (1, g.block_hash, 42)
    assert (p.fee_recipient, p.prev_randao, p.withdrawals) == (BOB, b"\x07" * 32, (pay(ALICE, 3),))
    assert (p.gas_used, p.transactions, p.gas_limit) == (0, (), DEFAULT_GAS_LIMIT)
    assert p.base_fee_per_gas == g.base_fee_per_gas
    assert p.receipts_root == EMPTY_RECEIPTS_ROOT and p.logs_bloom == bytes(256)
    assert p.state_root == state_root_of({ALICE: 3 * GWEI})
    assert p.block_hash == block_hash_of(p, engine.config.chain_id)
    # Building does not import: the block is unknown until newPayload.
    assert engine.block_by_hash(p.block_hash) is None
    # Same attributes, same build process; different attributes, a new one.
    again = await engine.forkchoice_updated(fc(g.block_hash), attributes)
    assert again.payload_id == result.payload_id
    other = await engine.forkchoice_updated(
        fc(g.block_hash), attrs.evolve(attributes, timestamp=43)
    )
    assert other.payload_id not in (None, result.payload_id)


async def test_blocks_chain_and_withdrawals_credit_balances() -> None:
    engine = EmbeddedEngine(EmbeddedEngineConfig(alloc=[(CAROL, 10**18)]))
    block = engine.genesis
    chain = [block]
    credits = [
        [pay(ALICE, 1), pay(ALICE, 2), pay(BOB, 5)],
        [],
        [pay(BOB, 2**64 - 1)],
        [pay(CAROL, 1), pay(ALICE, 0)],
    ]
    for withdrawals in credits:
        block = await extend(engine, block, withdrawals)
        chain.append(block)
    for parent, child in itertools.pairwise(chain):
        assert child.parent_hash == parent.block_hash
        assert child.block_number == parent.block_number + 1
        assert child.block_hash == block_hash_of(child, engine.config.chain_id)
    assert len({b.block_hash for b in chain}) == len(chain)
    assert [engine.block_by_number(i) for i in range(len(chain))] == chain
    assert engine.head == block and engine.head_number == 4
    assert engine.balance_of(ALICE) == 3 * GWEI
    assert engine.balance_of(BOB) == (5 + 2**64 - 1) * GWEI
    assert engine.balance_of(CAROL) == 10**18 + GWEI
    assert engine.head.state_root == state_root_of(engine.balances())
    # Balances at earlier blocks.
    assert engine.balance_of(ALICE, chain[1].block_hash) == 3 * GWEI
    assert engine.balance_of(BOB, chain[2].block_hash) == 5 * GWEI
    assert engine.balances(chain[0].block_hash) == {CAROL: 10**18}


# ----------------------------------------------------------------- newPayload validation


async def test_new_payload_refuses_bad_payloads() -> None:
    engine = EmbeddedEngine()
    one = await extend(engine, engine.genesis, [pay(ALICE, 1)])
    built = await extend(engine, one, [pay(BOB, 1)], commit=False)
    head_before = engine.forkchoice

    status = await engine.new_payload(attrs.evolve(built, block_hash=b"\x01" * 32))
    assert status.status is PayloadStatusKind.INVALID
    assert status.latest_valid_hash is None
    assert "block hash mismatch" in (status.validation_error or "")

    cases: dict[str, dict[str, Any]] = {
        "block number 3 does not follow": {"block_number": 3},
        "timestamp": {"timestamp": one.timestamp},
        "gas limit": {"gas_limit": 1},
        "base fee": {"base_fee_per_gas": 8},
        "executes no transactions": {"transactions": (b"\x02",)},
        "gas used": {"gas_used": 21000},
        "receipts root": {"receipts_root": b"\x00" * 32},
        "logs bloom": {"logs_bloom": b"\x01" * 256},
        "state root": {"state_root": b"\x00" * 32},
        "state root ": {"withdrawals": (pay(BOB, 2),)},
    }
    for reason, changes in cases.items():
        bad = reseal(engine, built, **changes)
        status = await engine.new_payload(bad)
        assert status.status is PayloadStatusKind.INVALID, reason
        assert status.latest_valid_hash == one.block_hash, reason
        assert reason.strip() in (status.validation_error or ""), status.validation_error
        # Idempotent: still invalid when sent again, and so is a child of it.
        assert (await engine.new_payload(bad)).status is PayloadStatusKind.INVALID
        child = reseal(engine, built, parent_hash=bad.block_hash, block_number=3)
        assert (await engine.new_payload(child)).status is PayloadStatusKind.INVALID
        fcu = await engine.forkchoice_updated(fc(bad.block_hash))
        assert fcu.payload_status.status is PayloadStatusKind.INVALID
        assert engine.block_by_hash(bad.block_hash) is None

    orphan = reseal(engine, built, parent_hash=b"\x09" * 32)
    status = await engine.new_payload(orphan)
    assert (status.status, status.latest_valid_hash, status.validation_error) == (
        PayloadStatusKind.SYNCING,
        None,
        None,
    )
    assert engine.forkchoice == head_before
    # The good payload still goes in, and newPayload does not move the head.
    status = await engine.new_payload(built)
    assert (status.status, status.latest_valid_hash) == (PayloadStatusKind.VALID, built.block_hash)
    assert engine.forkchoice == head_before
    assert (await engine.new_payload(built)).status is PayloadStatusKind.VALID


async def test_forkchoice_errors() -> None:
    engine = EmbeddedEngine()
    g = engine.genesis
    one = await extend(engine, g)
    two_a = await extend(engine, one, [pay(ALICE, 1)])
    two_b = await extend(engine, one, [pay(BOB, 1)], commit=False)
    assert (await engine.new_payload(two_b)).status is PayloadStatusKind.VALID
    assert engine.head == one  # building on ``one`` made it the head
    await engine.forkchoice_updated(fc(two_a.block_hash))

    unknown = await engine.forkchoice_updated(fc(b"\x05" * 32))
    assert unknown.payload_status.status is PayloadStatusKind.SYNCING
    assert unknown.payload_id is None
    assert engine.head == two_a

    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(fc(two_a.block_hash, finalized=b"\x05" * 32))
    assert info.value.code == INVALID_FORKCHOICE_STATE
    assert "finalized block 0x0505" in info.value.message
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(fc(two_a.block_hash, safe=two_b.block_hash))
    assert info.value.code == INVALID_FORKCHOICE_STATE
    assert "not an ancestor" in info.value.message
    assert engine.forkchoice == fc(two_a.block_hash)

    late = PayloadAttributes(two_b.timestamp, ZERO_HASH, ALICE, ())
    with pytest.raises(EngineError) as info:
        await engine.forkchoice_updated(fc(two_b.block_hash, one.block_hash, g.block_hash), late)
    assert info.value.code == INVALID_PAYLOAD_ATTRIBUTES
    assert info.value.method == "engine_forkchoiceUpdatedV2"
    # paris.md: the forkchoice update is not rolled back when the attributes are invalid.
    assert engine.forkchoice == fc(two_b.block_hash, one.block_hash, g.block_hash)

    with pytest.raises(EngineError) as info:
        await engine.get_payload(b"\x00" * 8)
    assert info.value.code == UNKNOWN_PAYLOAD
    with pytest.raises(EngineError) as info:
        await engine.get_payload(b"\x00" * 7)
    assert info.value.code == INVALID_PARAMS
    with pytest.raises(EngineError) as info:
        await engine.new_payload("payload")  # type: ignore[arg-type]
    assert info.value.code == INVALID_PARAMS


async def test_reorgs_move_balances_and_the_canonical_chain() -> None:
    engine = EmbeddedEngine()
    one = await extend(engine, engine.genesis, [pay(CAROL, 7)])
    two_a = await extend(engine, one, [pay(ALICE, 1)])
    three_a = await extend(engine, two_a, [pay(ALICE, 1)])
    two_b = await extend(engine, one, [pay(BOB, 4)])
    assert engine.head == two_b
    assert engine.balances() == {CAROL: 7 * GWEI, BOB: 4 * GWEI}
    assert engine.block_by_number(2) == two_b and engine.block_by_number(3) is None
    assert engine.balance_of(ALICE, three_a.block_hash) == 2 * GWEI

    await engine.forkchoice_updated(fc(three_a.block_hash, one.block_hash, one.block_hash))
    assert engine.balances() == {CAROL: 7 * GWEI, ALICE: 2 * GWEI}
    assert [engine.block_by_number(i) for i in (1, 2, 3)] == [one, two_a, three_a]
    assert engine.head.state_root == state_root_of(engine.balances())

    # Back to an ancestor: the engine applies it (it may, paris.md) and builds on it.
    await engine.forkchoice_updated(fc(one.block_hash))
    assert engine.balances() == {CAROL: 7 * GWEI}
    assert engine.block_by_number(2) is None
    three_b = await extend(engine, await extend(engine, one, [pay(BOB, 1)]), [])
    assert three_b.block_number == 3 and engine.head == three_b


# ----------------------------------------------------------------- persistence


async def _busy_engine() -> tuple[EmbeddedEngine, list[ExecutionPayload]]:
    engine = EmbeddedEngine(
        EmbeddedEngineConfig(chain_id=7, genesis_timestamp=100, alloc={CAROL: 1})
    )
    block = engine.genesis
    chain = [block]
    for i in range(6):
        block = await extend(
            engine,
            block,
            [pay(ALICE, i), pay(BOB, 2 * i + 1)],
            finalized=chain[max(0, i - 2)].block_hash,
        )
        chain.append(block)
    side = await extend(engine, chain[3], [pay(CAROL, 99)], commit=False)
    assert (await engine.new_payload(side)).status is PayloadStatusKind.VALID
    await engine.forkchoice_updated(fc(block.block_hash, chain[3].block_hash, chain[2].block_hash))
    return engine, chain


def _same_state(a: EmbeddedEngine, b: EmbeddedEngine, chain: list[ExecutionPayload]) -> None:
    assert a.config == b.config
    assert a.forkchoice == b.forkchoice
    assert a.balances() == b.balances()
    for block in chain:
        assert b.block_by_hash(block.block_hash) == block
        assert b.block_by_number(block.block_number) == a.block_by_number(block.block_number)


async def test_snapshot_restore_round_trip() -> None:
    engine, chain = await _busy_engine()
    data = engine.snapshot()
    restored = EmbeddedEngine.restore(data)
    _same_state(engine, restored, chain)
    assert restored.snapshot() == data
    # Both continue identically.
    nxt = await extend(engine, engine.head, [pay(ALICE, 5)], finalized=chain[4].block_hash)
    nxt2 = await extend(restored, restored.head, [pay(ALICE, 5)], finalized=chain[4].block_hash)
    assert nxt == nxt2
    assert engine.snapshot() == restored.snapshot()
    # Canonical: equal states, equal bytes.
    assert EmbeddedEngine().snapshot() == EmbeddedEngine().snapshot()


async def test_deltas_replay_onto_an_older_snapshot() -> None:
    engine, chain = await _busy_engine()
    old = EmbeddedEngine.restore(engine.snapshot())
    for _ in range(3):
        chain.append(await extend(engine, engine.head, [pay(CAROL, 3)]))
    deltas = [engine.state_delta(b.block_hash) for b in chain[-3:]]
    with pytest.raises(EngineStateError, match="cannot be imported: SYNCING"):
        old.apply_delta(deltas[1])
    for delta in deltas:
        old.apply_delta(delta)
    old.apply_delta(deltas[0])  # known: a no-op
    await old.forkchoice_updated(engine.forkchoice)
    _same_state(engine, old, chain)
    with pytest.raises(KeyError, match="unknown block"):
        engine.state_delta(b"\x00" * 32)


async def test_restore_refuses_damaged_state() -> None:
    engine, chain = await _busy_engine()
    data = engine.snapshot()
    with pytest.raises(EngineStateError, match="not valid CBOR"):
        EmbeddedEngine.restore(data[:-5])
    with pytest.raises(EngineStateError, match="expected bytes"):
        EmbeddedEngine.restore("x")  # type: ignore[arg-type]
    import cbor2

    doc = cbor2.loads(data)
    doc["version"] = 3
    with pytest.raises(EngineStateError, match="snapshot: version: expected 2, got 3"):
        EmbeddedEngine.restore(cbor2.dumps(doc))

    def edit_block(doc: Any, i: int, field: int, value: Any) -> None:
        fields = cbor2.loads(doc["blocks"][i])
        fields[field] = value(fields[field])
        doc["blocks"][i] = cbor2.dumps(fields, canonical=True)

    doc = cbor2.loads(data)
    edit_block(doc, 3, 9, lambda t: t + 1)  # the timestamp
    with pytest.raises(EngineStateError, match=r"blocks\[3\]: the stored hash"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    edit_block(doc, 2, 6, lambda n: "two")  # the block number
    with pytest.raises(EngineStateError, match=r"blocks\[2\]\.block_number: expected an unsigned"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    doc["blocks"][4] = doc["blocks"][4][:-3]
    with pytest.raises(EngineStateError, match=r"blocks\[4\]: not valid CBOR"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    del doc["blocks"][2]
    with pytest.raises(EngineStateError, match=r"blocks\[2\]: the parent 0x[0-9a-f]+ is unknown"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    doc["config"]["chain_id"] = 8
    with pytest.raises(EngineStateError, match=r"anchor is not the genesis"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    doc["forkchoice"][2] = chain[-1].block_hash[:31] + b"\x00"
    with pytest.raises(EngineStateError, match=r"forkchoice\[2\]"):
        EmbeddedEngine.restore(cbor2.dumps(doc))
    doc = cbor2.loads(data)
    doc["extra"] = 1
    with pytest.raises(EngineStateError, match=r"snapshot: top level: unexpected keys \['extra'\]"):
        EmbeddedEngine.restore(cbor2.dumps(doc))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_restore_of_corrupted_bytes_fails_cleanly(data: st.DataObject) -> None:
    snapshot = _SNAPSHOT
    position = data.draw(st.integers(0, len(snapshot) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(snapshot)
    damaged[position] ^= flip
    try:
        restored = EmbeddedEngine.restore(bytes(damaged))
    except EngineStateError as exc:
        assert str(exc).startswith(("snapshot: ", "snapshot:"))
    else:  # a flip the format cannot see must still give a self-consistent engine
        assert restored.head.state_root == state_root_of(restored.balances())


_SNAPSHOT = trio.run(_busy_engine)[0].snapshot()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"alloc\[1\]: address 0xaaaa.* appears twice"):
        EmbeddedEngineConfig(alloc=[(ALICE, 1), (ALICE, 2)])
    with pytest.raises(ValueError, match=r"alloc\[0\]: the address must be 20 bytes"):
        EmbeddedEngineConfig(alloc=[(b"x", 1)])
    with pytest.raises(ValueError, match=r"chain_id must be an int in \[0, 2\*\*64\)"):
        EmbeddedEngineConfig(chain_id=-1)
    assert EmbeddedEngineConfig(alloc={BOB: 1, ALICE: 0, CAROL: 2}).alloc == ((BOB, 1), (CAROL, 2))


# ----------------------------------------------------------------- a random walk


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_random_forks_keep_balances_consistent(seed: int) -> None:
    """Build and switch between random forks; the balances at the head always equal the
    genesis allocation plus every withdrawal on the head's chain."""

    async def walk() -> None:
        rng = random.Random(seed)
        engine = EmbeddedEngine(EmbeddedEngineConfig(alloc={CAROL: 1}))
        known = [engine.genesis]
        for _ in range(12):
            parent = rng.choice(known)
            ws = [pay(rng.choice([ALICE, BOB, CAROL]), rng.randrange(3)) for _ in range(2)]
            block = await build_block(
                engine,
                parent.block_hash,
                None,
                parent.timestamp + rng.randrange(1, 3),
                ALICE,
                ws,
            )
            assert (await engine.new_payload(block)).status is PayloadStatusKind.VALID
            known.append(block)
            head = rng.choice(known)
            await engine.forkchoice_updated(fc(head.block_hash))
            expected = {CAROL: 1}
            cur: ExecutionPayload | None = head
            while cur is not None and cur.block_number > 0:
                for w in cur.withdrawals:
                    expected[w.address] = expected.get(w.address, 0) + w.amount * GWEI
                assert engine.block_by_number(cur.block_number) == cur
                cur = engine.block_by_hash(cur.parent_hash)
            expected = {a: b for a, b in expected.items() if b}
            assert engine.balances() == expected
            assert state_root_of(expected) == head.state_root
            assert engine.block_by_number(head.block_number + 1) is None
        restored = EmbeddedEngine.restore(engine.snapshot())
        assert restored.balances() == engine.balances()
        assert restored.snapshot() == engine.snapshot()

    trio.run(walk)


# ----------------------------------------------------------------- flat memory: the anchor


async def test_retain_from_forgets_everything_but_the_anchor_and_its_descendants() -> None:
    engine = EmbeddedEngine(EmbeddedEngineConfig(alloc={CAROL: 5}))
    chain = [engine.genesis]
    for i in range(8):
        chain.append(await extend(engine, chain[-1], [pay(ALICE, i + 1)]))
    below = await extend(engine, chain[2], [pay(BOB, 1)], commit=False)  # a fork below
    above = await extend(engine, chain[6], [pay(BOB, 2)], commit=False)  # a fork above
    for fork in (below, above):
        assert (await engine.new_payload(fork)).status is PayloadStatusKind.VALID
    await engine.forkchoice_updated(fc(chain[8].block_hash))  # building moved the head
    balances = engine.balances()
    with pytest.raises(ValueError, match="not the head or an ancestor"):
        engine.retain_from(above.block_hash)
    engine.retain_from(chain[5].block_hash)
    assert engine.anchor == chain[5]
    assert engine.block_by_hash(chain[4].block_hash) is None
    assert engine.block_by_hash(below.block_hash) is None
    assert engine.block_by_hash(above.block_hash) == above
    assert [engine.block_by_number(n) for n in range(5, 9)] == chain[5:]
    assert engine.block_by_number(4) is None and engine.block_by_number(9) is None
    assert engine.balances() == balances
    # a reorg onto the fork above the anchor, and back, still works
    await engine.forkchoice_updated(fc(above.block_hash, chain[5].block_hash))
    assert engine.head == above and engine.block_by_number(7) == above
    await engine.forkchoice_updated(fc(chain[8].block_hash, chain[5].block_hash))
    assert engine.balances() == balances
    # a payload on a forgotten block: its parent is unknown now
    orphan = attrs.evolve(below, block_number=4)
    assert (await engine.new_payload(orphan)).status is not PayloadStatusKind.VALID
    # the snapshot holds the anchor, its balances and the blocks after it, and restores
    restored = EmbeddedEngine.restore(engine.snapshot())
    assert restored.anchor == chain[5] and restored.head == chain[8]
    assert restored.balances() == balances
    assert restored.block_by_hash(above.block_hash) == above
    assert restored.snapshot() == engine.snapshot()


async def test_memory_and_snapshots_stay_flat_as_the_chain_grows() -> None:
    engine = EmbeddedEngine()
    head = engine.genesis
    sizes = []
    for height in range(1, 2001):
        head = await extend(engine, head, [pay(ALICE, 1)])
        if height % 100 == 0:  # the node moves the anchor with every finalization
            finalized = engine.block_by_number(height - 10)
            assert finalized is not None
            engine.retain_from(finalized.block_hash)
            sizes.append(len(engine.snapshot()))
            assert len(engine._blocks) == 11 and len(engine._canonical) == 11
    # about the same size at block 100 and block 2,000 (only the integers grow a byte)
    assert max(sizes) - min(sizes) < 64
    assert engine.balance_of(ALICE) == 2000 * GWEI


async def test_a_version_1_snapshot_still_restores() -> None:
    import cbor2

    engine, chain = await _busy_engine()
    doc = cbor2.loads(engine.snapshot())
    # version 1: the whole chain from genesis in "blocks", no anchor, no balances
    v1 = {k: v for k, v in doc.items() if k not in ("anchor", "balances")}
    v1["version"] = 1
    v1["blocks"] = [doc["anchor"], *doc["blocks"]]
    restored = EmbeddedEngine.restore(cbor2.dumps(v1, canonical=True))
    _same_state(engine, restored, chain)
