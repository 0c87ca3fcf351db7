"""Loading a supervision tree from TOML: every problem found at once, each with its place.

The loader walks the tables itself rather than structuring the whole document with cattrs:
that way a class's own checks still run when one of its fields already failed, and every
mistake is listed together. Each value goes through the same checks ``ChildSpec``,
``SupervisorFlags``, ``Backoff`` and ``Mailbox`` apply (see :mod:`otp._specs`); the loader
adds the place (file, line, key path) and what is allowed there. The format is described in
:mod:`otp._tree`.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import cattrs

from ._mailbox import Mailbox, Overflow
from ._specs import (
    AutoShutdown,
    Backoff,
    BackoffKind,
    ChildType,
    OnExhausted,
    Restart,
    Strategy,
    check_intensity,
    check_period,
    check_significant,
    to_shutdown,
    type_name,
)
from ._supervisor import Supervisor
from ._tree import (
    SupervisorNode,
    TreeError,
    TreeProblem,
    TreeSpec,
    WorkerNode,
    resolve_start,
)

_COMMON_KEYS: Final = ("id", "type", "restart", "shutdown", "significant", "name", "mailbox")
WORKER_KEYS: Final = (*_COMMON_KEYS, "start", "args")
SUPERVISOR_KEYS: Final = (
    *_COMMON_KEYS,
    "start",
    "strategy",
    "intensity",
    "period",
    "backoff",
    "on_exhausted",
    "auto_shutdown",
    "children",
)
BACKOFF_KEYS: Final = ("kind", "initial", "max", "factor", "jitter")
MAILBOX_KEYS: Final = ("capacity", "overflow")
_REF = re.compile(r"\$\{([^}]*)\}")
#: A reference, or the escape ``$${`` (group 1 is None then), scanned left to right.
_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}")


_BARE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _k(key: str) -> str:
    """A key as written in a key path: bare if it can be, else quoted."""
    return key if _BARE.match(key) else '"' + key.replace('"', '\\"') + '"'


def _allowed(enum_cls: type[Any]) -> str:
    return ", ".join(repr(m.value) for m in enum_cls)


class _Loader:
    def __init__(self, text: str, source: str | None, config: Mapping[str, Any] | None):
        self.text = text
        self.source = source
        self.config = config
        self.problems: list[TreeProblem] = []
        self.lines: dict[str, int] = {}
        self.names: dict[str, str] = {}

    # -- reporting -----------------------------------------------------------------------------

    def problem(self, path: str, message: str, allowed: str | None = None) -> None:
        self.problems.append(TreeProblem(path, message, self.line_of(path), allowed))

    def line_of(self, path: str) -> int | None:
        probe = path
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                break
            probe = probe[:cut]
        return None

    # -- line index ----------------------------------------------------------------------------

    def index_lines(self) -> None:
        """Map key paths to line numbers with a light scan of the TOML text."""
        counts: dict[str, int] = {}
        current = ""
        header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
        keyline = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")
        for number, raw in enumerate(self.text.splitlines(), start=1):
            m = header.match(raw)
            if m:
                parts = [p.strip().strip('"') for p in m.group(2).split(".")]
                path = self._resolve_header(parts, counts, array=m.group(1) == "[[")
                current = path
                self.lines.setdefault(path, number)
                continue
            k = keyline.match(raw)
            if k:
                key = k.group(1).strip('"')
                path = f"{current}.{key}" if current else key
                self.lines.setdefault(path, number)

    def _resolve_header(self, parts: list[str], counts: dict[str, int], array: bool) -> str:
        # Each prefix of an array-of-tables header refers to the latest element of that array.
        path = ""
        for i, part in enumerate(parts):
            path = f"{path}.{part}" if path else part
            last = i == len(parts) - 1
            if last and array:
                n = counts.get(path, -1) + 1
                counts[path] = n
                path = f"{path}[{n}]"
            elif path in counts:
                path = f"{path}[{counts[path]}]"
        return path

    # -- references ----------------------------------------------------------------------------

    def lookup(self, ref: str) -> Any:
        if self.config is None:
            raise KeyError(ref)
        value: Any = self.config
        for part in ref.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(ref)
            value = value[part]
        return value

    def substitute(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            if "${" not in value:
                return value
            whole = _REF.fullmatch(value)

            def replace(m: re.Match[str]) -> str:
                ref = m.group(1)
                return "${" if ref is None else str(self.lookup(ref.strip()))

            try:
                if whole:
                    return self.lookup(whole.group(1).strip())
                return _TOKEN.sub(replace, value)
            except KeyError as exc:
                self.problem(
                    path,
                    f"unresolved reference ${{{exc.args[0]}}}",
                    "a key of the configuration"
                    if self.config is not None
                    else "no configuration was given",
                )
                return value
        if isinstance(value, dict):
            return {k: self.substitute(v, f"{path}.{_k(k)}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    # -- scalars -------------------------------------------------------------------------------

    def enum(self, table: dict[str, Any], key: str, enum_cls: type[Any], path: str,
             default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, str):
            for member in enum_cls:
                if member.value == value:
                    return member
            self.problem(f"{path}.{key}", f"bad value {value!r}", _allowed(enum_cls))
        else:
            self.problem(
                f"{path}.{key}", f"expected a string, got {type_name(value)}", _allowed(enum_cls)
            )
        return default

    def scalar(self, table: dict[str, Any], key: str, kind: type[Any], path: str,
               default: Any, allowed: str) -> Any:
        """Structure one scalar with the strict cattrs converter; report a clear problem."""
        if key not in table:
            return default
        try:
            return _converter.structure(table[key], kind)
        except Exception as exc:
            value = table[key]
            detail = str(exc) if not isinstance(exc, cattrs.BaseValidationError) else ""
            message = detail or f"expected {allowed}, got {type_name(value)} {value!r}"
            self.problem(f"{path}.{key}", message, allowed)
            return default

    def checked(self, table: dict[str, Any], key: str, path: str, check: Any, default: Any,
                allowed: str) -> Any:
        """``check(value)`` (the same rule ChildSpec and SupervisorFlags apply), or a problem
        with its message and ``default``."""
        if key not in table:
            return default
        try:
            return check(table[key])
        except (TypeError, ValueError) as exc:
            self.problem(f"{path}.{key}", str(exc), allowed)
            return default

    def unknown_keys(self, table: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(f"{path}.{_k(key)}", "unknown key", ", ".join(allowed))

    def table(self, value: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected a table, got {type_name(value)}")
            return None
        return value

    # -- nodes ---------------------------------------------------------------------------------

    def common(self, t: dict[str, Any], path: str, is_sup: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        node_id = t.get("id")
        if node_id is None:
            self.problem(f"{path}.id", "missing", "a non-empty string")
            out["id"] = f"<{path}>"
        elif not isinstance(node_id, str) or not node_id:
            self.problem(f"{path}.id", f"expected a non-empty string, got {node_id!r}")
            out["id"] = f"<{path}>"
        else:
            out["id"] = node_id
        out["restart"] = self.enum(t, "restart", Restart, path, Restart.PERMANENT)
        if "shutdown" in t:
            out["shutdown"] = self.checked(
                t, "shutdown", path, to_shutdown, None,
                "a positive number of seconds, 'brutal_kill', 'infinity'")
        if "significant" in t:
            out["significant"] = self.checked(
                t, "significant", path, lambda v: check_significant(out["restart"], v), False,
                "true or false; true only with restart = 'transient' or 'temporary'")
        name = self.scalar(t, "name", str, path, None, "a string")
        if name is not None:
            if name in self.names:
                self.problem(f"{path}.name", f"name {name!r} is already used by {self.names[name]}")
            else:
                self.names[name] = path
        out["name"] = name
        if "mailbox" in t:
            out["mailbox"] = self.mailbox(t["mailbox"], f"{path}.mailbox")
        kind = self.enum(t, "type", ChildType, path, ChildType.WORKER)
        if "start" in t:
            start = t["start"]
            if not isinstance(start, str):
                self.problem(f"{path}.start", f"expected a string, got {type_name(start)}",
                             "'package.module:Class'")
            else:
                try:
                    cls = resolve_start(start)
                except ValueError as exc:
                    self.problem(f"{path}.start", str(exc), "'package.module:Class'")
                else:
                    if is_sup and not issubclass(cls, Supervisor):
                        self.problem(f"{path}.start",
                                     f"{start!r} is not a Supervisor but type is 'supervisor'",
                                     "an otp.Supervisor subclass")
                    elif not is_sup and issubclass(cls, Supervisor):
                        self.problem(f"{path}.start",
                                     f"{start!r} is a Supervisor: set type = 'supervisor'",
                                     "a GenServer subclass that is not a Supervisor")
                    out["start"] = start
        elif not is_sup and kind is ChildType.WORKER:
            self.problem(f"{path}.start", "missing", "'package.module:Class'")
        return out

    def mailbox(self, value: Any, path: str) -> Mailbox | None:
        t = self.table(value, path)
        if t is None:
            return None
        self.unknown_keys(t, MAILBOX_KEYS, path)
        capacity = self.scalar(t, "capacity", int, path, 1024, "an integer >= 1")
        overflow = self.enum(t, "overflow", Overflow, path, Overflow.BLOCK)
        try:
            return Mailbox(capacity, overflow)
        except (TypeError, ValueError) as exc:
            self.problem(f"{path}.capacity", str(exc), "an integer >= 1")
            return None

    def backoff(self, value: Any, path: str) -> Backoff:
        t = self.table(value, path)
        if t is None:
            return Backoff()
        self.unknown_keys(t, BACKOFF_KEYS, path)
        kind = self.enum(t, "kind", BackoffKind, path, BackoffKind.NONE)
        nums = {}
        bad = False
        for field in attrs.fields(Backoff)[1:]:
            key = field.name
            if key not in t:
                continue
            try:
                # The Backoff field's own validator: the rule lives in one place.
                field.validator(None, field, t[key])  # type: ignore[misc]
            except (TypeError, ValueError) as exc:
                self.problem(f"{path}.{key}", str(exc),
                             "a number >= 0 (inf for no cap)" if key == "max"
                             else "a finite number >= 0")
                bad = True
            else:
                nums[key] = float(t[key])
        if bad:
            return Backoff()
        try:
            return Backoff(kind, **nums)
        except (TypeError, ValueError) as exc:
            self.problem(path, str(exc),
                         "kind, finite initial <= max, finite factor >= 1, 0 <= jitter <= 1")
            return Backoff()

    def node(self, value: Any, path: str) -> WorkerNode | SupervisorNode | None:
        t = self.table(value, path)
        if t is None:
            return None
        is_sup = path == "tree" or t.get("type") == "supervisor"
        self.unknown_keys(t, SUPERVISOR_KEYS if is_sup else WORKER_KEYS, path)
        if path == "tree" and "type" in t and t["type"] != "supervisor":
            self.problem(f"{path}.type", f"the root must be a supervisor, not {t['type']!r}",
                         "'supervisor'")
        fields = self.common(t, path, is_sup)
        if not is_sup:
            args = t.get("args", ())
            if isinstance(args, list):
                fields["args"] = tuple(args)
            elif isinstance(args, dict):
                fields["args"] = args
            elif args != ():
                self.problem(f"{path}.args", f"expected a table or an array, got "
                             f"{type_name(args)}", "a table (keyword args) or an array")
            if "start" not in fields:
                return None
            return WorkerNode(**fields)
        fields["strategy"] = self.enum(t, "strategy", Strategy, path, Strategy.ONE_FOR_ONE)
        fields["intensity"] = self.checked(t, "intensity", path, check_intensity, 1,
                                           "an integer >= 0")
        fields["period"] = self.checked(t, "period", path, check_period, 5.0,
                                        "a finite number of seconds > 0")
        if "backoff" in t:
            fields["backoff"] = self.backoff(t["backoff"], f"{path}.backoff")
        fields["on_exhausted"] = self.enum(t, "on_exhausted", OnExhausted, path,
                                           OnExhausted.ESCALATE)
        fields["auto_shutdown"] = self.enum(t, "auto_shutdown", AutoShutdown, path,
                                            AutoShutdown.NEVER)
        raw_children = t.get("children", [])
        children: list[WorkerNode | SupervisorNode] = []
        if not isinstance(raw_children, list):
            self.problem(f"{path}.children", f"expected an array of tables, got "
                         f"{type_name(raw_children)}", "[[...children]] tables")
            raw_children = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_children):
            cpath = f"{path}.children[{i}]"
            child = self.node(raw, cpath)
            if child is None:
                continue
            if child.id in seen:
                self.problem(
                    f"{cpath}.id",
                    f"duplicate id {child.id!r} (also children[{seen[child.id]}])",
                    "ids unique among siblings",
                )
            seen.setdefault(child.id, i)
            if child.significant and fields["auto_shutdown"] is AutoShutdown.NEVER:
                self.problem(f"{cpath}.significant",
                             "significant child under a supervisor with auto_shutdown 'never'",
                             "auto_shutdown = 'any_significant' or 'all_significant'")
            children.append(child)
        fields["children"] = tuple(children)
        return SupervisorNode(**fields)

    def load(self) -> SupervisorNode:
        try:
            doc = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise TreeError(
                [TreeProblem("<document>", f"not valid TOML: {exc}",
                             int(m.group(1)) if m else None)],
                self.source,
            ) from None
        self.index_lines()
        for key in doc:
            if key != "tree":
                self.problem(_k(key), "unknown top-level key", "tree")
        if "tree" not in doc:
            self.problem("tree", "missing [tree] table", "a [tree] table: the root supervisor")
            raise TreeError(self.problems, self.source)
        tree = self.substitute(doc["tree"], "tree")
        root = self.node(tree, "tree")
        if self.problems or not isinstance(root, SupervisorNode):
            raise TreeError(self.problems, self.source)
        return root


def _strict_int(value: Any, _type: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type_name(value)} {value!r}")
    return value


def _strict_float(value: Any, _type: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type_name(value)} {value!r}")
    if math.isnan(value):
        raise ValueError("expected a number, got nan")
    return float(value)


def _strict_str(value: Any, _type: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type_name(value)} {value!r}")
    return value


def _strict_bool(value: Any, _type: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type_name(value)} {value!r}")
    return value


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(bool, _strict_bool)


def load_tree(path_or_text: str | Path, config: Mapping[str, Any] | None = None) -> TreeSpec:
    """Load and validate a supervision tree from a TOML file path or TOML text.

    A :class:`~pathlib.Path`, or a string naming an existing file that ends in ``.toml``, is
    read as a file; any other string is TOML text. ``config`` resolves ``${section.key}``
    references. Raises :class:`TreeError` listing every problem; nothing else escapes.
    """
    source: str | None = None
    if isinstance(path_or_text, Path) or (
        isinstance(path_or_text, str)
        and "\n" not in path_or_text
        and path_or_text.endswith(".toml")
    ):
        source = str(path_or_text)
        try:
            text = Path(path_or_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TreeError([TreeProblem("<file>", f"cannot read: {exc}")], source) from None
    elif isinstance(path_or_text, str):
        text = path_or_text
    else:
        raise TreeError(
            [TreeProblem("<argument>", f"expected a path or TOML text, got {path_or_text!r}")]
        )
    return _Loader(text, source, config).load()


