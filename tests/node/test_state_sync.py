"""The state download's rules (node.workflows.state_sync): a real py-evm state downloaded
whole and read back through py-evm, a trie with inline nodes, and hostile answers — wrong
hashes, truncated RLP, garbage that hashes right, deep nesting, duplicates."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import rlp
from eth.constants import BLANK_ROOT_HASH
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trie import HexaryTrie

from node.execution.embedded import EmbeddedEngine
from node.execution.rlpguard import RlpTooDeep, check_depth
from node.workflows import state_sync as ss
from node.workflows.state_sync import BadNode, Kind, Want

from .state_helpers import download, recipient, rich_state, slot_value


def nested(depth: int) -> bytes:
    """An RLP list nested ``depth`` deep: ``[[[...[]...]]]``."""
    data = b"\xc0"
    for _ in range(depth):
        n = len(data)
        if n < 56:
            data = bytes([0xC0 + n]) + data
        else:
            width = (n.bit_length() + 7) // 8
            data = bytes([0xF7 + width]) + n.to_bytes(width, "big") + data
    return data


def trie_of(keys: Sequence[bytes], value: bytes = b"\x01") -> tuple[bytes, dict[bytes, bytes]]:
    """A py-trie HexaryTrie holding ``keys`` (32 bytes each): its root and its nodes."""
    db: dict[bytes, bytes] = {}
    t = HexaryTrie(db)
    for k in keys:
        t[k] = value
    return t.root_hash, db


def source_of(nodes: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    return lambda hashes: [nodes.get(h, b"") for h in hashes]


async def test_a_real_state_downloads_whole_and_reads_back_through_py_evm() -> None:
    a = EmbeddedEngine()
    contract, _ = await rich_state(a, accounts=150, slots=80)
    head = a.head_header
    d, stored = download(head.state_root, a.state_values)
    assert d.done and d.accounts >= 150 + 1
    assert d.codes == 2  # the bridge, predeployed by the dev genesis, and the contract
    assert all(keccak(v) == k for k, v in stored.items())
    b = EmbeddedEngine()
    assert "incomplete" in (b.state_problem(head.state_root) or "")
    b.put_state_values(list(stored.items()))
    assert b.state_problem(head.state_root) is None
    state = b.state_at(head)
    assert state.state_root == head.state_root
    assert state.get_balance(recipient(7)) == 10**15 + 7
    assert state.get_balance(recipient(149)) == 10**15 + 149
    assert state.get_storage(contract, 1) == 7 and state.get_storage(contract, 2) == 9
    assert state.get_storage(contract, 1000 + 42) == slot_value(42)
    assert state.get_code(contract) == a.state_at(head).get_code(contract)
    # Nothing but the state was needed: no header, block or receipt.
    assert len(stored) == d.nodes + d.codes
    a.close()
    b.close()


def test_a_trie_with_extensions_and_inline_nodes_downloads_whole() -> None:
    # Keys sharing 62 nibbles: an extension, a branch, and leaves short enough to sit
    # inline in their parent branch (an encoding under 32 bytes).
    prefix = b"\x12" * 31
    keys = [prefix + bytes([b]) for b in (0x11, 0x12, 0x13, 0x21, 0x22, 0xF0)]
    root, nodes = trie_of(keys)
    d = ss.start(root, Kind.STORAGE)
    d, stored = _drive(d, source_of(nodes))
    assert d.done and set(stored) <= set(nodes)
    inline = [v for v in nodes.values() if len(v) >= 32 and any(
        isinstance(c, list) for c in rlp.decode(v) if isinstance(rlp.decode(v), list))]
    assert inline, "the trie should hold inline children"
    # Its own nodes, downloaded, make the same trie.
    copy = HexaryTrie(dict(stored), root)
    assert all(copy[k] == b"\x01" for k in keys)


def _drive(d: ss.StateDownload, source, batch: int = 8):  # type: ignore[no-untyped-def]
    stored: dict[bytes, bytes] = {}
    while not d.done:
        d, wants = ss.next_batch(d, batch)
        answer = ss.answered(d, wants, source([w.hash for w in wants]))
        stored.update(answer.store)
        d = answer.download
    return d, stored


def test_the_empty_state_wants_nothing_and_bad_starts_are_refused() -> None:
    assert ss.start(BLANK_ROOT_HASH).done
    for bad in (b"", b"\x00" * 31, "00" * 32, None, 5):
        with pytest.raises(ValueError, match="32 bytes"):
            ss.start(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not at code"):
        ss.start(b"\x01" * 32, Kind.CODE)
    d = ss.start(b"\x01" * 32)
    for limit in (0, -1, True, 1.5, "3"):
        with pytest.raises(ValueError, match="at least one"):
            ss.next_batch(d, limit)  # type: ignore[arg-type]
    d, batch = ss.next_batch(d, 5)
    assert len(batch) == 1 and d.out == 1 and not d.done
    with pytest.raises(ValueError, match="2 values for 1"):
        ss.answered(d, batch, [b"", b""])
    with pytest.raises(TypeError, match="not bytes"):
        ss.answered(d, batch, ["x"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="only 1 are out"):
        ss.failed(d, batch + batch)
    assert ss.failed(d, batch).wanted == batch


KEYS = [keccak(i.to_bytes(4, "big")) for i in range(300)]
ROOT, NODES = trie_of(KEYS, b"\x83abc")
ALL = sorted(NODES.items())
#: The nodes the trie reaches now (py-trie keeps those of its earlier versions too).
REACHABLE = _drive(ss.start(ROOT, Kind.STORAGE), source_of(NODES))[1]


@st.composite
def hostile_values(draw: st.DrawFn, hashes: Sequence[bytes]) -> list[bytes]:
    """An answer to ``hashes``: per position the right value, nothing, random bytes, the
    right value truncated or extended, another node's value; possibly cut short."""
    out = []
    for h in hashes:
        right = NODES[h]
        choice = draw(st.sampled_from(["right", "empty", "random", "truncated", "extended",
                                       "other"]))
        if choice == "right":
            out.append(right)
        elif choice == "empty":
            out.append(b"")
        elif choice == "random":
            out.append(draw(st.binary(min_size=1, max_size=600)))
        elif choice == "truncated":
            out.append(right[:draw(st.integers(1, len(right) - 1))])
        elif choice == "extended":
            out.append(right + draw(st.binary(min_size=1, max_size=8)))
        else:
            out.append(draw(st.sampled_from(ALL))[1])
    cut = draw(st.integers(0, len(out)))
    return out[:cut] if draw(st.booleans()) else out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 40))
