"""A guard to run before decoding untrusted RLP: how deeply its lists nest.

``rlp.decode`` hands the bytes to ``rusty-rlp``, which recurses once per nested list: about
35,000 levels (118 KB of ``0xc1``-style prefixes, under the transaction size limit) overflow
its stack and kill the whole process with a segmentation fault — no exception to catch.
:func:`check_depth` walks the item headers without recursing and refuses anything nested
deeper than the caller allows, before ``rlp.decode`` sees it. It does not check the encoding
otherwise (lengths past the end simply end the walk): ``rlp.decode`` does that afterwards.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DEPTH", "RlpTooDeep", "check_depth"]

#: Nesting allowed by default: far above anything Ethereum encodes (a typed transaction's
#: access list is 3 deep inside the transaction's list), far below what overflows a stack.
MAX_DEPTH: Final = 64


class RlpTooDeep(ValueError):
    """RLP lists nested deeper than allowed."""


def check_depth(data: bytes, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`RlpTooDeep` if ``data``'s lists nest deeper than ``limit``. Linear in
    the number of list headers; strings are skipped whole, never looked into."""
    ends: list[int] = []
    pos = 0
    size = len(data)
    while pos < size:
        while ends and pos >= ends[-1]:
            ends.pop()
        first = data[pos]
        if first < 0x80:
            pos += 1
        elif first <= 0xB7:
            pos += 1 + first - 0x80
        elif first <= 0xBF:
            width = first - 0xB7
            pos += 1 + width + int.from_bytes(data[pos + 1:pos + 1 + width], "big")
        else:
            if first <= 0xF7:
                pos += 1
                end = pos + first - 0xC0
            else:
                width = first - 0xF7
                length = int.from_bytes(data[pos + 1:pos + 1 + width], "big")
                pos += 1 + width
                end = pos + length
            ends.append(end)
            if len(ends) > limit:
                raise RlpTooDeep(f"RLP lists nested more than {limit} deep (at byte {pos})")
