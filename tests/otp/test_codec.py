"""Tests for otp.codec: canonical CBOR for attrs message types."""

from __future__ import annotations

import copy
import enum
from typing import Any

import attrs
import cattrs
import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otp import codec

# ------------------------------------------------------------------ message types


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class Inner:
    data: bytes
    n: int


@codec.register(tag="test_codec.Ping")
@attrs.frozen
class Ping:
    seq: int


@codec.register(tag="test_codec.Pong")
@attrs.frozen
class Pong:
    seq: int


@codec.register(tag="test_codec.Block")
@attrs.frozen
class Block:
    name: str
    inner: Inner
    items: tuple[Inner, ...]
    parent: Inner | None
    color: Color
    priority: Priority
    height: int
    labels: frozenset[str]
    index: dict[str, list[int]]
    pair: tuple[int, bytes]
    reply: Ping | Pong | None = None
    payload: Any = None


@codec.register
@attrs.define
class Envelope:
    to: str
    body: Block
    trace: list[Ping] = attrs.Factory(list)


@attrs.frozen
class Unregistered:
    x: int
    y: str


PING_TAG = "test_codec.Ping"

# -------------------------------------------------------------------- strategies

big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.sampled_from([2**64, 2**64 - 1, -(2**64), -(2**64) - 1, 2**1000]),
)
keys = st.one_of(st.text(max_size=8), st.integers(), st.binary(max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(allow_nan=False),
    st.text(max_size=16),
    st.binary(max_size=16),
)
plain = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)
inners = st.builds(Inner, data=st.binary(max_size=16), n=big_ints)
pings = st.builds(Ping, seq=big_ints)
pongs = st.builds(Pong, seq=big_ints)
# Values of an ``Any`` field: plain data, possibly containing registered messages.
terms = st.recursive(
    st.one_of(scalars, pings, pongs),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
    ),
    max_leaves=8,
)
blocks = st.builds(
    Block,
    name=st.text(max_size=16),
    inner=inners,
    items=st.lists(inners, max_size=3).map(tuple),
    parent=st.none() | inners,
    color=st.sampled_from(Color),
    priority=st.sampled_from(Priority),
    height=big_ints,
    labels=st.frozensets(st.text(max_size=6), max_size=4),
    index=st.dictionaries(st.text(max_size=6), st.lists(big_ints, max_size=3), max_size=3),
    pair=st.tuples(big_ints, st.binary(max_size=8)),
    reply=st.none() | pings | pongs,
    payload=terms,
)
envelopes = st.builds(
    Envelope, to=st.text(max_size=8), body=blocks, trace=st.lists(pings, max_size=3)
)
messages = st.one_of(pings, blocks, envelopes)

fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raw(obj: Any) -> Any:
    """Plain decoding of encoded bytes, bypassing the codec."""
    return cbor2.loads(codec.encode(obj))


def _block(**changes: Any) -> Block:
    base = Block(
        name="b",
        inner=Inner(b"\x00\x01", 7),
        items=(Inner(b"", 1), Inner(b"x", 2)),
        parent=None,
        color=Color.GREEN,
        priority=Priority.HIGH,
        height=2**100,
        labels=frozenset({"z", "a", "m"}),
        index={"k": [1, 2], "a": []},
        pair=(3, b"\xff"),
        reply=Pong(9),
        payload=[Ping(1), {"nested": Pong(2)}, b"raw", None],
    )
    return attrs.evolve(base, **changes)


# -------------------------------------------------------------------- round trips


@fast
@given(messages)
def test_registered_round_trip_without_cls(msg: Any) -> None:
    assert codec.decode(codec.encode(msg)) == msg


@fast
@given(messages)
def test_registered_round_trip_with_cls(msg: Any) -> None:
    assert codec.decode(codec.encode(msg), type(msg)) == msg