def test_hostile_answers_never_store_a_wrong_value_and_never_lose_a_wanted_one(
        data: st.DataObject, batch_size: int) -> None:
    d = ss.start(ROOT, Kind.STORAGE)
    stored: dict[bytes, bytes] = {}
    rounds = 0
    while not d.done:
        rounds += 1
        assert rounds < 2000
        d, wants = ss.next_batch(d, batch_size)
        honest = rounds % 3 == 0  # every third round tells the truth: the download ends
        values = ([NODES[w.hash] for w in wants] if honest
                  else data.draw(hostile_values([w.hash for w in wants])))
        before = {w.hash for w in d.wanted}
        answer = ss.answered(d, wants, values)
        for h, v in answer.store:
            assert keccak(v) == h
        expected_wrong = [w.hash for w, v in zip(wants, values, strict=False)
                          if v and keccak(v) != w.hash]
        assert list(answer.wrong) == expected_wrong
        taken = {h for h, _ in answer.store}
        # Everything asked is either taken or wanted again; nothing wanted before is lost.
        after = {w.hash for w in answer.download.wanted}
        assert {w.hash for w in wants} - taken <= after
        assert before <= after
        assert answer.download.out == d.out - len(wants)
        stored.update(answer.store)
        d = answer.download
    assert stored == REACHABLE


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=700))
def test_garbage_that_hashes_right_is_a_bad_node_or_a_node_never_a_crash(value: bytes) -> None:
    for kind in (Kind.ACCOUNT, Kind.STORAGE):
        d, batch = ss.next_batch(ss.start(keccak(value), kind), 1)
        try:
            answer = ss.answered(d, batch, [value])
        except BadNode as exc:
            assert exc.want == batch[0] and "0x" + keccak(value).hex() in str(exc)
        else:
            assert answer.store == ((keccak(value), value),)


