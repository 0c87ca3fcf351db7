"""Canonical CBOR for attrs message types.

``otp.codec`` turns attrs instances (and plain CBOR-able values) into
deterministic bytes and back.  It is built on :mod:`cbor2` (wire format) and
:mod:`cattrs` (un/structuring), and keeps a registry of *message types*: attrs
classes known under a stable string tag.

Wire format
-----------
* ``encode`` always produces canonical CBOR (``cbor2.dumps(..., canonical=True)``):
  shortest integer/float/length forms, map keys sorted.  Equal values of equal
  types encode to identical bytes regardless of dict insertion order or set
  iteration order.  (Values that compare equal across types, such as ``1``,
  ``1.0`` and ``True``, or ``0.0`` and ``-0.0``, keep distinct encodings.)
* An instance of a registered class at the top level, or inside plain
  ``list``/``tuple``/``dict`` values, or in a field typed ``Any``, is written as
  the CBOR array ``[tag, fields]`` where ``fields`` is the cattrs unstructured
  form (a map from attribute name to value).  ``decode`` without a target type
  uses the tag to rebuild the instance.
* Values nested in fields are unstructured by cattrs according to the field's
  type hint, so a field typed ``Inner`` holds the bare map of ``Inner``'s
  fields.  A field typed as a union of two or more attrs classes holds the
  tagged form when the value's class is registered, so the union can be
  decoded without guessing.
* ``bytes`` are CBOR byte strings; tuples and lists are arrays; ``set`` and
  ``frozenset`` are arrays sorted by the canonical encoding of their elements;
  enums are encoded by value; ``int`` has no size limit (CBOR bignums).
* Map keys must be ``str``, ``int`` (``bool`` included) or ``bytes``.
* Containers may be nested at most :data:`MAX_DEPTH` deep.

Decoding is strict: trailing bytes, CBOR tags other than bignums, simple
values, duplicate map keys, unknown or mismatched tags, missing or extra
fields and values of the wrong CBOR type (an ``int`` field receiving ``"5"`` or
``True``, a ``list`` field receiving a string, ...) all raise :class:`CodecError`.

Caveat: the tagged form is an ordinary two-element array, so a *plain*
two-element list whose first element is the tag of a registered class (and
which appears where the decoder looks for tags, see above) is decoded as that
message.  Plain values otherwise round-trip, except that tuples come back as
lists (unless a target type says otherwise).
"""

from __future__ import annotations

import enum
import io
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from collections.abc import MutableSet as AbcMutableSet
from collections.abc import Set as AbcSet
from typing import Any, Final, TypeVar, overload

import attrs
import cattrs
import cbor2
from cattrs.disambiguators import create_default_dis_func
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.strategies import configure_union_passthrough
from cattrs.v import format_exception, transform_error

__all__ = ["MAX_DEPTH", "CodecError", "converter", "decode", "encode", "register"]

T = TypeVar("T")
C = TypeVar("C", bound=type)

#: Maximum container (array/map) nesting accepted by :func:`encode` and :func:`decode`.
MAX_DEPTH = 128


class CodecError(ValueError):
    """A value could not be encoded, or bytes could not be decoded.

    The message says what was wrong and where (``$`` is the decoded root,
    ``$.field[3]`` a path into it).  The underlying exception, if any, is
    chained as ``__cause__``.
    """


class _WireTypeError(TypeError):
    """Raised by our hooks; its message is shown verbatim in :class:`CodecError`."""


# --------------------------------------------------------------------------- registry

_tag_by_cls: dict[type, str] = {}
_cls_by_tag: dict[str, type] = {}


def _is_attrs_class(t: Any) -> bool:
    return isinstance(t, type) and attrs.has(t)


def _describe(cls: Any) -> str:
    if isinstance(cls, type):
        return f"{cls.__module__}.{cls.__qualname__}"
    return repr(cls)


@overload
def register(cls: C, *, tag: str | None = None) -> C: ...


@overload
def register(cls: None = None, *, tag: str | None = None) -> Callable[[C], C]: ...


