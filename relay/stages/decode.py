"""Request body -> records: the pure decode stage (no I/O).

    decode_body(body, content_type=..., content_encoding=..., max_size=...) -> Decoded

1. Content-Type picks a family (JSON, MessagePack, text, or "generic" to sniff); a type
   that is clearly something else is a 415 before any work is done.
2. Content-Encoding layers are undone by `relay.stages.compression`, each bounded by `max_size`
   while it inflates, so a compression bomb costs at most `max_size` bytes of memory.
3. The bytes become records. One bad record (an NDJSON line, a json_stream object,
   a MessagePack event) is a `Rejection`; only a body where nothing decodes is a 400.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

import msgpack
import msgspec

from relay.errors import BadRequest, UnsupportedMedia
from relay.models import Decoded, Rejection
from relay.stages.compression import decompress_whole

_JSON = msgspec.json.Decoder()
# Invalid UTF-8 comes as DecodeError or UnicodeDecodeError (by msgspec version); deep nesting as RecursionError.
_JSON_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_EVENT_TIME = struct.Struct(">II")

_BOM = b"\xef\xbb\xbf"
_NON_SPACE = re.compile(rb"\S")
_BYTE_AT = re.compile(r"\(byte (\d+)\)")
# First bytes of a MessagePack stream of events (a 2-item fixarray, array16/32) or of bare
# records (fixmap, map16/32). None of them can start JSON or UTF-8 text.
_MSGPACK_FIRST = frozenset([*range(0x80, 0x90), 0x92, 0xDC, 0xDD, 0xDE, 0xDF])

_KINDS = {
    **dict.fromkeys(("application/json", "text/json", "application/x-json"), "json"),
    **dict.fromkeys((
        "application/x-ndjson", "application/ndjson", "application/jsonlines", "application/jsonl",
        "application/x-jsonlines", "application/json-lines", "application/x-json-stream",
        "application/stream+json"), "lines"),
    "application/json-seq": "json-seq",
    **dict.fromkeys(("application/msgpack", "application/x-msgpack", "application/vnd.msgpack"), "msgpack"),
    "text/plain": "text",
    # What clients send when nobody set a type: curl and libcurl users (syslog-ng's http()
    # destination) default to form-urlencoded for a POST body.
    **dict.fromkeys(("", "*/*", "application/octet-stream", "application/x-www-form-urlencoded"), "generic"),
}


def decode_body(
    body: bytes, *, content_type: str | None, content_encoding: str | None, max_size: int
) -> Decoded:
    """Turn one request body into records; raise an IngestError the client can act on."""
    kind, data, _ = inflate(body, content_type=content_type, content_encoding=content_encoding, max_size=max_size)
    return decode_data(kind, data)


def inflate(body: bytes, *, content_type: str | None, content_encoding: str | None,
            max_size: int) -> tuple[str, bytes, bool]:
    """Steps 1 and 2: (the Content-Type's family, the decompressed bytes without a BOM, and
    whether `body` is one gzip member of those bytes as they are: compression.decompress_whole)."""
    kind = _media_kind(content_type)
    data, whole = decompress_whole(body, content_encoding, max_size)
    if data.startswith(_BOM):  # Windows tools write one; JSON parsers reject it
        data, whole = data[3:], False
    return kind, data, whole


def decode_data(kind: str, data: bytes) -> Decoded:
    """Step 3: the bytes `inflate` gave -> records."""
    if kind == "text":
        return _decode_text(data)
    if kind == "json-seq":  # RFC 7464: each record is led by an RS byte
        data, kind = data.replace(b"\x1e", b"\n"), "lines"
    found = _NON_SPACE.search(data)
    if found is None:
        return Decoded(records=[], format="msgpack" if kind == "msgpack" else "json")
    if data[0] in _MSGPACK_FIRST:
        return _decode_msgpack(data)
    first = data[found.start()]
    if first in b"[{" or kind in ("json", "lines"):
        return _decode_json(data, first=first, lines=kind == "lines")
    if kind == "msgpack":
        return _decode_msgpack(data)
    try:  # no useful Content-Type, and not JSON or MessagePack: text, if it is text at all
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedMedia(
            f"body is not JSON, MessagePack or UTF-8 text (it starts with {data[:8].hex(' ')}); "
            "set its Content-Type and Content-Encoding"
        ) from None
    return _decode_text(data)


def _media_kind(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind = _KINDS.get(media)
    if kind is None and media.startswith("application/") and media.endswith("+json"):
        kind = "json"  # application/ld+json, application/vnd.api+json, ...
    if kind is None:
        raise UnsupportedMedia(
            f"Content-Type {media!r} is not supported; send application/json, "
            "application/x-ndjson, application/msgpack or text/plain"
        )
    return kind


# --- JSON family ------------------------------------------------------------------------


class _Kept:
    """Records kept and rejected, in body order: what Decoded needs when some are bad."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.errors: list[Rejection] = []
        self.indexes: list[int] = []
        self.bad: list[Any] = []

    def keep(self, value: Any) -> None:
        self.indexes.append(len(self.records) + len(self.errors))
        self.records.append(value)

    def reject(self, reason: str, message: str, bad: Any = None) -> None:
        index = len(self.records) + len(self.errors)
        self.errors.append(Rejection(index=index, field=None, reason=reason, message=message))
        self.bad.append(bad)

    def result(self, fmt: str, what: str) -> Decoded:
        if not self.errors:
            return Decoded(records=self.records, format=fmt)
        if not self.records:
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise BadRequest(f"no record could be decoded from the {what} body: "
                             f"{self.errors[0].message}{more}")
        return Decoded(records=self.records, format=fmt, errors=self.errors, indexes=self.indexes, bad=self.bad)