@fast
@given(messages)
def test_bare_form_round_trip_with_cls(msg: Any) -> None:
    bare = cbor2.dumps(codec.converter.unstructure(msg, type(msg)), canonical=True)
    assert codec.decode(bare, type(msg)) == msg


@fast
@given(plain)
def test_plain_values_round_trip(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value


@fast
@given(st.lists(messages, max_size=3))
def test_list_of_messages_round_trip(msgs: list[Any]) -> None:
    data = codec.encode(msgs)
    assert codec.decode(data) == msgs
    assert codec.decode(codec.encode([m for m in msgs if type(m) is Ping]), list[Ping]) == [
        m for m in msgs if type(m) is Ping
    ]


def test_unregistered_attrs_encodes_bare_and_needs_cls() -> None:
    value = Unregistered(1, "y")
    assert _raw(value) == {"x": 1, "y": "y"}
    assert codec.decode(codec.encode(value)) == {"x": 1, "y": "y"}
    assert codec.decode(codec.encode(value), Unregistered) == value


def test_tuples_decode_as_lists_without_cls_and_tuples_with_cls() -> None:
    data = codec.encode((1, "a", b"b"))
    assert codec.decode(data) == [1, "a", b"b"]
    assert codec.decode(data, tuple[int, str, bytes]) == (1, "a", b"b")


def test_optional_enum_and_bigint_fields() -> None:
    msg = _block(parent=Inner(b"p", -(2**200)), height=-(2**70), reply=None, payload=None)
    assert codec.decode(codec.encode(msg)) == msg
    raw = _raw(msg)[1]
    assert raw["color"] == "green"
    assert raw["priority"] == 2
    assert raw["height"] == -(2**70)
    assert raw["reply"] is None


# ---------------------------------------------------------------------- wire form


def test_registered_instance_is_tagged_array() -> None:
    assert codec.encode(Ping(5)) == cbor2.dumps([PING_TAG, {"seq": 5}], canonical=True)
    assert _raw(Ping(5)) == [PING_TAG, {"seq": 5}]


def test_default_tag_is_module_and_qualname() -> None:
    assert _raw(Envelope("a", _block()))[0] == f"{__name__}.Envelope"


def test_nested_fields_follow_type_hints() -> None:
    tag, fields = _raw(_block())
    assert tag == "test_codec.Block"
    # A field typed Inner holds the bare map; bytes stay byte strings.
    assert fields["inner"] == {"data": b"\x00\x01", "n": 7}
    assert fields["items"] == [{"data": b"", "n": 1}, {"data": b"x", "n": 2}]
    assert fields["pair"] == [3, b"\xff"]
    # Frozensets are sorted arrays.
    assert fields["labels"] == ["a", "m", "z"]
    # A union of message classes carries the tag, as does an Any field.
    assert fields["reply"] == ["test_codec.Pong", {"seq": 9}]
    assert fields["payload"] == [
        [PING_TAG, {"seq": 1}],
        {"nested": ["test_codec.Pong", {"seq": 2}]},
        b"raw",
        None,
    ]


def test_bytes_are_byte_strings_and_big_ints_are_bignums() -> None:
    assert codec.encode(b"\x01\x02") == b"\x42\x01\x02"
    assert codec.encode(bytearray(b"\x01")) == b"\x41\x01"
    assert codec.encode(2**64) == b"\xc2\x49\x01" + b"\x00" * 8
    assert codec.decode(codec.encode(-(2**64) - 1)) == -(2**64) - 1


def test_union_of_messages_with_identical_fields_is_disambiguated_by_tag() -> None:
    for reply in (Ping(1), Pong(1)):
        msg = _block(reply=reply)
        decoded = codec.decode(codec.encode(msg), Block)
        assert type(decoded.reply) is type(reply)
    assert codec.decode(codec.encode(Pong(3)), Ping | Pong) == Pong(3)


# ------------------------------------------------------------------- determinism


@fast
@given(messages)
def test_equal_values_encode_identically(msg: Any) -> None:
    data = codec.encode(msg)
    assert codec.encode(copy.deepcopy(msg)) == data
    assert codec.encode(codec.decode(data)) == data


@fast
@given(st.dictionaries(keys, plain, max_size=6))
def test_dict_key_order_is_irrelevant(d: dict[Any, Any]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert codec.encode(reordered) == codec.encode(d)
    assert codec.encode(d) == cbor2.dumps(d, canonical=True)


@fast
@given(st.lists(st.one_of(st.text(max_size=4), st.integers(), st.binary(max_size=4)), max_size=8))
def test_set_order_is_irrelevant(items: list[Any]) -> None:
    forward = codec.encode(frozenset(items))
    assert codec.encode(frozenset(reversed(items))) == forward
    assert codec.encode(set(items)) == forward
    assert sorted(codec.decode(forward), key=repr) == sorted(set(items), key=repr)


def test_frozenset_field_order_is_irrelevant() -> None:
    labels = [f"l{i}" for i in range(20)]
    a = _block(labels=frozenset(labels), index={"a": [1], "b": [2]})
    b = _block(labels=frozenset(reversed(labels)), index={"b": [2], "a": [1]})
    assert codec.encode(a) == codec.encode(b)


def test_shortest_forms() -> None:
    assert codec.encode(0) == b"\x00"
    assert codec.encode(1.5) == b"\xf9\x3e\x00"
    assert codec.encode({"bb": 1, "a": 2}) == b"\xa2\x61\x61\x02\x62\x62\x62\x01"


# ------------------------------------------------------------------- registration


def test_register_forms_return_the_class() -> None:
    @attrs.frozen
    class A:
        x: int

    @attrs.frozen
    class B:
        x: int

    assert codec.register(A, tag="test_codec.forms.A") is A
    assert codec.register(A, tag="test_codec.forms.A") is A  # idempotent
    assert codec.register(tag="test_codec.forms.B")(B) is B
    assert _raw(A(1)) == ["test_codec.forms.A", {"x": 1}]
    assert codec.decode(codec.encode(B(2))) == B(2)


def test_register_bare_decorator_uses_default_tag() -> None:
    @codec.register
    @attrs.frozen
    class Local:
        x: int

    assert _raw(Local(1))[0] == f"{__name__}.{Local.__qualname__}"
    assert codec.decode(codec.encode(Local(1))) == Local(1)


def test_register_rejects_non_attrs_classes() -> None:
    class Plain:
        pass

    with pytest.raises(codec.CodecError, match="only attrs classes"):
        codec.register(Plain)
    with pytest.raises(codec.CodecError, match="only attrs classes"):
        codec.register(Ping(1))  # type: ignore[call-overload]


def test_register_rejects_duplicate_tag() -> None:
    @attrs.frozen
    class Impostor:
        seq: int

    with pytest.raises(codec.CodecError, match="already registered to") as info:
        codec.register(Impostor, tag=PING_TAG)
    assert isinstance(info.value, ValueError)
    # The original registration is untouched.
    assert codec.decode(codec.encode(Ping(1))) == Ping(1)


def test_register_rejects_retagging_and_empty_tags() -> None:
    with pytest.raises(codec.CodecError, match="already registered under tag"):
        codec.register(Ping, tag="test_codec.Ping2")

    @attrs.frozen
    class C:
        pass

    with pytest.raises(codec.CodecError, match="non-empty"):
        codec.register(C, tag="")


# ------------------------------------------------------------------------- errors


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_codec_error(data: bytes) -> None:
    for cls in (None, Block, Ping, list[int], Ping | Pong):
        try:
            codec.decode(data, cls)
        except codec.CodecError:
            pass


@fast
@given(messages, st.data())
def test_corrupted_encodings_only_raise_codec_error(msg: Any, data: st.DataObject) -> None:
    encoded = bytearray(codec.encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    for cls in (None, type(msg)):
        try:
            codec.decode(bytes(encoded), cls)
        except codec.CodecError:
            pass


@fast
@given(plain, st.sampled_from([None, Ping, Block, Envelope, list[Ping], Ping | Pong, Any]))
def test_wrong_shapes_only_raise_codec_error(value: Any, cls: Any) -> None:
    for data in (cbor2.dumps(value), cbor2.dumps([PING_TAG, value])):
        try:
            codec.decode(data, cls)
        except codec.CodecError:
            pass


def test_every_truncation_is_rejected() -> None:
    data = codec.encode(_block())
    for end in range(len(data)):
        with pytest.raises(codec.CodecError, match="cannot decode"):
            codec.decode(data[:end])


def test_truncated_message_says_truncated() -> None:
    with pytest.raises(codec.CodecError, match="truncated"):
        codec.decode(codec.encode(Ping(1))[:-1], Ping)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(codec.CodecError, match="trailing bytes"):
        codec.decode(codec.encode(Ping(1)) + b"\x00")


def test_unknown_tag_with_cls() -> None:
    data = cbor2.dumps(["test_codec.Nope", {"seq": 1}])
    with pytest.raises(codec.CodecError, match=r"unknown tag 'test_codec\.Nope'"):
        codec.decode(data, Ping)
    with pytest.raises(codec.CodecError, match="unknown tag"):
        codec.decode(data, Ping | Pong)
    # Without cls an unregistered tag is just a plain list (e.g. an Erlang-style tuple).
    assert codec.decode(data) == ["test_codec.Nope", {"seq": 1}]


def test_tag_for_a_different_class() -> None:
    with pytest.raises(codec.CodecError, match=r"expected .*Ping"):
        codec.decode(codec.encode(Pong(1)), Ping)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"seq": "5"}, r"expected int, got str .* @ \$\.seq"),
        ({"seq": True}, r"expected int, got bool .* @ \$\.seq"),
        ({"seq": 1.0}, r"expected int, got float .* @ \$\.seq"),
        ({"seq": None}, r"expected int, got NoneType .* @ \$\.seq"),
        ({}, r"required field missing @ \$\.seq"),
        ({"seq": 1, "extra": 2}, r"extra fields found \(extra\)"),
    ],
)
def test_bad_fields(fields: dict[str, Any], problem: str) -> None:
    for data in (cbor2.dumps([PING_TAG, fields]), cbor2.dumps(fields)):
        with pytest.raises(codec.CodecError, match=problem):
            codec.decode(data, Ping)
    with pytest.raises(codec.CodecError, match=problem):
        codec.decode(cbor2.dumps([PING_TAG, fields]))