def register(cls: C | None = None, *, tag: str | None = None) -> C | Callable[[C], C]:
    """Register an attrs class as a message type under a stable string tag.

    Use as ``@register``, ``@register(tag="chain.ImportBlock")`` or
    ``register(Cls)``; the class is returned unchanged.  Apply it *above*
    ``@attrs.define`` / ``@attrs.frozen`` (those may replace the class).  The
    default tag is ``f"{cls.__module__}.{cls.__qualname__}"``; pass an explicit
    tag for anything that goes over the network, so that moving or renaming
    the class does not change the wire format.

    Registering the same class under the same tag again is a no-op.  Raises
    :class:`CodecError` if ``cls`` is not an attrs class, if the tag is empty,
    if the tag already belongs to a different class, or if the class is
    already registered under a different tag.
    """

    def apply(c: C) -> C:
        if not _is_attrs_class(c):
            raise CodecError(
                f"cannot register {c!r}: only attrs classes can be registered "
                "(decorate it with @attrs.define or @attrs.frozen, below @register)"
            )
        t = f"{c.__module__}.{c.__qualname__}" if tag is None else tag
        if not isinstance(t, str) or not t:
            raise CodecError(f"cannot register {_describe(c)}: tag must be a non-empty str")
        owner = _cls_by_tag.get(t)
        if owner is not None and owner is not c:
            raise CodecError(
                f"cannot register {_describe(c)} under tag {t!r}: "
                f"that tag is already registered to {_describe(owner)}"
            )
        old = _tag_by_cls.get(c)
        if old is not None and old != t:
            raise CodecError(
                f"cannot register {_describe(c)} under tag {t!r}: "
                f"it is already registered under tag {old!r}"
            )
        _cls_by_tag[t] = c
        _tag_by_cls[c] = t
        return c

    if cls is None:
        return apply
    return apply(cls)


def _is_tagged_shape(value: Any) -> bool:
    return type(value) is list and len(value) == 2 and type(value[0]) is str


def _tagged(value: Any) -> list[Any] | None:
    """The ``[tag, fields]`` form of a registered instance, else None."""
    tag = _tag_by_cls.get(type(value))
    if tag is None:
        return None
    return [tag, converter.unstructure(value, type(value))]


def _resolve_tag(tag: str, expected: tuple[type, ...]) -> type:
    """The registered class for ``tag``; it must be (a subclass of) one of ``expected``."""
    found = _cls_by_tag.get(tag)
    wanted = " | ".join(_describe(e) for e in expected)
    if found is None:
        raise _WireTypeError(f"unknown tag {tag!r} (expected {wanted})")
    if not any(issubclass(found, e) for e in expected):
        raise _WireTypeError(f"tag {tag!r} is {_describe(found)}, expected {wanted}")
    return found


# ----------------------------------------------------------------- plain-value walks


def _to_wire(value: Any) -> Any:
    """Convert a value whose type is not known statically to plain CBOR-able data.

    Registered instances become ``[tag, fields]``; plain containers are walked;
    anything else is unstructured by cattrs according to its runtime type.
    """
    t = type(value)
    if t in _SCALARS:
        return value
    tagged = _tagged(value)
    if tagged is not None:
        return tagged
    if isinstance(value, list | tuple):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {_key_to_wire(k): _to_wire(v) for k, v in value.items()}
    if t is bytearray or t is memoryview:
        return bytes(value)
    if t is object:  # would dispatch back here via the Any hook; _check_plain rejects it
        return value
    return converter.unstructure(value)


def _key_to_wire(key: Any) -> Any:
    if isinstance(key, enum.Enum):
        return key.value
    return key


def _from_wire(value: Any) -> Any:
    """Inverse of :func:`_to_wire` for untyped positions: rebuild registered tags."""
    t = type(value)
    if t is list:
        if len(value) == 2 and type(value[0]) is str and value[0] in _cls_by_tag:
            return converter.structure(value[1], _cls_by_tag[value[0]])
        return [_from_wire(v) for v in value]
    if t is dict:
        return {k: _from_wire(v) for k, v in value.items()}
    return value


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
_WIRE_LEAVES = (str, bytes, bytearray, int, float)  # subclasses (e.g. StrEnum) encode as base
_WIRE_KEYS = (str, bytes, int)


def _fmt_path(path: list[Any]) -> str:
    return "$" + "".join(f"[{p!r}]" for p in path)


#: Exact types :func:`_plain` passes without a closer look (all of them plain).
_PLAIN_LEAVES: Final = frozenset({type(None), bool, int, float, str, bytes, bytearray})
_PLAIN_KEYS: Final = frozenset({str, bytes, int})


