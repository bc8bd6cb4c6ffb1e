"""Substitute ``${VAR}`` in spec strings and read the ``.env`` file beside a spec.

Configuration that differs between machines (URLs, image tags) stays out of
the spec file: the spec names a variable and the invoking environment or a
``.env`` file supplies it. Interpolation reports every unset or malformed
reference instead of silently substituting an empty string, because an empty
URL found at runtime is far harder to trace than an error at load time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from flotilla.errors import Problem

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^${}]*))?")
_SYNTAX_HINT = "write ${NAME} or ${NAME:-default}, and $$ for a literal $"


@dataclass(frozen=True)
class Issue:
    """Something wrong with one string's variable references."""

    message: str
    hint: str


def interpolate(text: str, variables: Mapping[str, str]) -> tuple[str, tuple[Issue, ...]]:
    """Expand ``${NAME}``, ``${NAME:-default}`` and ``$$``; a lone ``$`` stays as it is."""
    out: list[str] = []
    issues: list[Issue] = []
    index = 0
    while index < len(text):
        dollar = text.find("$", index)
        if dollar < 0 or dollar == len(text) - 1:
            out.append(text[index:])
            break
        out.append(text[index:dollar])
        index = _expand_at(text, dollar, variables=variables, out=out, issues=issues)
    return "".join(out), tuple(issues)


def _expand_at(text: str, dollar: int, *, variables: Mapping[str, str], out: list[str],
               issues: list[Issue]) -> int:
    """Expand the reference starting at ``text[dollar]``; return the index after it."""
    follower = text[dollar + 1]
    if follower == "$":
        out.append("$")
        return dollar + 2
    if follower != "{":
        out.append("$")
        return dollar + 1
    close = text.find("}", dollar)
    if close < 0:
        issues.append(Issue(f"unclosed variable reference {_clip(text[dollar:])}", _SYNTAX_HINT))
        return len(text)
    out.append(_resolve(text[dollar + 2:close], variables=variables, issues=issues))
    return close + 1


def _resolve(inner: str, *, variables: Mapping[str, str], issues: list[Issue]) -> str:
    match = _REFERENCE.fullmatch(inner)
    if match is None and "${" in inner:
        issues.append(Issue(f"nested variable reference {_clip('${' + inner + '}')}",
                            "nesting is not supported: " + _SYNTAX_HINT))
        return ""
    if match is None:
        issues.append(Issue(f"malformed variable reference {_clip('${' + inner + '}')}",
                            _SYNTAX_HINT))
        return ""
    name, default = match.group("name"), match.group("default")
    value = variables.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        issues.append(Issue(
            f"${{{name}}} is not set",
            f"export {name}, add {name}=... to .env beside the spec, "
            f"or give a default: ${{{name}:-value}}",
        ))
        return ""
    return value


def _clip(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_dotenv(text: str, *, filename: str) -> tuple[dict[str, str], tuple[Problem, ...]]:
    """Variables from ``KEY=VALUE`` lines; ``#`` comments, ``export`` and quotes allowed."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = _dotenv_line(line, filename=filename, number=number)
        if isinstance(parsed, Problem):
            problems.append(parsed)
        elif parsed is not None:
            values[parsed[0]] = parsed[1]
    return values, tuple(problems)


def _dotenv_line(line: str, *, filename: str, number: int) -> tuple[str, str] | Problem | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("export "):
        stripped = stripped[len("export "):].lstrip()
    column = len(line) - len(line.lstrip()) + 1
    key, sep, raw = stripped.partition("=")
    key = key.strip()
    if not sep or not ENV_NAME.fullmatch(key):
        return Problem(filename, number, column, key if sep else "",
                       "expected a line KEY=VALUE with KEY made of letters, digits and '_'",
                       "fix the line, or comment it out with #")
    value = _dotenv_value(raw.strip())
    if value is None:
        return Problem(filename, number, column, key, "the value's closing quote is missing",
                       "end the value with the same quote it starts with")
    return key, value


def _dotenv_value(raw: str) -> str | None:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = raw.find(quote, 1) if quote == "'" else _closing_double_quote(raw)
        if end < 0:
            return None
        body = raw[1:end]
        return body if quote == "'" else _unescape(body)
    comment = re.search(r"\s#", raw)
    return (raw[:comment.start()] if comment else raw).strip()


def _closing_double_quote(raw: str) -> int:
    index = 1
    while index < len(raw):
        if raw[index] == "\\":
            index += 2
            continue
        if raw[index] == '"':
            return index
        index += 1
    return -1


def _unescape(body: str) -> str:
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), body)