def test_bad_nested_fields_report_their_path() -> None:
    tag, fields = _raw(_block())
    fields["inner"]["data"] = "not bytes"
    fields["items"][1]["n"] = b"1"
    fields["labels"] = "abc"
    fields["color"] = "purple"
    fields["pair"] = [1]
    with pytest.raises(codec.CodecError) as info:
        codec.decode(cbor2.dumps([tag, fields]))
    message = str(info.value)
    assert "expected bytes, got str" in message and "$.inner.data" in message
    assert "$.items[1].n" in message
    assert "expected an array, got str @ $.labels" in message
    assert "'purple' is not a valid Color @ $.color" in message
    assert "expected an array of 2, got 1 @ $.pair" in message


def test_payload_not_a_map() -> None:
    with pytest.raises(codec.CodecError, match="expected a map"):
        codec.decode(cbor2.dumps([PING_TAG, [1]]))
    with pytest.raises(codec.CodecError, match="expected a map"):
        codec.decode(cbor2.dumps(7), Ping)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "truncated"),
        (b"\xff", "malformed"),
        (b"\x62\xff\xfe", "malformed"),  # invalid UTF-8
        (cbor2.dumps(cbor2.CBORTag(1, 0)), "semantic tag"),  # epoch datetime
        (cbor2.dumps(cbor2.CBORTag(35, "(")), "semantic tag"),  # regex
        (cbor2.dumps(cbor2.CBORTag(9999, 0)), "unsupported CBOR tag 9999"),
        (b"\xf7", "UndefinedType"),
        (b"\xf0", "CBORSimpleValue"),
        (b"\xa2\x01\x01\x01\x02", "Duplicate map key"),
        (b"\xa1\x81\x01\x01", "keys must be str, int or bytes"),
    ],
)
def test_malformed_cbor(data: bytes, problem: str) -> None:
    with pytest.raises(codec.CodecError, match=problem):
        codec.decode(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(codec.CodecError, match="expected bytes"):
        codec.decode("a0")  # type: ignore[call-overload]


def test_decode_accepts_bytes_like() -> None:
    data = codec.encode(Ping(1))
    assert codec.decode(bytearray(data)) == Ping(1)
    assert codec.decode(memoryview(data), Ping) == Ping(1)


def test_encode_rejects_unsupported_values() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(codec.CodecError, match="unsupported value of type object"):
        codec.encode({"a": object()})
    with pytest.raises(codec.CodecError, match=r"keys must be str, int or bytes"):
        codec.encode({1.5: 1})
    with pytest.raises(codec.CodecError, match="cyclic"):
        codec.encode(cyclic)
    with pytest.raises(codec.CodecError, match=r"complex at \$\[1\]\['payload'\]"):
        codec.encode(_block(payload=1j))


def test_nesting_limit_is_symmetric() -> None:
    value: Any = 2**100  # a bignum at the bottom still fits
    for _ in range(codec.MAX_DEPTH):
        value = [value]
    assert codec.decode(codec.encode(value)) == value
    with pytest.raises(codec.CodecError, match="nested deeper"):
        codec.encode([value])
    with pytest.raises(codec.CodecError, match=r"nesting depth|nested deeper"):
        codec.decode(cbor2.dumps([value]))
    with pytest.raises(codec.CodecError, match=r"nesting depth|nested deeper"):
        codec.decode(b"\x81" * (codec.MAX_DEPTH + 1) + b"\x00")


def test_converter_is_a_cattrs_converter() -> None:
    assert isinstance(codec.converter, cattrs.Converter)
    assert codec.converter.structure([1, 2], tuple[int, ...]) == (1, 2)


class _Colour(enum.IntEnum):
    RED = 1


class _Text(str):
    pass


_odd_leaves = st.sampled_from([_Colour.RED, _Text("x"), object(), {1, 2}, frozenset({3}),
                               float("nan"), True, b"", bytearray(b"ba"), None])
_any_values = st.recursive(
    st.integers() | st.text(max_size=3) | st.binary(max_size=3) | st.floats() | _odd_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.integers() | st.text(max_size=2) | st.binary(max_size=2)
                      | st.sampled_from([True, 1.5, (1,), None]), inner, max_size=3),
    max_leaves=12,
)


def _slow_check(value: Any) -> str | None:
    """The full check alone (a non-empty path skips the exact-type fast path)."""
    try:
        codec._check_plain(value, 0, ["root"], "encode")
    except codec.CodecError as exc:
        return str(exc)
    return None


@settings(max_examples=400, deadline=None)
@given(_any_values)
def test_the_fast_plain_check_agrees_with_the_full_one(value: Any) -> None:
    slow = _slow_check(value)
    if codec._plain(value, 0):
        assert slow is None
    try:
        codec._check_plain(value, 0, [], "encode")
    except codec.CodecError:
        assert slow is not None
    else:
        assert slow is None


def test_the_fast_plain_check_leaves_depth_to_the_full_one() -> None:
    value: Any = 0
    for _ in range(codec.MAX_DEPTH + 1):
        value = [value]
    assert not codec._plain(value, 0)
    with pytest.raises(codec.CodecError, match="nested deeper"):
        codec._check_plain(value, 0, [], "encode")
    assert codec._plain(value[0], 0)