def _plain(value: Any, depth: int) -> bool:
    """True if ``value`` is plain by exact types alone (the common case, checked without
    building a path); False means :func:`_check_plain` must look (it may still pass it:
    subclasses of the leaf types, say) and say what is wrong."""
    t = type(value)
    if t in _PLAIN_LEAVES:
        return True
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            return False
        inner = depth + 1
        for item in value:
            if type(item) not in _PLAIN_LEAVES and not _plain(item, inner):
                return False
        return True
    if t is dict:
        if depth >= MAX_DEPTH:
            return False
        inner = depth + 1
        for key, item in value.items():
            if type(key) not in _PLAIN_KEYS:
                return False
            if type(item) not in _PLAIN_LEAVES and not _plain(item, inner):
                return False
        return True
    return False


def _check_plain(value: Any, depth: int, path: list[Any], what: str) -> None:
    """Check that ``value`` is plain CBOR data we both encode and decode.

    ``depth`` is the number of containers enclosing ``value``.
    """
    if not path and _plain(value, depth):
        return
    if value is None or isinstance(value, _WIRE_LEAVES):
        return
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise CodecError(f"cannot {what}: containers nested deeper than {MAX_DEPTH}")
        for i, item in enumerate(value):
            path.append(i)
            _check_plain(item, depth + 1, path, what)
            path.pop()
        return
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise CodecError(f"cannot {what}: containers nested deeper than {MAX_DEPTH}")
        for k, item in value.items():
            if not isinstance(k, _WIRE_KEYS):
                raise CodecError(
                    f"cannot {what}: map key {k!r} at {_fmt_path(path)} has type "
                    f"{type(k).__name__}; keys must be str, int or bytes"
                )
            path.append(k)
            _check_plain(item, depth + 1, path, what)
            path.pop()
        return
    raise CodecError(
        f"cannot {what}: unsupported value of type {type(value).__qualname__} "
        f"at {_fmt_path(path)}: {value!r:.80}"
    )


# ------------------------------------------------------------------------ converter

#: The cattrs converter used by :func:`encode` and :func:`decode`.  Users may
#: register extra hooks on it; hooks must produce/accept plain CBOR data.
converter = cattrs.Converter(forbid_extra_keys=True)


#: The scalar types a value of exactly that type structures into as it is.
_EXACT_SCALARS: Final = frozenset({bool, int, float, str, bytes})


def _strict_scalar(value: Any, cl: Any) -> Any:
    """Structure hook for bool/int/float/str/bytes and their subclasses (e.g. IntEnum)."""
    if type(value) is cl and cl in _EXACT_SCALARS:
        return value
    if isinstance(cl, type) and issubclass(cl, enum.Enum):
        return _structure_enum(value, cl)
    if issubclass(cl, bool):
        ok = type(value) is bool
    elif issubclass(cl, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif issubclass(cl, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif issubclass(cl, str):
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, bytes | bytearray)
    if not ok:
        raise _WireTypeError(f"expected {cl.__name__}, got {type(value).__name__} {value!r:.40}")
    if type(value) is cl:
        return value
    return cl(value)


def _structure_enum(value: Any, cl: type[enum.Enum]) -> enum.Enum:
    try:
        member = cl(value)
    except ValueError:
        raise _WireTypeError(f"{value!r:.40} is not a valid {cl.__name__}") from None
    if type(member.value) is not type(value):
        raise _WireTypeError(
            f"{value!r:.40} is not a valid {cl.__name__} "
            f"(value type {type(value).__name__}, expected {type(member.value).__name__})"
        )
    return member


def _unstructure_bytes(value: Any) -> bytes:
    return value if type(value) is bytes else bytes(value)


for _scalar in (bool, int, float, str, bytes):
    converter.register_structure_hook(_scalar, _strict_scalar)
converter.register_unstructure_hook(bytes, _unstructure_bytes)
converter.register_structure_hook_factory(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum),
    lambda t: _structure_enum,
)
configure_union_passthrough(
    typing.Union[int, float, str, bytes, bool, None],  # noqa: UP007  (needs a real Union)
    converter,
)

# Any / object: the runtime type decides, registered instances are tagged.
_ANY = (Any, object)
converter.register_unstructure_hook_func(lambda t: t in _ANY, _to_wire)
converter.register_structure_hook_func(lambda t: t in _ANY, lambda v, _: _from_wire(v))