_RLP = st.recursive(
    st.binary(max_size=40) | st.sampled_from([b"", b"\x01" * 32, b"\x20", b"\x3a"]),
    lambda children: st.lists(children, max_size=18), max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(_RLP, st.integers(0, 70))
def test_structured_garbage_at_any_depth_is_refused_with_a_reason(item: object,
                                                                    depth: int) -> None:
    value = rlp.encode(item)
    want = Want(keccak(value), Kind.ACCOUNT, depth)
    try:
        children, leaves = ss.node_children(value, want)
    except BadNode as exc:
        assert exc.problem
    else:
        assert isinstance(item, list) and len(item) in (2, 17)
        assert all(c.depth > depth or c.kind is not Kind.ACCOUNT for c in children)
        assert all(len(c.hash) == 32 for c in children) and leaves >= 0


@pytest.mark.parametrize("depth", [20, 1000, 40_000])
def test_deeply_nested_rlp_is_refused_before_the_decoder_sees_it(depth: int) -> None:
    # rusty-rlp recurses per level and overflows the stack (a segfault) at ~35,000.
    value = nested(depth)
    d, batch = ss.next_batch(ss.start(keccak(value)), 1)
    with pytest.raises(BadNode, match="nested more than"):
        ss.answered(d, batch, [value])
    with pytest.raises(RlpTooDeep):
        check_depth(value, 16)


def test_nodes_that_break_the_trie_rules_name_the_fault() -> None:
    h = b"\x11" * 32

    def problem(node: object, depth: int = 0, kind: Kind = Kind.STORAGE) -> str:
        value = rlp.encode(node)
        with pytest.raises(BadNode) as info:
            ss.node_children(value, Want(keccak(value), kind, depth))
        return info.value.problem

    assert "holds a value" in problem([b""] * 16 + [b"\x01"])
    assert "2 or 17 items" in problem([h, h, h])
    assert "keys end at 64" in problem([h] * 16 + [b""], depth=64)
    assert "ends at nibble 3" in problem([b"\x20\x12", b"\x01"], depth=1)
    assert "hex-prefix flag 4" in problem([b"\x40", h])
    assert "padding nibble" in problem([b"\x05", h])
    assert "empty path" in problem([b"\x00", h])
    assert "is 5 bytes" in problem([b"\x11", b"\x01" * 5])
    assert "32 bytes or more" in problem([b"\x11", [b"\x20" + b"\x00" * 31, b"\x01" * 4]],
                                         depth=1)
    assert "account is 4 strings" in problem([b"\x20" + b"\x00" * 32, rlp.encode([b"\x01"])],
                                             kind=Kind.ACCOUNT)
    assert "canonical 256-bit" in problem(
        [b"\x20" + b"\x00" * 32, rlp.encode([b"\x00\x01", b"", h, h])], kind=Kind.ACCOUNT)
    assert "without a value" in problem([b"\x20" + b"\x00" * 32, b""])


def test_an_account_leaf_wants_its_storage_and_code_unless_empty() -> None:
    from eth.constants import EMPTY_SHA3

    storage, code = b"\x22" * 32, b"\x33" * 32
    leaf = rlp.encode([b"\x20" + b"\x00" * 32, rlp.encode([b"\x01", b"\x05", storage, code])])
    children, leaves = ss.node_children(leaf, Want(keccak(leaf), Kind.ACCOUNT))
    assert leaves == 1
    assert children == [Want(storage, Kind.STORAGE), Want(code, Kind.CODE)]
    empty = rlp.encode([b"\x20" + b"\x00" * 32,
                        rlp.encode([b"", b"", BLANK_ROOT_HASH, EMPTY_SHA3])])
    assert ss.node_children(empty, Want(keccak(empty), Kind.ACCOUNT)) == ([], 1)
    # A storage leaf's value is not an account.
    assert ss.node_children(leaf, Want(keccak(leaf), Kind.STORAGE)) == ([], 0)


def test_duplicate_references_are_each_wanted_and_each_answered() -> None:
    leaf = rlp.encode([b"\x3a" + b"\x00" * 31, b"\x01" * 40])  # a leaf at depth 1
    branch = rlp.encode([keccak(leaf)] * 16 + [b""])
    nodes = {keccak(branch): branch, keccak(leaf): leaf}
    d, stored = _drive(ss.start(keccak(branch), Kind.STORAGE), source_of(nodes), batch=4)
    assert d.done and d.nodes == 17 and stored == nodes


def test_a_value_for_another_hash_is_wrong_and_asked_again() -> None:
    d, batch = ss.next_batch(ss.start(ROOT, Kind.STORAGE), 1)
    other = next(v for k, v in NODES.items() if k != ROOT)
    answer = ss.answered(d, batch, [other])
    assert answer.wrong == (ROOT,) and answer.store == () and answer.missing == 0
    assert answer.download.wanted == batch and answer.download.out == 0


def test_a_deeply_nested_transaction_is_refused_not_a_crash() -> None:
    # Under the transaction size limit (128 KiB) and past rusty-rlp's stack (~35,000 levels):
    # before the guard, eth_sendRawTransaction or a block's transaction killed the process.
    from node.execution.txpool import MAX_TX_SIZE, TxRejected, decode_transaction

    raw = nested(36_000)
    assert len(raw) < MAX_TX_SIZE
    with pytest.raises(TxRejected, match="nested more than 64"):
        decode_transaction(raw)
    with pytest.raises(TxRejected, match="nested more than 64"):
        decode_transaction(b"\x02" + raw)
