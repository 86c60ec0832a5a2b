"""Reading composed YAML nodes with their positions: the only ``import yaml`` in op25b.

The policy file is *composed* (not loaded) so every value keeps its YAML mark, and
every read here is typed and strict: plain decimal integers only (YAML 1.1 reads
``025`` as 21), ``true``/``false`` only (``yes``/``no`` mean different things to
different YAML versions), no merge keys, no custom tags, duplicate keys refused.
What a value *means* in a policy is ``op25b.policy.loader``'s business.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from op25b.policy.model import Location
from op25b.policy.problems import PolicyError, PolicyWarning

__all__ = ["Node", "NodeReader", "compose", "is_null", "kind", "start"]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP = (
    _TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP, _SEQ = _TAG + "map", _TAG + "seq"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP})

# Only plain decimal integers: YAML 1.1 reads 025 as octal 21 and 1:05 as 65, which in
# a port list is a trap, not a feature.
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FINITE_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_TIMESTAMP_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def compose(text: str, source: str) -> Node:
    """The document's root node; any YAML complaint is a PolicyError with its place."""
    return _compose(text, source)


def is_null(node: Node) -> bool:
    """True for an empty value (``key:`` with nothing after it, or ``null``)."""
    return isinstance(node, ScalarNode) and node.tag == _NULL


def start(node: Node) -> tuple[int, int]:
    """1-based (line, column) where a node starts."""
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def kind(node: Node) -> str:
    """How a node reads in an error message: 'a list', "a string ('25')"."""
    return _kind(node)