def _unstructurer(t: Any) -> Callable[[Any], Any]:
    if t in _ANY or isinstance(t, TypeVar):
        return _to_wire
    return lambda v: converter.unstructure(v, t)


def _structurer(t: Any) -> Callable[[Any], Any]:
    if t in _ANY or isinstance(t, TypeVar):
        return _from_wire
    return lambda v: converter.structure(v, t)


# Collections.  cattrs accepts any iterable (a str for a list[str], ...); we require
# the CBOR type, and route Any elements through the tag-aware walks.

_SEQ_ORIGINS = frozenset({list, tuple, Sequence, MutableSequence})
_SET_ORIGINS = frozenset({set, frozenset, AbcSet, AbcMutableSet})
_MAP_ORIGINS = frozenset({dict, Mapping, MutableMapping})


def _origin(t: Any) -> Any:
    return typing.get_origin(t) or t


def _is_seq(t: Any) -> bool:
    return _origin(t) in _SEQ_ORIGINS


def _is_set(t: Any) -> bool:
    return _origin(t) in _SET_ORIGINS


def _is_map(t: Any) -> bool:
    return _origin(t) in _MAP_ORIGINS


def _structure_items(values: list[Any], hooks: list[Callable[[Any], Any]], cl: Any) -> list[Any]:
    errors: list[Exception] = []
    out: list[Any] = []
    for i, (v, hook) in enumerate(zip(values, hooks, strict=True)):
        try:
            out.append(hook(v))
        except Exception as exc:
            exc.__notes__ = [
                *getattr(exc, "__notes__", []),
                IterableValidationNote(f"Structuring {cl!r} @ index {i}", i, cl),
            ]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"While structuring {cl!r}", errors, cl)
    return out