def _decode_json(data: bytes, *, first: int, lines: bool) -> Decoded:
    result = _decode_json_values(data, first=first, lines=lines)
    head = result.records[0] if result.records else None
    if type(head) is dict and "short_message" in head and "version" in head:
        result.format = "gelf"  # Fluent Bit's `format gelf`: plain JSON objects, GELF keys
    return result


def _decode_json_values(data: bytes, *, first: int, lines: bool) -> Decoded:
    problem = None
    if not lines or first == ord("["):
        try:
            value = _JSON.decode(data)
        except _JSON_ERRORS as exc:
            problem = exc
        else:
            if type(value) is list:
                return Decoded(records=value, format="json")
            return Decoded(records=[value], format="json_object" if type(value) is dict else "json")
    if problem is not None and first == ord("[") and not lines:
        # One array is one document: past a syntax error nothing says where records start.
        raise BadRequest(f"body is not valid JSON: {_json_problem(problem, data)}")
    # Several values: decode_lines reads values separated by any whitespace or by
    # nothing at all, so NDJSON and json_stream (`}{`) both decode in one call.
    try:
        values = _JSON.decode_lines(data)
    except _JSON_ERRORS:  # some record is bad: find which, keep the others
        if b"\n" in data:
            return _per_line(data).result("ndjson", "JSON")
        return _per_object(data).result("json_stream", "JSON")
    fmt = "ndjson" if lines or b"\n" in data.rstrip() else "json_stream"
    return Decoded(records=values, format=fmt)


def _per_line(data: bytes) -> _Kept:
    kept, start = _Kept(), 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if line and not line.isspace():
            try:
                for value in _JSON.decode_lines(line):  # a line may hold `{..}{..}` too
                    kept.keep(value)
            except _JSON_ERRORS as exc:
                problem = _json_problem(exc, line, start)
                kept.reject("invalid_json", f"line {line_no} is not valid JSON: {problem}", line)
        start += len(line) + 1
    return kept


def _per_object(data: bytes) -> _Kept:
    """json_stream: cut at `}{`; a piece that stops inside a string joins the next one."""
    ends: list[int] = []
    at = data.find(b"}{")
    while at >= 0:
        ends.append(at + 1)
        at = data.find(b"}{", at + 1)
    ends.append(len(data))
    view, kept = memoryview(data), _Kept()
    # Re-joining re-reads the growing piece; cap the total so `}{`-stuffed strings stay linear.
    budget = 4 * len(data) + 65536
    start, k = 0, 0
    while k < len(ends):
        j = k
        while True:
            try:
                kept.keep(_JSON.decode(view[start : ends[j]]))
            except _JSON_ERRORS as exc:
                budget -= ends[j] - start
                if "truncated" in str(exc) and j + 1 < len(ends) and budget > 0:
                    j += 1
                    continue
                problem = _json_problem(exc, data[start : ends[k]], start)
                kept.reject("invalid_json", f"object at byte {start} is not valid JSON: {problem}",
                            data[start : ends[k]])
                j = k
            break
        start, k = ends[j], j + 1
    return kept


