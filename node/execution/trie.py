"""The root of Ethereum's ordered tries (a block's transactions, receipts, withdrawals).

A block's transactions root is the root of the Merkle-Patricia trie (Yellow Paper, appendix D)
that maps ``rlp(i)`` to the encoding of item ``i``. py-evm builds such a trie by inserting
the items one at a time into a ``HexaryTrie`` and keeps its nodes; a block needs only the
root, and its items arrive all at once, sorted by key, so :func:`ordered_trie_root` builds the
trie bottom-up in one pass over the sorted keys, without storing a node: several times faster
for the thousand transactions of a full block. ``tests/node/test_trie.py`` checks it against
``HexaryTrie`` on random inputs.

Nodes, for a set of (nibble path, value) pairs sharing a prefix already consumed:

* one pair: a leaf ``[hex_prefix(rest, leaf), value]``;
* several with a common prefix: an extension ``[hex_prefix(prefix, extension), child]``;
* otherwise a branch of 16 children by the next nibble, and the value of the pair whose
  path ends here (or empty).

A child is referenced by its RLP when that is shorter than 32 bytes, else by its keccak; the
root is always the keccak of its RLP (the empty trie's is ``keccak(rlp(b""))``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import rlp
from eth_hash.auto import keccak

__all__ = ["BLANK_ROOT", "ordered_trie_root"]

BLANK_ROOT: Final = keccak(rlp.encode(b""))


def _nibbles(key: bytes) -> tuple[int, ...]:
    out: list[int] = []
    for byte in key:
        out += (byte >> 4, byte & 15)
    return tuple(out)


def _hex_prefix(nibbles: Sequence[int], leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        packed = [(flag + 1) << 4 | nibbles[0]]
        rest = nibbles[1:]
    else:
        packed = [flag << 4]
        rest = nibbles
    packed += [rest[i] << 4 | rest[i + 1] for i in range(0, len(rest), 2)]
    return bytes(packed)


def _reference(node: Any) -> Any:
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else keccak(encoded)


def _common_prefix(pairs: Sequence[tuple[tuple[int, ...], bytes]], depth: int) -> int:
    first, last = pairs[0][0], pairs[-1][0]  # sorted: the first and last bound the others
    length = 0
    limit = min(len(first), len(last)) - depth
    while length < limit and first[depth + length] == last[depth + length]:
        length += 1
    return length


def _node(pairs: Sequence[tuple[tuple[int, ...], bytes]], depth: int) -> Any:
    if len(pairs) == 1:
        path, value = pairs[0]
        return [_hex_prefix(path[depth:], True), value]
    shared = _common_prefix(pairs, depth)
    if shared:
        child = _node(pairs, depth + shared)
        return [_hex_prefix(pairs[0][0][depth:depth + shared], False), _reference(child)]
    branch: list[Any] = [b""] * 17
    start = 0
    if len(pairs[0][0]) == depth:  # a path that ends here: the branch's value
        branch[16] = pairs[0][1]
        start = 1
    i = start
    while i < len(pairs):
        nibble = pairs[i][0][depth]
        j = i
        while j < len(pairs) and pairs[j][0][depth] == nibble:
            j += 1
        branch[nibble] = _reference(_node(pairs[i:j], depth + 1))
        i = j
    return branch


def ordered_trie_root(items: Sequence[bytes]) -> bytes:
    """The root of the trie mapping ``rlp(i)`` to ``items[i]``."""
    if not items:
        return BLANK_ROOT
    pairs = sorted((_nibbles(rlp.encode(i)), value) for i, value in enumerate(items))
    return keccak(rlp.encode(_node(pairs, 0)))