def _seq_hooks(t: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """(unstructure, structure) hooks for list/tuple/Sequence types (arrays on the wire)."""
    args = typing.get_args(t)
    is_tuple = _origin(t) is tuple
    positional: tuple[Any, ...] | None = None  # heterogeneous tuple[A, B, ...]
    if is_tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        positional = () if args == ((),) else args
    elem = args[0] if args and positional is None else Any
    un_one, st_one = _unstructurer(elem), _structurer(elem)
    un_pos = [_unstructurer(a) for a in positional or ()]
    st_pos = [_structurer(a) for a in positional or ()]

    def unstructure(value: Any) -> list[Any]:
        if positional is not None:
            if len(value) != len(un_pos):
                raise _WireTypeError(f"expected {len(un_pos)} items for {t!r}, got {len(value)}")
            return [f(v) for f, v in zip(un_pos, value, strict=True)]
        return [un_one(v) for v in value]

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not list:
            raise _WireTypeError(f"expected an array, got {type(value).__name__}")
        if positional is not None:
            if len(value) != len(st_pos):
                raise _WireTypeError(f"expected an array of {len(st_pos)}, got {len(value)}")
            items = _structure_items(value, st_pos, t)
        else:
            items = _structure_items(value, [st_one] * len(value), t)
        return tuple(items) if is_tuple else items

    return unstructure, structure


def _canonical_sort_key(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _set_hooks(t: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """(unstructure, structure) hooks for set/frozenset types (arrays on the wire)."""
    args = typing.get_args(t)
    elem = args[0] if args else Any
    un_one, st_one = _unstructurer(elem), _structurer(elem)
    build: type = set if _origin(t) in (set, AbcMutableSet) else frozenset

    def unstructure(value: Any) -> list[Any]:
        return sorted((un_one(v) for v in value), key=_canonical_sort_key)

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not list:
            raise _WireTypeError(f"expected an array, got {type(value).__name__}")
        items = _structure_items(value, [st_one] * len(value), t)
        try:
            return build(items)
        except TypeError as exc:
            raise _WireTypeError(f"set elements must be hashable ({exc})") from None

    return unstructure, structure


def _map_hooks(t: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """(unstructure, structure) hooks for dict/Mapping types (maps on the wire)."""
    args = typing.get_args(t)
    kt, vt = args if len(args) == 2 else (Any, Any)
    un_k = _key_to_wire if kt in _ANY else _unstructurer(kt)
    st_k: Callable[[Any], Any] = (lambda k: k) if kt in _ANY else _structurer(kt)
    un_v, st_v = _unstructurer(vt), _structurer(vt)

    def unstructure(value: Any) -> dict[Any, Any]:
        return {un_k(k): un_v(v) for k, v in value.items()}

    def structure(value: Any, _: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise _WireTypeError(f"expected a map, got {type(value).__name__}")
        errors: list[Exception] = []
        out: dict[Any, Any] = {}
        for k, v in value.items():
            try:
                out[st_k(k)] = st_v(v)
            except Exception as exc:
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    IterableValidationNote(f"Structuring {t!r} @ key {k!r}", k, vt),
                ]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return out

    return unstructure, structure


for _pred, _make in ((_is_seq, _seq_hooks), (_is_set, _set_hooks), (_is_map, _map_hooks)):
    converter.register_unstructure_hook_factory(_pred, lambda t, _m=_make: _m(t)[0])
    converter.register_structure_hook_factory(_pred, lambda t, _m=_make: _m(t)[1])


# attrs classes: accept the bare map or the tagged array.


def _attrs_structure_factory(cl: type) -> Callable[[Any, Any], Any]:
    inner: Callable[[Mapping[str, Any], Any], Any] = converter.gen_structure_attrs_fromdict(cl)

    def structure(value: Any, _: Any) -> Any:
        if _is_tagged_shape(value):
            found = _resolve_tag(value[0], (cl,))
            if found is not cl:
                return converter.structure(value[1], found)
            value = value[1]
        if type(value) is not dict:
            raise _WireTypeError(
                f"expected a map of {cl.__qualname__} fields or a tagged array, "
                f"got {type(value).__name__}"
            )
        for key in value:
            if type(key) is not str:
                raise _WireTypeError(f"field names must be text strings, got {key!r:.40}")
        return inner(value, cl)

    return structure


converter.register_structure_hook_factory(_is_attrs_class, _attrs_structure_factory)


# Unions of two or more attrs classes (optionally with None): tag registered members.


def _union_members(t: Any) -> tuple[type, ...] | None:
    if typing.get_origin(t) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(t)
    members = tuple(a for a in args if a is not type(None))
    if len(members) < 2 or not all(_is_attrs_class(m) for m in members):
        return None
    return members


def _attrs_union_unstructure_factory(t: Any) -> Callable[[Any], Any]:
    def unstructure(value: Any) -> Any:
        if value is None:
            return None
        tagged = _tagged(value)
        return tagged if tagged is not None else converter.unstructure(value)

    return unstructure


def _attrs_union_structure_factory(t: Any) -> Callable[[Any, Any], Any]:
    members = _union_members(t)
    assert members is not None
    optional = type(None) in typing.get_args(t)
    dis_func: list[Callable[[Mapping[Any, Any]], type | None]] = []

    def structure(value: Any, _: Any) -> Any:
        if value is None and optional:
            return None
        if _is_tagged_shape(value):
            return converter.structure(value[1], _resolve_tag(value[0], members))
        if type(value) is not dict:
            raise _WireTypeError(f"expected a tagged array or a map, got {type(value).__name__}")
        if not dis_func:
            try:
                dis_func.append(create_default_dis_func(converter, *members))
            except Exception as exc:
                raise _WireTypeError(
                    f"untagged value for {t!r} cannot be disambiguated ({exc})"
                ) from None
        cls = dis_func[0](value)
        if cls is None:
            raise _WireTypeError(f"untagged value does not match any member of {t!r}")
        return converter.structure(value, cls)

    return structure


converter.register_unstructure_hook_factory(
    lambda t: _union_members(t) is not None, _attrs_union_unstructure_factory
)
converter.register_structure_hook_factory(
    lambda t: _union_members(t) is not None, _attrs_union_structure_factory
)


# --------------------------------------------------------------------- encode/decode


def encode(obj: object) -> bytes:
    """Encode ``obj`` as canonical CBOR.

    ``obj`` may be an instance of a registered attrs class (written as
    ``[tag, fields]``), an unregistered attrs instance (written as its bare
    field map; decode it with an explicit ``cls``), or a plain value: ``None``,
    ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple``,
    ``dict`` (``str``/``int``/``bytes`` keys), ``set``/``frozenset``, enums,
    and any nesting of these and of registered instances.

    Raises :class:`CodecError` if some part of ``obj`` cannot be represented.
    """
    try:
        wire = _to_wire(obj)
    except CodecError:
        raise
    except RecursionError as exc:
        raise CodecError("cannot encode: value is cyclic or nested too deeply") from exc
    except Exception as exc:
        raise CodecError(f"cannot encode {type(obj).__qualname__}: {exc}") from exc
    _check_plain(wire, 0, [], "encode")
    try:
        return cbor2.dumps(wire, canonical=True)
    except Exception as exc:  # pragma: no cover - _check_plain should catch everything
        raise CodecError(f"cannot encode {type(obj).__qualname__}: {exc}") from exc


def _reject_tag(tag: cbor2.CBORTag, immutable: bool) -> Any:
    raise ValueError(f"unsupported CBOR tag {tag.tag}")


def _reject_semantic(value: Any, immutable: bool) -> Any:
    raise ValueError("unsupported CBOR semantic tag (only bignums, tags 2 and 3, are allowed)")


# Tags cbor2 decodes natively; all but the bignums (2, 3) are rejected.
_NATIVE_TAGS = (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
                43000, 55799)  # fmt: skip
_SEMANTIC_DECODERS: dict[int, Any] = dict.fromkeys(_NATIVE_TAGS, _reject_semantic)


def _loads(data: bytes) -> Any:
    """Decode one canonical-codec CBOR item that spans all of ``data``."""
    fp = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        fp,
        tag_hook=_reject_tag,
        semantic_decoders=_SEMANTIC_DECODERS,
        max_depth=MAX_DEPTH + 1,  # cbor2 counts a bignum tag as a level
        allow_duplicate_keys=False,
    )
    try:
        value = decoder.decode()
    except cbor2.CBORDecodeEOF as exc:
        raise CodecError(f"cannot decode: truncated CBOR ({exc})") from exc
    except Exception as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise CodecError(f"cannot decode: malformed CBOR ({exc}{cause})") from exc
    try:
        decoder.read(1)
    except cbor2.CBORDecodeEOF:
        pass
    else:
        raise CodecError("cannot decode: trailing bytes after the CBOR item")
    _check_plain(value, 0, [], "decode")
    return value


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, _WireTypeError | CodecError):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"extra fields found ({', '.join(sorted(map(str, exc.extra_fields)))})"
    base = format_exception(exc, type_)
    if base.startswith("unknown error"):
        return f"invalid value ({exc})"
    if isinstance(exc, ValueError | TypeError) and str(exc) and str(exc) not in base:
        base = f"{base} ({exc})"
    return base


@overload
def decode(data: bytes | bytearray | memoryview, cls: None = None) -> Any: ...


@overload
def decode(data: bytes | bytearray | memoryview, cls: type[T]) -> T: ...


@overload
def decode(data: bytes | bytearray | memoryview, cls: Any) -> Any: ...


def decode(data: bytes | bytearray | memoryview, cls: Any = None) -> Any:
    """Decode bytes produced by :func:`encode`.

    Without ``cls``: a top-level ``[tag, fields]`` array (and such arrays inside
    plain lists/maps) whose tag is registered becomes an instance of that
    class; everything else is returned as plain values (arrays as lists, maps
    as dicts, byte strings as bytes).  An unregistered tag is left as a plain
    list.

    With ``cls`` (any type cattrs can structure: an attrs class, ``list[X]``,
    ``X | None``, ...): the payload is structured into ``cls``.  For an attrs
    class both the tagged form (tag must name ``cls`` or a subclass) and the
    bare field map are accepted.

    Raises :class:`CodecError` for any malformed input; never lets cbor2 or
    cattrs exceptions escape.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"cannot decode: expected bytes, got {type(data).__qualname__}")
    raw = _loads(bytes(data))
    if cls is not None:
        target, what = cls, _describe(cls)
    else:
        target, what = Any, "value"
        if _is_tagged_shape(raw) and raw[0] in _cls_by_tag:
            what = f"{_describe(_cls_by_tag[raw[0]])} (tag {raw[0]!r})"
    try:
        return converter.structure(raw, target)
    except (ClassValidationError, IterableValidationError) as exc:
        try:
            problems = "; ".join(transform_error(exc, format_exception=_format_error))
        except Exception:  # a user hook raised something odd; don't mask the real error
            problems = str(exc)
        raise CodecError(f"cannot decode {what}: {problems}") from exc
    except RecursionError as exc:
        raise CodecError(f"cannot decode {what}: nested too deeply") from exc
    except Exception as exc:
        raise CodecError(f"cannot decode {what}: {_format_error(exc, None)}") from exc
