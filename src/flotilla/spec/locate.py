"""Where each value of a spec came from, and the collector of problems that uses it.

Validation works on plain data (dicts, lists, scalars) so that a spec read
from YAML and a spec received as JSON go through the same rules. What differs
is only how a problem is positioned: YAML values have a line and column,
JSON values have none (line 0, column 0). The Locator hides that difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.errors import Problem

Path = tuple[str | int, ...]
Position = tuple[int, int]
NOWHERE: Position = (0, 0)


def dotted(path: Path) -> str:
    """``('services', 'web', 'routes', 1, 'host')`` -> ``services.web.routes.1.host``.

    A key a user wrote with a control character or a lone surrogate is shown
    quoted (``services.'w\\x00'.image``), so a problem is always one line that
    a terminal or a log can print.
    """
    return ".".join(_shown(str(part)) for part in path)


def _shown(part: str) -> str:
    return part if part.isprintable() else repr(part)


@dataclass(frozen=True)
class Loc:
    """Positions (1-based line, column) of one value's key and of the value itself."""

    key: Position
    value: Position
    raw: str | None = None  # the scalar's text as written (after interpolation)


class Locator:
    """Path -> Loc; a path that is absent (a missing key) borrows its parent's key position."""

    def __init__(self) -> None:
        self._locs: dict[Path, Loc] = {}

    def record(self, path: Path, loc: Loc) -> None:
        self._locs[path] = loc

    def position(self, path: Path, *, key: bool = False) -> Position:
        loc = self._locs.get(path)
        if loc is not None:
            return loc.key if key else loc.value
        for end in range(len(path) - 1, -1, -1):
            parent = self._locs.get(path[:end])
            if parent is not None:
                return parent.key
        return NOWHERE

    def exact(self, path: Path) -> Position | None:
        """The value's own position, None when ``path`` was not written (no parent's borrowed)."""
        loc = self._locs.get(path)
        return None if loc is None else loc.value

    def raw(self, path: Path) -> str | None:
        loc = self._locs.get(path)
        return None if loc is None else loc.raw


class Reporter:
    """Collects every problem of one spec, positioned through a Locator."""

    def __init__(self, *, file: str, locator: Locator | None = None) -> None:
        self.file = file
        self.locator = locator or Locator()
        self.problems: list[Problem] = []
        self._unresolved: set[Path] = set()

    def add(self, path: Path, message: str, hint: str = "", *, key: bool = False) -> None:
        """Report a problem at the value of ``path`` (or at its key, with ``key=True``)."""
        if not key and path in self._unresolved:
            return  # its broken ${VAR} was reported already; don't pile on
        line, column = self.locator.position(path, key=key)
        self.problems.append(Problem(self.file, line, column, dotted(path), message, hint))

    def add_at(self, position: Position, path: Path, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.file, *position, dotted(path), message, hint))

    def mark_unresolved(self, path: Path) -> None:
        """The value at ``path`` has an interpolation problem: skip further complaints about it."""
        self._unresolved.add(path)

    def where(self, path: Path) -> str:
        """`` (flotilla.yaml:12:9)`` for cross-references in messages; empty without positions."""
        line, column = self.locator.position(path)
        return f" ({self.file}:{line}:{column})" if line else ""

    def count(self) -> int:
        return len(self.problems)

    def sorted_problems(self) -> list[Problem]:
        unique = list(dict.fromkeys(self.problems))
        return sorted(unique, key=lambda p: (p.line, p.column))
