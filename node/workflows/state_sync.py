"""State download as plain rules: which trie nodes and code are still wanted under a state
root, what an answer is worth, and when the state is whole.

The EVM's state at a block is a tree of values stored under their keccak256 hash (Ethereum's
Merkle Patricia tries, as py-evm keeps them): the *account trie* under the header's state
root, one *storage trie* per contract under its account's storage root, and each contract's
*code* under its code hash. Knowing the root from a header whose hash the consensus has
verified, every other byte can be fetched from anyone and checked: a value is taken only if
it hashes to the hash it was asked for, and its children's hashes come out of it.

A download (:class:`StateDownload`, a frozen value) holds what is still wanted, each
:class:`Want` with its kind (account trie node, storage trie node, code) and its depth in
nibbles from the root of its trie. :func:`next_batch` hands out wanted hashes to ask for,
:func:`answered` takes the values that came back for a batch (positionally; an empty value,
or one the answer left out, is *missing*) and returns an :class:`Answer`: the next download,
the verified ``(hash, value)`` pairs to store, and the hashes whose value did not hash right
(``wrong``: the peer's fault — report it). Missing and wrong ones are wanted again;
:func:`failed` gives back a whole batch that got no answer. The download is :attr:`done`
when nothing is wanted or out.

Decoding a trie node (:func:`node_children`): RLP, a list of 17 items (a branch: 16 child
references and a value, always empty here since every key of these tries is 32 bytes) or of
2 (an extension or a leaf, told apart by the hex-prefix flag of its path). A child reference
is empty (no child), a 32-byte hash (a node stored under that hash: wanted), or — when the
child's own encoding is shorter than 32 bytes — the child node itself, embedded inline and
decoded in place. A leaf's path must end exactly at 64 nibbles (a 32-byte key). A leaf of the
account trie holds an account (py-evm's ``Account``: nonce, balance, storage root, code
hash): its storage root (unless the empty trie's root) and code hash (unless the empty
code's hash) become wanted too. A node that hashes right but does not decode as such a node
is not a peer's lie — the tree under the root is not a state — and raises :class:`BadNode`.

Termination: a download wants finitely many values whatever the peers send, since values
are only taken when they hash right (a node cannot refer to itself or to an ancestor: that
would take a keccak fixed point) and depth grows by at least one nibble per level, up to 64;
storage tries and code refer to nothing further.

Order and memory: wanted hashes are a stack (depth first), so what is wanted at once stays
bounded by the tries' depth times the batch size, whatever the size of the state.

Resuming: a download that was interrupted starts again from the root. The caller looks every
batch up in its own store first (values stored by an earlier run, or by the execution of
earlier blocks) and asks a peer only for what it lacks; local values are answers like any
other, so subtrees already present are walked locally, never fetched again. The same walk
with the store as the only source checks that a state is whole (``missing`` from a local
answer means it is not).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Final

import attrs
import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
from eth_hash.auto import keccak

from node.execution.rlpguard import RlpTooDeep, check_depth

__all__ = [
    "KEY_NIBBLES",
    "Answer",
    "BadNode",
    "Kind",
    "StateDownload",
    "Want",
    "answered",
    "failed",
    "next_batch",
    "node_children",
    "start",
]

#: Nibbles in a key of the account and storage tries (keccak hashes: 32 bytes).
KEY_NIBBLES: Final = 64
#: An RLP trie node nests at most this deep: a node, an inline child, its inline child...
#: (inline children are shorter than 32 bytes, so they cannot nest much).
_MAX_NODE_DEPTH: Final = 16


class Kind(enum.Enum):
    """What a wanted hash names."""

    ACCOUNT = "account trie node"
    STORAGE = "storage trie node"
    CODE = "code"


@attrs.frozen
class Want:
    """A value wanted under ``hash``: a ``kind``, ``depth`` nibbles below its trie's root
    (0 for roots and code)."""

    hash: bytes
    kind: Kind
    depth: int = 0


class BadNode(ValueError):
    """A value that hashes to the hash asked for but is not what the tree needs there: the
    state under the root is malformed (no peer can fix it). Names the hash and the fault."""

    def __init__(self, want: Want, problem: str) -> None:
        super().__init__(f"{want.kind.value} 0x{want.hash.hex()} (depth {want.depth}): "
                         f"{problem}")
        self.want = want
        self.problem = problem


@attrs.frozen
class StateDownload:
    """The download of the state under ``root``: ``wanted`` (a stack: the end is asked for
    first), ``out`` (hashes handed out by :func:`next_batch`, not yet answered), and counts
    of what was taken so far."""

    root: bytes
    wanted: tuple[Want, ...] = ()
    out: int = 0
    nodes: int = 0
    codes: int = 0
    accounts: int = 0
    bytes: int = 0

    @property
    def done(self) -> bool:
        """Nothing wanted, nothing out: the whole state was taken."""
        return not self.wanted and self.out == 0


@attrs.frozen
class Answer:
    """What an answer gave: the ``download`` after it, the verified values to ``store``
    (hash, value), the hashes whose value did not hash to them (``wrong``: the sender's
    fault), and how many were ``missing`` (empty, or left out)."""

    download: StateDownload
    store: tuple[tuple[bytes, bytes], ...]
    wrong: tuple[bytes, ...]
    missing: int


def start(root: bytes, kind: Kind = Kind.ACCOUNT) -> StateDownload:
    """A download of the state under ``root`` (32 bytes): an account trie's root, by
    default, with everything its accounts refer to; or the root of one storage trie
    (``Kind.STORAGE``). The empty trie's root wants nothing."""
    if not isinstance(root, bytes) or len(root) != 32:
        raise ValueError(f"a state root is 32 bytes, not {root!r:.80}")
    if kind is Kind.CODE:
        raise ValueError("a download starts at a trie's root, not at code")
    if root == BLANK_ROOT_HASH:
        return StateDownload(root)
    return StateDownload(root, (Want(root, kind),))


