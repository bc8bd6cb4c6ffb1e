"""Read YAML text into plain data while remembering where every value came from.

``yaml.safe_load`` forgets line numbers, silently keeps the last of two
duplicate keys and reads ``on``/``yes`` keys as booleans. Flotilla's errors must
point at the offending line, so we compose the text into PyYAML nodes and walk
them ourselves: the walk yields plain data (dicts, lists, scalars) and records
each path's key and value position in the Reporter's Locator. ``${VAR}``
interpolation happens here, on every string scalar, so its problems carry the
scalar's position. Keys are never interpolated and are always their text.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from flotilla.spec.interpolate import interpolate
from flotilla.spec.locate import Loc, Path, Position, Reporter

MAX_DEPTH = 32
MAX_NODES = 100_000

_TAG = "tag:yaml.org,2002:"
MAP, SEQ, STR, MERGE = _TAG + "map", _TAG + "seq", _TAG + "str", _TAG + "merge"
_TEXT_TAGS = {STR, _TAG + "timestamp", _TAG + "binary"}  # kept as written
_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_BUILDERS = {
    _TAG + "int": _CONSTRUCTOR.construct_yaml_int,
    _TAG + "float": _CONSTRUCTOR.construct_yaml_float,
    _TAG + "bool": _CONSTRUCTOR.construct_yaml_bool,
    _TAG + "null": lambda node: None,
}
_TYPE_NAMES = {_TAG + "int": "an integer", _TAG + "float": "a number", _TAG + "bool": "a boolean"}


class _TooLarge(Exception):
    """The walk visited more than MAX_NODES values (an alias bomb, most likely)."""


def read_yaml(text: str, *, reporter: Reporter, variables: Mapping[str, str]) -> tuple[object, bool]:
    """Return ``(data, found)``; ``found`` is False for an empty or unreadable document."""
    root = _compose(text, reporter=reporter)
    if root is None:
        return None, False
    start = _pos(root)
    try:
        data = _Walker(reporter=reporter, variables=variables).value(root, (), start)
    except _TooLarge:
        reporter.add_at(start, (), f"the spec is too large (more than {MAX_NODES} values, "
                        "counting every use of an alias)", "shorten it; avoid aliases of aliases")
        return None, False
    return data, True


def _pos(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _compose(text: str, *, reporter: Reporter) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        _syntax_problem(exc, reporter=reporter)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        reporter.add_at((line, column), (), f"invalid character {exc.character!r} in the spec",
                        "remove it: a spec is printable text")
    except RecursionError:
        reporter.add_at((1, 1), (), f"the spec is nested too deeply (more than {MAX_DEPTH} levels)",
                        "a spec is only a few levels deep: check the brackets and indentation")
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors
        reporter.add_at((1, 1), (), f"invalid YAML: {exc}", "fix the YAML syntax")
    return None


def _syntax_problem(exc: yaml.MarkedYAMLError, *, reporter: Reporter) -> None:
    mark = exc.problem_mark or exc.context_mark
    position = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = "invalid YAML: " + ", ".join(part for part in (exc.context, exc.problem) if part)
    if exc.context_mark and mark and exc.context_mark.line != mark.line:
        message += f" (started on line {exc.context_mark.line + 1})"
    reporter.add_at(position, (), message, _syntax_hint(message))


def _syntax_hint(message: str) -> str:
    if "'\\t'" in message:
        return "indent with spaces, not tabs"
    if "another document" in message:
        return "keep one document per file: remove the second '---'"
    return "check the indentation, colons and quotes around this position"


class _Walker:
    """One walk over a node tree; guards against alias bombs, recursion and depth."""

    def __init__(self, *, reporter: Reporter, variables: Mapping[str, str]) -> None:
        self.rep = reporter
        self.variables = variables
        self.visited = 0
        self.active: set[int] = set()

    def value(self, node: Node, path: Path, key_pos: Position) -> object:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _TooLarge
        if id(node) in self.active or len(path) > MAX_DEPTH:
            return self._refuse(node, path)
        self.active.add(id(node))
        try:
            result, raw = self._convert(node, path)
        finally:
            self.active.discard(id(node))
        self.rep.locator.record(path, Loc(key_pos, _pos(node), raw))
        return result

    def _refuse(self, node: Node, path: Path) -> None:
        if id(node) in self.active:
            self.rep.add_at(_pos(node), path, "an alias refers to a value that contains it",
                            "remove the recursive alias")
        else:
            self.rep.add_at(_pos(node), path, f"nested too deeply (more than {MAX_DEPTH} levels)",
                            "a spec is only a few levels deep: check the indentation")
        self.rep.mark_unresolved(path)

    def _convert(self, node: Node, path: Path) -> tuple[object, str | None]:
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if node.tag not in (MAP, SEQ):
            self._unsupported_tag(node, path)
        if isinstance(node, MappingNode):
            return self._mapping(node, path), None
        return [self.value(item, path + (index,), _pos(item))
                for index, item in enumerate(node.value)], None

    def _mapping(self, node: MappingNode, path: Path) -> dict:
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                self._merge(value_node, path, result)
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = None if key_node.tag == MERGE else self._key(key_node, path)
            if key is None:
                continue
            if key in first_lines:
                self._duplicate(key_node, path + (key,), first_line=first_lines[key])
                continue
            first_lines[key] = _pos(key_node)[0]
            result[key] = self.value(value_node, path + (key,), _pos(key_node))
        return result

    def _merge(self, source: Node, path: Path, result: dict) -> None:
        """``<<: *base`` (or a list of them): copy keys that are not there yet."""
        sources = source.value if isinstance(source, SequenceNode) else [source]
        for item in sources:
            if not isinstance(item, MappingNode):
                self.rep.add_at(_pos(item), path, "'<<' can only merge mappings",
                                "merge an alias of a mapping: <<: *name")
                continue
            merged = self.value(item, path, _pos(item))
            for key, value in (merged or {}).items():
                result.setdefault(key, value)

    def _key(self, node: Node, path: Path) -> str | None:
        if isinstance(node, ScalarNode):
            return node.value
        kind = "a mapping" if isinstance(node, MappingNode) else "a list"
        self.rep.add_at(_pos(node), path, f"a key must be a plain name, got {kind}",
                        "write the key as plain text")
        return None

    def _duplicate(self, node: Node, path: Path, *, first_line: int) -> None:
        self.rep.add_at(_pos(node), path, f"duplicate key {path[-1]!r} (first defined on line "
                        f"{first_line})", "remove one of them, or merge their contents")

    def _scalar(self, node: ScalarNode, path: Path) -> tuple[object, str]:
        if node.tag != STR:
            return self._construct(node, path), node.value
        text, issues = interpolate(node.value, self.variables)
        for issue in issues:
            self.rep.add_at(_pos(node), path, issue.message, issue.hint)
        if issues:
            self.rep.mark_unresolved(path)
        if issues or node.style is not None or "$" not in node.value:
            return text, text
        # A plain scalar such as ``port: ${PORT}`` takes the type of what it became.
        tag = _RESOLVER.resolve(ScalarNode, text, (True, False))
        return self._construct(ScalarNode(tag, text, node.start_mark, node.end_mark), path), text

    def _construct(self, node: ScalarNode, path: Path) -> object:
        if node.tag in _TEXT_TAGS:
            return node.value
        builder = _BUILDERS.get(node.tag)
        if builder is None:
            self._unsupported_tag(node, path)
            return node.value
        try:
            return builder(node)
        except (ValueError, LookupError, TypeError, OverflowError):
            self.rep.add_at(_pos(node), path, f"cannot read {node.value[:40]!r} as "
                            f"{_TYPE_NAMES.get(node.tag, 'a value')}",
                            "fix the value, or quote it to make it a string")
            self.rep.mark_unresolved(path)
            return node.value

    def _unsupported_tag(self, node: Node, path: Path) -> None:
        tag = "!!" + node.tag[len(_TAG):] if node.tag.startswith(_TAG) else node.tag
        self.rep.add_at(_pos(node), path, f"unsupported YAML tag {tag!r}",
                        "remove the tag: a spec holds plain mappings, lists and values")
        self.rep.mark_unresolved(path)