def _json_problem(exc: BaseException, data: bytes, base: int = 0) -> str:
    """Why `data` is not JSON, with a byte offset in the whole body (`base`: where data starts).

    The location is the relay's promise, not the JSON library's: where the library gives an
    offset it is moved into the body; where it gives none (msgspec's invalid UTF-8, truncated
    input), the relay finds the place itself.
    """
    if isinstance(exc, RecursionError):
        return "JSON is nested too deeply"
    text = str(exc)
    if not isinstance(exc, UnicodeDecodeError) and _BYTE_AT.search(text):
        return _BYTE_AT.sub(lambda m: f"(body byte {base + int(m[1])})", text)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"invalid UTF-8 at body byte {base + bad.start}"
    if "truncated" in text:
        return f"JSON is cut short: it ends at body byte {base + len(data)} inside a value"
    return f"JSON is malformed between body bytes {base} and {base + len(data)}: {text}"


# --- text ---------------------------------------------------------------------------------


def _decode_text(data: bytes) -> Decoded:
    """Vector's `codec = "text"`: a message per line; a line that is a JSON object stays one."""
    records: list[Any] = []
    all_json = True
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line or line.isspace():
            continue
        record = _json_object(line) if line.lstrip()[:1] == b"{" else None
        if record is None:
            # Logs carry stray bytes (nginx escapes some, not all); keep the line readable.
            record, all_json = {"message": line.decode("utf-8", "replace")}, False
        records.append(record)
    return Decoded(records=records, format="ndjson" if records and all_json else "text")


def _json_object(line: bytes) -> Any:
    try:
        value = _JSON.decode(line)
    except _JSON_ERRORS:
        return None
    return value if type(value) is dict else None


# --- MessagePack ----------------------------------------------------------------------------


def _ext_hook(code: int, payload: bytes) -> Any:
    if code == 0 and len(payload) == 8:  # Fluent Bit EventTime: uint32 s, uint32 ns
        seconds, nanos = _EVENT_TIME.unpack(payload)
        return seconds + nanos / 1e9
    return payload  # an unknown extension: keep its bytes rather than fail the body


def _decode_msgpack(data: bytes) -> Decoded:
    """Fluent Bit's chunk: events back to back, `[[time, meta], record]` or `[time, record]`."""
    unpacker = msgpack.Unpacker(
        raw=False, ext_hook=_ext_hook, timestamp=1, strict_map_key=False,
        # Replacing bad UTF-8 keeps one stray byte in a log line from losing the rest.
        unicode_errors="replace", max_buffer_size=max(len(data), 1),
    )
    unpacker.feed(data)
    kept, pos = _Kept(), 0
    try:
        for event in unpacker:
            record = _event_record(event)
            if record is None:
                shape = f"an array of {len(event)}" if type(event) is list else f"a {type(event).__name__}"
                kept.reject("invalid_event", f"event at byte {pos} is {shape}; expected "
                            "[[time, metadata], record], [time, record] or a map", event)
            else:
                kept.keep(record)
            pos = unpacker.tell()
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        kept.reject("invalid_msgpack", f"MessagePack is malformed in the event at byte {pos}, "
                    f"the rest was not read: {exc}")
    else:
        if pos < len(data):  # the iterator stops quietly at a cut-off event
            kept.reject("invalid_msgpack", f"the MessagePack event at byte {pos} is truncated")
    return kept.result("msgpack", "MessagePack")


def unwrap_event(event: Any) -> tuple[Any, Any]:
    """A Fluent Bit event `[[time, meta], record]` or `[time, record]` -> (record, time);
    a bare map -> (map, None); anything else -> (None, None)."""
    if isinstance(event, Mapping):
        return event, None
    if (event.__class__ is list or event.__class__ is tuple) and len(event) == 2 and isinstance(event[1], Mapping):
        head = event[0]
        if head.__class__ is list or head.__class__ is tuple:
            head = head[0] if head else None
        return event[1], head
    return None, None


def _event_record(event: Any) -> dict[Any, Any] | None:
    record, stamp = unwrap_event(event)
    if record is event and type(event) is dict:  # a bare record (Fluentd's msgpack formatter)
        return event
    if type(record) is not dict or type(stamp) not in (int, float):
        return None
    if "date" in record:
        return record
    # Same shape as Fluent Bit's json output: the event time is the first key, `date`.
    return {"date": float(stamp), **record}

