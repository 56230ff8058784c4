"""Source paths: where in a record (or its request) a value is read from.

Syntax:
- `a.b.c`: nested objects; a bare segment is anything but `.`, `[` and quotes,
  so dashes are fine (`req.headers.user-agent`);
- `a."b.c"`, `a['b.c']`, `a["User-Agent"]`: keys that contain dots or anything else;
- `a[0]`, `a[-1]`: array elements; an array met where a key is expected, or at
  the end of the path, stands for its first element (Caddy's header arrays);
- a bare dotted path also matches flattened keys (`http.request.method` finds
  `{"http": {"request": {"method": ...}}}`, `{"http.request.method": ...}` and
  `{"http": {"request.method": ...}}`), as ECS and OTel records come both ways;
  compiled mappers walk the nested objects and fall back to the fully flattened
  key; the other splits are tried when the walk meets something that is not
  an object or misses a key on the way (`resolve` tries every split);
- `$tag`: the Fluent Bit tag (`header_tag`); `$header.Host` / `$header["X-Real-IP"]`:
  a header of the ingest request (case-insensitive); `$time`: the event time of
  a MessagePack event `[[time, meta], record]`; `$line.timestamp` (any target
  field): what the mapping's `line` parser found for that field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

SPECIALS = ("$tag", "$time", "$header", "$line")


class Path(NamedTuple):
    text: str  # as written
    kind: str  # "record", "tag", "header", "time", "line"
    steps: tuple[str | int, ...]
    joinable: bool  # every step was a bare word: flattened dotted keys may match too

    @property
    def simple(self) -> bool:
        """One plain key of the record: compiled to a single `record.get(key)`."""
        return self.kind == "record" and len(self.steps) == 1 and self.steps[0].__class__ is str


def parse_path(text: str) -> Path:
    """Parse the path syntax above; raises ValueError with what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a source path must be a non-empty string, got {text!r}")
    text = text.strip()
    steps, bare = _split(text)
    head = steps[0]
    if isinstance(head, str) and head.startswith("$") and bare[0]:
        if head in ("$tag", "$time"):
            if len(steps) > 1:
                raise ValueError(f"{head} has no fields: {text!r}")
            return Path(text, head[1:], (), False)
        if head == "$line":
            if len(steps) != 2 or not isinstance(steps[1], str):
                raise ValueError(f"name one field of the line: $line.timestamp, got {text!r}")
            return Path(text, "line", (steps[1],), False)
        if head == "$header":
            if len(steps) != 2 or not isinstance(steps[1], str):
                raise ValueError(f'name one header: $header.Host or $header["X-Real-IP"], got {text!r}')
            return Path(text, "header", (steps[1],), False)
        raise ValueError(f"unknown special source {head!r}: use one of {', '.join(SPECIALS)}")
    return Path(text, "record", tuple(steps), all(bare) and len(steps) > 1)


def _split(text: str) -> tuple[list[str | int], list[bool]]:
    steps: list[str | int] = []
    bare: list[bool] = []
    i, n = 0, len(text)
    expect_key = True  # at the start or after a dot
    while i < n:
        ch = text[i]
        if ch == "[":
            end = text.find("]", i)
            inner = text[i + 1 : end].strip() if end > 0 else ""
            if end < 0 or not inner:
                raise ValueError(f"unclosed or empty [...] in {text!r}")
            if inner[0] in "\"'":
                if len(inner) < 2 or inner[-1] != inner[0]:
                    raise ValueError(f"unclosed quote in {text!r}")
                steps.append(inner[1:-1])
            else:
                try:
                    steps.append(int(inner))
                except ValueError:
                    raise ValueError(f'[{inner}] in {text!r}: use [0] for an index or ["key"] for a key') from None
            bare.append(False)
            i, expect_key = end + 1, False
        elif ch == ".":
            if expect_key:
                raise ValueError(f"empty segment in {text!r}")
            i, expect_key = i + 1, True
        elif not expect_key:
            raise ValueError(f"expected '.' or '[' at position {i} of {text!r}")
        elif ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                raise ValueError(f"unclosed quote in {text!r}")
            steps.append(text[i + 1 : end])
            bare.append(False)
            i, expect_key = end + 1, False
        else:
            end = i
            while end < n and text[end] not in ".[\"'":
                end += 1
            steps.append(text[i:end])
            bare.append(True)
            i, expect_key = end, False
    if expect_key:
        raise ValueError(f"path ends with '.': {text!r}")
    return steps, bare


def resolve(value: Any, steps: tuple[str | int, ...], joinable: bool, start: int = 0) -> Any:
    """Walk `steps` from `value`; None when something is missing. Arrays stand for their first element."""
    count = len(steps)
    i = start
    while i < count:
        step = steps[i]
        if value.__class__ is list or value.__class__ is tuple:
            if step.__class__ is int:
                try:
                    value = value[step]
                except IndexError:
                    return None
                i += 1
                continue
            if not value:
                return None
            value = value[0]
            continue
        if not isinstance(value, Mapping) or step.__class__ is int:
            return None
        found = value.get(step)
        if joinable and i + 1 < count:  # backtracking: nested first, then flattened keys, longest first
            if found is not None:
                found = resolve(found, steps, joinable, i + 1)
                if found is not None:
                    return found
            for j in range(count, i + 1, -1):
                key = ".".join(steps[i:j])  # type: ignore[arg-type]
                if key in value:
                    found = resolve(value[key], steps, joinable, j) if j < count else _first(value[key])
                    if found is not None:
                        return found
            return None
        if found is None:
            return None
        value = found
        i += 1
    return _first(value)


def _first(value: Any) -> Any:
    while value.__class__ is list or value.__class__ is tuple:
        if not value:
            return None
        value = value[0]
    return value


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A request header by name, case-insensitively, whatever mapping type carries them."""
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, item in headers.items():
            if key.lower() == lower:
                return item
    return value
