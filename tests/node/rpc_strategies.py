"""Hypothesis strategies for hostile JSON-RPC input, and a model of what the edge must answer.

The values are what an attacker (or a careless client) sends: integers past 2^64 and negative
ones, floats including NaN and the infinities, strings that are almost hex (odd length, a
space, full-width digits, one byte short), booleans where numbers go, nested arrays and
objects at every position. Bodies are built from such requests, then damaged: truncated,
with invalid UTF-8 spliced in, with numbers no double holds (``1e400``), with integer
literals of hundreds of digits, nested thousands deep.
"""

from __future__ import annotations

import json
import math
import string
import sys
from typing import Any

from hypothesis import strategies as st

from node.jsondepth import MAX_DEPTH
from node.rpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_HEIGHT,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

HEX = set(string.hexdigits)

#: Integers around every boundary that matters, and far past them.
hostile_ints = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, MAX_HEIGHT, MAX_HEIGHT + 1, 2**63, 2**64 + 1, 10**30]),
    st.integers(min_value=MAX_HEIGHT + 1, max_value=10**99),
    st.integers(min_value=-(10**99), max_value=-1),
)


def _hexish(draw: Any) -> str:
    raw = draw(st.binary(min_size=0, max_size=40))
    text = raw.hex()
    text = draw(st.sampled_from([text, text.upper(), "0x" + text, "0X" + text]))
    damage = draw(st.sampled_from(["none", "none", "odd", "space", "wide", "letter"]))
    if damage == "odd" and text:
        text = text[:-1]
    elif damage == "space":
        text = text[: len(text) // 2] + " " + text[len(text) // 2:]
    elif damage == "wide":
        text = text.replace("0", "\uff10")  # a full-width zero: a digit to Unicode, not hex
    elif damage == "letter":
        text = text + "zz"
    return text


hexish = st.composite(lambda draw: _hexish(draw))()
hashes = st.binary(min_size=32, max_size=32).map(lambda b: b.hex())

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    hostile_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=70),
    hexish,
    hashes,
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
)

json_values = st.recursive(
    hostile_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8,
)


def requests(methods: list[str]) -> st.SearchStrategy[Any]:
    """Request objects: mostly the right shape with hostile values in it, sometimes not an
    object at all. Keys are often missing; ``params`` is often a list, sometimes bare."""
    method = st.one_of(st.sampled_from(methods), json_values)
    params = st.one_of(st.lists(json_values, max_size=4), json_values)
    request = st.fixed_dictionaries(
        {},
        optional={"method": method, "params": params, "id": json_values,
                  "jsonrpc": st.just("2.0")},
    )
    return st.one_of(request, request, request, json_values)


def _damage(draw: Any, body: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "none", "truncate", "utf8", "1e400", "digits",
                                "deep", "nan"]))
    at = draw(st.integers(min_value=0, max_value=len(body)))
    if how == "truncate":
        return body[:at]
    if how == "utf8":
        return body[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80",
                                                 b"\xf8\x88\x80\x80\x80"])) + body[at:]
    value = {
        "1e400": b"1e400",
        "digits": b"9" * draw(st.integers(min_value=101, max_value=5000)),
        "deep": b"[" * (n := draw(st.integers(min_value=900, max_value=20_000))) + b"]" * n,
        "nan": draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])),
    }.get(how)
    if value is None:
        return body
    slot = draw(st.sampled_from([b'"id"', b'"params"']))
    return b'{"method": "getheadblock", ' + slot + b": " + value + b"}"


def bodies(methods: list[str]) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: Any) -> bytes:
        body = json.dumps(draw(requests(methods)), allow_nan=True).encode()
        return _damage(draw, body)

    return st.one_of(build(), st.binary(max_size=120))


# -- the model --------------------------------------------------------------------------------


def strict_loads(raw: bytes) -> Any:
    """Parse a response as strict JSON: NaN and the infinities are refused."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a response: {raw[:200]!r}")

    return json.loads(raw.decode("ascii"), parse_constant=refuse)


def _hex_ok(value: Any, size: int | None) -> bool:
    if not isinstance(value, str):
        return False
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) % 2 or not set(text) <= HEX:
        return False
    return size is None or len(text) == 2 * size


KINDS = {
    "u64": lambda v: type(v) is int and 0 <= v <= MAX_HEIGHT,
    "hash32": lambda v: _hex_ok(v, 32),
    "address": lambda v: _hex_ok(v, 20),
    "hex": lambda v: _hex_ok(v, None),
}


def params_ok(spec: list[tuple[str, bool]], bare: bool, params: Any) -> bool:
    """Whether ``params`` binds to a method whose parameters are ``spec`` ((kind, optional)
    pairs): the rules of ``node.rpc.Method.bind``, stated independently."""
    if params is None:
        values: list[Any] = []
    elif isinstance(params, list):
        values = params
    elif bare and not isinstance(params, dict):
        values = [params]
    else:
        return False
    if len(values) > len(spec):
        return False
    for i, (kind, optional) in enumerate(spec):
        value = values[i] if i < len(values) else None
        if value is None:
            if not optional:
                return False
        elif not KINDS[kind](value):
            return False
    return True


#: A method's parameters for the model: [(kind, optional)], and whether it takes them bare.
Specs = dict[str, tuple[list[tuple[str, bool]], bool]]


def _too_big(value: Any) -> bool:
    """Whether a value Python's lenient parser produced holds something strict JSON parsing
    refuses: a non-finite number, or an integer of more than 100 digits (walked without
    recursion: the value may be nested hundreds deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if type(item) is int and abs(item) >= 10**100:
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed value (iteratively: no recursion)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            level += 1
            deepest = max(deepest, level)
            stack.extend((x, level) for x in (item.values() if isinstance(item, dict)
                                               else item))
    return deepest


def expected(body: bytes, specs: Specs) -> tuple[int, Any]:
    """(the error code the edge must answer, or 0 if the request reaches its handler; the id
    it must echo), stated from the documented rules."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, 3000))  # py_ecc, once imported, has it at 100,000
    try:
        request = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return PARSE_ERROR, None
    finally:
        sys.setrecursionlimit(limit)
    if _depth(request) > MAX_DEPTH:  # the limit is checked before parsing (node.jsondepth)
        return PARSE_ERROR, None
    if _too_big(request):
        return PARSE_ERROR, None
    if not isinstance(request, dict):
        return INVALID_REQUEST, None
    rid = request.get("id")
    if isinstance(rid, (list, dict)):
        return INVALID_REQUEST, None
    method = request.get("method")
    if not isinstance(method, str):
        return INVALID_REQUEST, rid
    if method not in specs:
        return METHOD_NOT_FOUND, rid
    spec, bare = specs[method]
    if not params_ok(spec, bare, request.get("params")):
        return INVALID_PARAMS, rid
    return 0, rid
