"""How deep a JSON text nests, checked before it is parsed.

Python's ``json`` parser recurses once per nested array or object, in C, and stops at the
interpreter's recursion limit with ``RecursionError``. That limit is not ours to rely on:
importing ``py_ecc`` — which ``eth-account``, ``web3`` and ``py-evm`` do — raises it to
100,000, and a body nested that deep then overflows the C stack and kills the process
instead of raising. So text from outside (RPC requests, execution clients' answers) is
checked here first, against a fixed limit.

The check costs two ``str.count`` calls for ordinary text: only text with more opening
brackets than the limit is walked, token by token (brackets and whole strings, each found
by a regular expression that never backtracks: linear in the text).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_DEPTH", "too_deep"]

#: Deeper than any JSON-RPC request or answer needs (execution-apis objects nest < 10).
MAX_DEPTH: Final = 256
_TOKEN: Final = re.compile(r'["\[\]{}]')
#: The rest of a string after its opening quote, through its closing quote.
_STRING_REST: Final = re.compile(r'(?:[^"\\]|\\.)*"', re.DOTALL)


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``text`` nests arrays and objects more than ``limit`` deep (brackets inside
    strings do not count). Text that is not JSON is not judged: the parser will say."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    at = 0
    while (token := _TOKEN.search(text, at)) is not None:
        at = token.end()
        char = token.group()
        if char == '"':
            rest = _STRING_REST.match(text, at)
            if rest is None:
                return False  # an unterminated string: not JSON
            at = rest.end()
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