def _compose(text: str, source: str) -> Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(source, mark.line + 1, mark.column + 1) if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        context = ""
        if exc.context and exc.problem and exc.context_mark is not None:
            started = Location(source, exc.context_mark.line + 1, exc.context_mark.column + 1)
            context = f" ({exc.context} at {started})"
        raise PolicyError(where, "", f"invalid YAML: {problem}{context}") from None
    except yaml.reader.ReaderError as exc:
        # The reader counts characters; turn the offset into a line and column.
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise PolicyError(
            Location(source, line, col), "", f"invalid YAML: unacceptable character {shown}"
        ) from None
    except yaml.YAMLError as exc:  # any other PyYAML complaint, still bad input
        raise PolicyError(Location(source, 1, 1), "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise PolicyError(Location(source, 1, 1), "", "invalid YAML: nested too deeply") from None
    if root is None:
        raise PolicyError(Location(source, 1, 1), "", "empty policy (expected a mapping)")
    return root


def _kind(node: Node) -> str:
    """How a node reads in an error message: 'a list', "a string ('25')"."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag, value = node.tag, node.value
    if tag == _STR:
        return f"a string ({value!r})"
    if tag == _INT:
        return f"an integer ({value})"
    if tag == _FLOAT:
        return f"a number ({value})"
    if tag == _BOOL:
        return f"a boolean ({value})"
    if tag == _NULL:
        return "nothing (null)"
    if tag == _TIMESTAMP:
        return f"a date ({value})"
    return f"a value tagged {tag}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class NodeReader:
    """Typed, located reads of composed YAML nodes; every complaint is a PolicyError.

    The loader's section checks build on these; warnings are collected in ``warnings``.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[PolicyWarning] = []


    def loc(self, node: Node) -> Location:
        mark = node.start_mark
        return Location(self.source, mark.line + 1, mark.column + 1)

    def fail(self, node: Node, path: str, message: str) -> NoReturn:
        self.fail_at(self.loc(node), path, message)

    def warn(self, node: Node, path: str, message: str) -> None:
        self.warn_at(self.loc(node), path, message)

    # by location, for the checks that no longer hold a node (op25b.policy.overlap)
    def fail_at(self, where: Location, path: str, message: str) -> NoReturn:
        raise PolicyError(where, path, message)

    def warn_at(self, where: Location, path: str, message: str) -> None:
        self.warnings.append(PolicyWarning(where, path, message))

    def check_tag(self, node: Node, path: str) -> None:
        expected = _MAP if isinstance(node, MappingNode) else _SEQ
        if isinstance(node, ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self.fail(node, path, f"unsupported YAML tag {node.tag!r}")
        elif node.tag != expected:
            self.fail(node, path, f"unsupported YAML tag {node.tag!r}")

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: tuple[str, ...] | None,
        required: tuple[str, ...] = (),
    ) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping node -> (key node, value node); duplicates are errors."""
        self.check_tag(node, path)
        if not isinstance(node, MappingNode):
            self.fail(node, path, f"expected a mapping, got {_kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            name = self.key_text(key_node, path)
            if name in out:
                first = self.loc(out[name][0])
                self.fail(key_node, _join(path, name), f"duplicate key {name!r} (first at {first})")
            if allowed is not None and name not in allowed:
                self.fail(
                    key_node,
                    _join(path, name),
                    f"unknown key {name!r} (allowed: {', '.join(allowed)})",
                )
            out[name] = (key_node, value_node)
        for name in required:
            if name not in out:
                self.fail(node, path, f"missing required key {name!r}")
        return out

    def key_text(self, node: Node, path: str) -> str:
        if not isinstance(node, ScalarNode):
            self.fail(node, path, f"keys must be plain names, got {_kind(node)}")
        if node.tag == _TAG + "merge":
            self.fail(node, path, "merge keys ('<<') are not supported; write the keys out")
        if node.tag not in (_STR, _INT):
            self.fail(node, path, f"keys must be plain names, got {_kind(node)}")
        return str(node.value)

    def sequence(self, node: Node, path: str, allow_null: bool = False) -> list[Node]:
        self.check_tag(node, path)
        if allow_null and isinstance(node, ScalarNode) and node.tag == _NULL:
            return []  # `key:` with every item commented out means "none"
        if not isinstance(node, SequenceNode):
            self.fail(node, path, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def scalar(self, node: Node, path: str, what: str) -> ScalarNode:
        self.check_tag(node, path)
        if not isinstance(node, ScalarNode):
            self.fail(node, path, f"expected {what}, got {_kind(node)}")
        return node

    def text(self, node: Node, path: str, what: str = "a string") -> str:
        """A free-text value, exactly as written (so ticket 01234 stays '01234')."""
        n = self.scalar(node, path, what)
        if n.tag in (_NULL, _BOOL):
            self.fail(node, path, f"expected {what}, got {_kind(n)}")
        value = str(n.value)
        if not value.strip():
            self.fail(node, path, f"expected {what}, got an empty string")
        return value

    def integer(self, node: Node, path: str, lo: int, hi: int | None = None) -> int:
        n = self.scalar(node, path, "an integer")
        if n.tag != _INT:
            self.fail(node, path, f"expected an integer, got {_kind(n)}")
        if not _DECIMAL.fullmatch(n.value):
            self.fail(node, path, f"write integers in plain decimal, got {n.value!r}")
        if len(n.value) > 20:  # int() refuses 4300+ digits; nothing here needs 20
            self.fail(node, path, f"{n.value[:20]}... is out of range")
        value = int(n.value)
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.fail(node, path, f"{value} is out of range ({bound})")
        return value

    def positive_number(self, node: Node, path: str) -> float:
        n = self.scalar(node, path, "a number")
        if n.tag == _INT:
            value = float(self.integer(node, path, lo=-(2**63)))
        elif n.tag == _FLOAT and _FINITE_FLOAT.fullmatch(n.value):
            value = float(n.value)
        elif n.tag == _FLOAT:
            self.fail(node, path, f"expected a plain finite number, got {n.value!r}")
        else:
            self.fail(node, path, f"expected a number, got {_kind(n)}")
        if not (value > 0 and math.isfinite(value)):
            self.fail(node, path, f"must be a number > 0, got {n.value}")
        return value

    def boolean(self, node: Node, path: str) -> bool:
        n = self.scalar(node, path, "true or false")
        if n.tag != _BOOL:
            hint = (
                "; remove the quotes"
                if n.tag == _STR and n.value.lower() in {"true", "false"}
                else ""
            )
            self.fail(node, path, f"expected true or false, got {_kind(n)}{hint}")
        word = str(n.value).lower()
        if word not in ("true", "false"):
            # yes/no/on/off are booleans in YAML 1.1 but strings in YAML 1.2; a policy
            # must mean the same thing to every tool that reads it.
            self.fail(node, path, f"ambiguous boolean {n.value!r}: write true or false")
        return word == "true"

    def choice(self, node: Node, path: str, choices: tuple[str, ...]) -> str:
        allowed = " | ".join(choices)
        n = self.scalar(node, path, f"one of {allowed}")
        if n.tag != _STR or n.value not in choices:
            self.fail(node, path, f"expected one of {allowed}, got {_kind(n)}")
        return str(n.value)

    def expires(self, node: Node, path: str) -> datetime:
        """A date (active through that UTC day) or a timestamp with a timezone.

        A naive timestamp is an error rather than silently UTC: an audit trail should
        not depend on which timezone the reader assumed.
        """
        n = self.scalar(node, path, "a date")
        value = str(n.value)
        regexp = _TIMESTAMP_CONSTRUCTOR.timestamp_regexp
        if n.tag not in (_TIMESTAMP, _STR) or not regexp.match(value):
            self.fail(
                node,
                path,
                f"expected a date (YYYY-MM-DD) or a timestamp with a timezone, got {_kind(n)}",
            )
        try:
            parsed = _TIMESTAMP_CONSTRUCTOR.construct_yaml_timestamp(
                ScalarNode(_TIMESTAMP, value, n.start_mark, n.end_mark)
            )
        except (ValueError, OverflowError):
            self.fail(node, path, f"not a valid date: {value!r}")
        if isinstance(parsed, datetime):
            if parsed.tzinfo is None:
                self.fail(
                    node,
                    path,
                    f"timestamp without a timezone: {value!r}; add Z or +HH:MM, or give a date",
                )
            try:
                return parsed.astimezone(UTC)
            except (ValueError, OverflowError):
                # A real time, but in UTC before year 1 or after 9999.
                self.fail(node, path, f"out of range: {value!r} is outside years 1-9999 in UTC")
        return _end_of_day(parsed)


def _end_of_day(day: date) -> datetime:
    """A date means 'active through that UTC day': it expires at the next midnight."""
    try:
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    except OverflowError:  # 9999-12-31: never expires in practice
        return datetime.max.replace(tzinfo=UTC)