def next_batch(download: StateDownload, limit: int) -> tuple[StateDownload, tuple[Want, ...]]:
    """Up to ``limit`` (>= 1) wanted values to ask for, and the download with them out."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a batch holds at least one hash, not {limit!r}")
    wanted = download.wanted
    take = min(limit, len(wanted))
    if take == 0:
        return download, ()
    batch = wanted[len(wanted) - take:]
    return attrs.evolve(download, wanted=wanted[:len(wanted) - take],
                        out=download.out + take), batch


def failed(download: StateDownload, batch: Sequence[Want]) -> StateDownload:
    """``batch`` got no answer: all of it is wanted again."""
    return attrs.evolve(download, wanted=download.wanted + tuple(batch),
                        out=_less_out(download, batch))


def _less_out(download: StateDownload, batch: Sequence[Want]) -> int:
    if len(batch) > download.out:
        raise ValueError(f"{len(batch)} hashes given back, only {download.out} are out")
    return download.out - len(batch)


def answered(download: StateDownload, batch: Sequence[Want],
             values: Sequence[bytes]) -> Answer:
    """Take ``values``, the answer to ``batch`` (position i answers ``batch[i]``; fewer
    values than hashes leave the rest missing; more is an error of the caller, who checks
    the answer's shape first). Raises :class:`BadNode` for a value that hashes right but is
    not a node of its trie (see the module docstring)."""
    if len(values) > len(batch):
        raise ValueError(f"{len(values)} values for {len(batch)} hashes")
    out = _less_out(download, batch)
    again: list[Want] = []
    found: list[Want] = []
    store: list[tuple[bytes, bytes]] = []
    wrong: list[bytes] = []
    missing = 0
    nodes = codes = accounts = size = 0
    for i, want in enumerate(batch):
        value = values[i] if i < len(values) else b""
        if not isinstance(value, bytes):
            raise TypeError(f"value {i} is {type(value).__name__}, not bytes")
        if not value:
            missing += 1
            again.append(want)
            continue
        if keccak(value) != want.hash:
            wrong.append(want.hash)
            again.append(want)
            continue
        if want.kind is Kind.CODE:
            codes += 1
        else:
            children, leaves = node_children(value, want)
            found.extend(children)
            accounts += leaves
            nodes += 1
        size += len(value)
        store.append((want.hash, value))
    # Children go on top of the stack (depth first); what must be asked again goes under
    # them, so a peer that lacks something is not asked for it again at once.
    wanted = tuple(again) + download.wanted + tuple(reversed(found))
    return Answer(
        attrs.evolve(download, wanted=wanted, out=out, nodes=download.nodes + nodes,
                     codes=download.codes + codes, accounts=download.accounts + accounts,
                     bytes=download.bytes + size),
        tuple(store), tuple(wrong), missing)


def node_children(value: bytes, want: Want) -> tuple[list[Want], int]:
    """The hashes a trie node (``value``, which hashed to ``want.hash``) refers to, and how
    many account leaves it holds (inline children included). :class:`BadNode` if it is not
    a node of its kind of trie at its depth."""
    try:
        check_depth(value, _MAX_NODE_DEPTH)
        node = rlp.decode(value, strict=True)
    except (RlpTooDeep, rlp.exceptions.DecodingError) as exc:
        raise BadNode(want, f"not RLP: {exc}") from None
    out: list[Want] = []
    leaves = _walk(node, want, want.depth, out)
    return out, leaves


def _walk(node: Any, want: Want, depth: int, out: list[Want]) -> int:
    """Add the hashes ``node`` (decoded RLP, ``depth`` nibbles below the trie's root) refers
    to; returns its account leaves."""
    if not isinstance(node, list):
        raise BadNode(want, f"at depth {depth}: a node is a list, not {type(node).__name__}")
    if len(node) == 17:
        if depth >= KEY_NIBBLES:
            raise BadNode(want, f"a branch at depth {depth}: keys end at {KEY_NIBBLES}")
        if node[16] != b"":
            raise BadNode(want, f"a branch at depth {depth} holds a value: every key of "
                          "this trie is 32 bytes, values are in leaves")
        leaves = 0
        for child in node[:16]:
            leaves += _reference(child, want, depth + 1, out)
        return leaves
    if len(node) != 2:
        raise BadNode(want, f"at depth {depth}: a node has 2 or 17 items, not {len(node)}")
    path, rest = node
    if not isinstance(path, bytes):
        raise BadNode(want, f"at depth {depth}: a node's path is bytes, not a list")
    nibbles, leaf = _hex_prefix(path, want, depth)
    end = depth + nibbles
    if leaf:
        if end != KEY_NIBBLES:
            raise BadNode(want, f"a leaf at depth {depth} whose key ends at nibble {end}, "
                          f"not {KEY_NIBBLES}")
        if not isinstance(rest, bytes) or not rest:
            raise BadNode(want, f"a leaf at depth {depth} without a value")
        if want.kind is Kind.ACCOUNT:
            _account(rest, want, out)
            return 1
        return 0
    if not nibbles:
        raise BadNode(want, f"an extension at depth {depth} with an empty path")
    if end >= KEY_NIBBLES:
        raise BadNode(want, f"an extension at depth {depth} reaching nibble {end}")
    if rest == b"":
        raise BadNode(want, f"an extension at depth {depth} without a child")
    return _reference(rest, want, end, out)


def _reference(child: Any, want: Want, depth: int, out: list[Want]) -> int:
    if isinstance(child, bytes):
        if child == b"":
            return 0
        if len(child) != 32:
            raise BadNode(want, f"a child reference at depth {depth} is {len(child)} bytes: "
                          "a hash is 32")
        out.append(Want(child, want.kind, depth))
        return 0
    # Inline: a node shorter than 32 bytes encoded, embedded in its parent.
    if len(rlp.encode(child)) >= 32:
        raise BadNode(want, f"an inline node at depth {depth} of 32 bytes or more: it should "
                      "be referred to by its hash")
    return _walk(child, want, depth, out)


def _hex_prefix(path: bytes, want: Want, depth: int) -> tuple[int, bool]:
    """A node's path in the hex-prefix encoding: how many nibbles it has (what the walk
    needs of it: where the path ends) and whether it is a leaf's."""
    if not path:
        raise BadNode(want, f"at depth {depth}: an empty hex-prefix path")
    flag = path[0] >> 4
    if flag > 3:
        raise BadNode(want, f"at depth {depth}: hex-prefix flag {flag} (0..3 allowed)")
    odd = flag & 1
    if not odd and path[0] & 0x0F:
        raise BadNode(want, f"at depth {depth}: an even hex-prefix path with padding "
                      f"nibble {path[0] & 0x0F}")
    return 2 * (len(path) - 1) + odd, flag >= 2


def _account(value: bytes, want: Want, out: list[Want]) -> None:
    """An account leaf's value: its storage root and code hash become wanted."""
    try:
        check_depth(value, 2)
        fields = rlp.decode(value, strict=True)
    except (RlpTooDeep, rlp.exceptions.DecodingError) as exc:
        raise BadNode(want, f"an account that is not RLP: {exc}") from None
    if (not isinstance(fields, list) or len(fields) != 4
            or not all(isinstance(x, bytes) for x in fields)):
        raise BadNode(want, "an account is 4 strings: nonce, balance, storage root, code hash")
    nonce, balance, storage_root, code_hash = fields
    for name, number in (("nonce", nonce), ("balance", balance)):
        if len(number) > 32 or number[:1] == b"\x00":
            raise BadNode(want, f"an account's {name} is not a canonical 256-bit integer")
    if len(storage_root) != 32 or len(code_hash) != 32:
        raise BadNode(want, "an account's storage root and code hash are 32 bytes")
    if storage_root != BLANK_ROOT_HASH:
        out.append(Want(storage_root, Kind.STORAGE))
    if code_hash != EMPTY_SHA3:
        out.append(Want(code_hash, Kind.CODE))
