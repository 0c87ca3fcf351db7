"""Configuration layers for command lines: ``--set section.key=value`` and nested merges.

One parser for every program built on otp (``python -m otp``, the node): a value is read as
a TOML value when it parses as one (``--set a.port=3000`` is an integer, ``--set a.on=true``
a boolean, ``--set a.xs=[1,2]`` an array) and as the raw string otherwise (``--set
a.host=127.0.0.1``). A dotted key names nested tables; setting a key below one that already
holds a value (``--set a=1 --set a.b=2``) is an error that names both.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["merge", "parse_set", "parse_value", "set_path"]


def parse_value(raw: str) -> Any:
    """``raw`` as a TOML value if it parses as one, else the string itself."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``target[a][b][c] = value`` for ``dotted = "a.b.c"``, creating tables on the way.

    ``ValueError`` for an empty part (``"a..b"``) or a part that already holds a value.
    """
    parts = dotted.split(".")
    if not all(part.strip() for part in parts):
        raise ValueError(f"{dotted!r} is not a dotted key (section.key)")
    node = target
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part.strip(), {})
        if not isinstance(node, dict):
            where = ".".join(parts[: i + 1])
            raise ValueError(f"{where!r} is already set to a value, not a table")
    node[parts[-1].strip()] = value


def parse_set(items: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``key=value`` items (``--set`` options) as one nested mapping.

    Raises ``ValueError`` listing every malformed item, each named as written.
    """
    layer: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{option} {item!r}: expected key=value, as in section.key=value")
            continue
        try:
            set_path(layer, key.strip(), parse_value(raw.strip()))
        except ValueError as exc:
            problems.append(f"{option} {item!r}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return layer


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
