"""`relay mock-upstream`: a local stand-in of the upstream custom-log API (SPEC §2).

It keeps the upstream's rules (key check, gzip or plain JSON array, at most 1,000
entries; the per-field table and the timestamp window are `relay.tools.upstream_rules`)
and misbehaves on demand.

    POST   /v1/logs/custom   the upstream endpoint
    GET    /healthz          200 once serving
    GET    /_mock/faults     the fault switches in force
    POST   /_mock/faults     merge a JSON object of switches into them
    DELETE /_mock/faults     clear every switch
    GET    /_mock/stats      request and entry counters

A POST goes: down -> latency -> read body (413) -> drop_rate -> status / error_rate
-> key (401) -> decode (400, 422; 413 over 1,000 entries) -> reject_field /
reject_marker (400) -> per-entry validation -> record -> 200.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import http
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any

import msgspec
import uvloop
from aiohttp import web
from isal import isal_zlib

from relay.tools.upstream_rules import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_FUTURE,
    DURATION_UNITS,
    Clock,
    parse_timestamp,
    validate_batch,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9099
LOGS_PATH = "/v1/logs/custom"
MAX_ENTRIES = 1000
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # bytes, compressed and decompressed alike

Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Switches that make the mock misbehave: flags at start, /_mock/faults at run time."""

    error_rate: Rate = 0.0
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | None = None
    status_rate: Rate = 1.0
    retry_after: Seconds | None = None
    latency: Seconds = 0.0
    down: bool = False
    drop_rate: Rate = 0.0
    reject_field: str | None = None
    reject_marker: str | None = None


# fault -> (flag type, metavar, help)
FAULT_FLAGS: dict[str, tuple[type, str, str]] = {
    "error_rate": (float, "FRACTION", "answer this fraction of requests 500 (nothing processed)"),
    "status": (int, "CODE", "answer this status (400..599: 429, 503, 413, ...), unprocessed"),
    "status_rate": (float, "FRACTION", "fraction of requests answered --status (default 1)"),
    "retry_after": (float, "SECONDS", "send Retry-After (rounded up) with injected 429 and 503"),
    "latency": (float, "SECONDS", "wait this long before handling each request"),
    "down": (bool, "", "abort every connection without answering"),
    "drop_rate": (float, "FRACTION", "abort this fraction of connections after the body"),
    "reject_field": (str, "FIELD", "answer 400 to a whole batch if an entry has this field"),
    "reject_marker": (str, "TEXT", "answer 400 to a whole batch if an entry's path has TEXT"),
}


class Stats(msgspec.Struct):
    requests: int = 0  # to LOGS_PATH, dropped ones included
    by_status: dict[str, int] = {}
    dropped: int = 0
    entries_accepted: int = 0
    entries_rejected: int = 0  # skipped as invalid within 200 answers
    max_batch: int = 0  # longest JSON array received
    gzip_requests: int = 0
    plain_requests: int = 0
    # time.monotonic() (CLOCK_MONOTONIC, one clock for every process here) of the last accepted
    # entries: `relay bench` times the end of a drain by it, not by when its polling noticed
    last_accepted_at: float = 0.0


class Refusal(Exception):
    """A whole-request answer other than 200: `{"detail": ...}` with this status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


# ---------------------------------------------------------------- request body and batch (pure)


def batch_refusal(entries: list[Any], faults: Faults) -> str | None:
    """Why the reject_field / reject_marker switches refuse this whole batch, if they do."""
    field, marker = faults.reject_field, faults.reject_marker
    for entry in (e for e in entries if isinstance(e, dict)):
        if field is not None and field in entry:
            return f"Batch refused: an entry has field {field!r}"
        path = entry.get("path")
        if marker and isinstance(path, str) and marker in path:
            return f"Batch refused: an entry's path contains {marker!r}"
    return None


def decode_entries(body: bytes, gzipped: bool, limit: int) -> list[Any]:
    if gzipped:
        body = gunzip(body, limit)
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Refusal(400, f"Invalid JSON body: {exc}") from None
    if not isinstance(value, list):
        raise Refusal(422, "Request body must be a JSON array of log entries")
    return value


def gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member decompressed; more than `limit` bytes of output is 413."""
    out = bytearray()
    while body:
        inflater = isal_zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(body, limit + 1 - len(out))
        except isal_zlib.error as exc:  # type: ignore[misc]  # isal ships no types
            raise Refusal(400, f"Invalid gzip body: {exc}") from None
        if len(out) > limit:
            raise Refusal(413, f"Decompressed body larger than {limit} bytes")
        if not inflater.eof:
            raise Refusal(400, "Invalid gzip body: truncated")
        body = inflater.unused_data
    return bytes(out)


# ---------------------------------------------------------------- the server


class MockState:
    def __init__(self, args: argparse.Namespace, faults: Faults) -> None:
        self.keys: list[bytes] = [key.encode() for key in args.api_key]
        self.clock = Clock(args.now, args.max_age, args.max_future)
        self.max_body: int = args.max_body
        self.verbose: bool = args.verbose
        self.record_path: str | None = args.record
        self.record: IO[bytes] | None = None
        self.faults = faults
        self.stats = Stats()
        self.rng = random.Random(args.seed)

    def key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        # Compare with every key, so the time taken does not tell which one matched.
        matches = [hmac.compare_digest(key.encode(), known) for known in self.keys]
        return not self.keys or any(matches)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    def log(self, line: str, always: bool = False) -> None:
        if always or self.verbose:  # never with the API key
            print(f"mock-upstream {line}", file=sys.stderr, flush=True)


STATE = web.AppKey("state", MockState)
ENCODER = msgspec.json.Encoder()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=ENCODER.encode(body), headers=headers,
                        content_type="application/json")


def _injected(state: MockState) -> Refusal | None:
    faults = state.faults
    if faults.status is not None and state.roll(faults.status_rate):
        status = faults.status
    elif state.roll(faults.error_rate):
        status = 500
    else:
        return None
    try:
        detail = "Invalid API key" if status == 401 else http.HTTPStatus(status).phrase
    except ValueError:  # a code with no standard name, such as 499
        detail = f"Injected error {status}"
    headers = {}
    if status in (429, 503) and faults.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(faults.retry_after))
    return Refusal(status, detail, headers)


async def _process(request: web.Request, state: MockState, gzipped: bool) -> web.Response | None:
    """The answer to one POST, or None when the connection is to be dropped."""
    faults = state.faults
    if faults.down:
        return None
    if faults.latency:
        await asyncio.sleep(faults.latency)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Refusal(413, f"Request body larger than {state.max_body} bytes") from None
    if state.roll(faults.drop_rate):
        return None
    if (refusal := _injected(state)) is not None:
        raise refusal
    key = request.headers.get("x-api-key")
    if not state.key_ok(key):
        raise Refusal(401, "Invalid API key")
    entries = decode_entries(body, gzipped, state.max_body)
    state.stats.max_batch = max(state.stats.max_batch, len(entries))
    if len(entries) > MAX_ENTRIES:
        raise Refusal(413, f"Too many log entries: {len(entries)} (at most {MAX_ENTRIES})")
    if (reason := batch_refusal(entries, faults)) is not None:
        raise Refusal(400, reason)
    valid, errors = validate_batch(entries, state.clock)
    if state.record is not None:  # on disk (in the OS) before the answer
        line = {"t": time.time(), "count": len(valid), "gzip": gzipped, "key": key,
                "entries": valid, "errors": errors}
        state.record.write(ENCODER.encode(line) + b"\n")
        state.record.flush()
    state.stats.entries_accepted += len(valid)
    if valid:
        state.stats.last_accepted_at = time.monotonic()
    state.stats.entries_rejected += len(errors)
    return _json(200, {"status": "accepted", "message": f"Processing {len(valid)} log entries",
                       "first_visit_id": str(uuid.uuid4()), "errors": errors})


async def handle_logs(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    stats = state.stats
    stats.requests += 1
    gzipped = "gzip" in request.headers.get("Content-Encoding", "").lower()
    stats.gzip_requests += gzipped
    stats.plain_requests += not gzipped
    try:
        response = await _process(request, state, gzipped)
    except Refusal as refusal:
        response = _json(refusal.status, {"detail": refusal.detail}, refusal.headers)
    if response is None:
        stats.dropped += 1
        state.log("POST dropped")
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # ends this connection's handler: nothing to answer
    status = str(response.status)
    stats.by_status[status] = stats.by_status.get(status, 0) + 1
    state.log(f"POST {status} gzip={gzipped} bytes={request.content_length}")
    return response


async def handle_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "DELETE":
        state.faults = Faults()
    elif request.method == "POST":
        try:
            changes = msgspec.json.decode(await request.read(), type=dict[str, Any])
            merged = msgspec.structs.asdict(state.faults) | changes
            state.faults = msgspec.convert(merged, Faults)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _json(400, {"detail": f"Invalid faults: {exc}"})
    if request.method != "GET":
        state.log(f"faults: {ENCODER.encode(state.faults).decode()}", always=True)
    return _json(200, state.faults)


async def handle_stats(request: web.Request) -> web.Response:
    return _json(200, request.app[STATE].stats)


async def handle_health(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _record_file(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    if state.record_path:
        state.record = open(state.record_path, "ab")  # noqa: SIM115  (closed on shutdown)
    yield
    if state.record is not None:
        state.record.close()


def build_app(state: MockState) -> web.Application:
    app = web.Application(client_max_size=state.max_body)  # beyond it: our own 413
    app[STATE] = state
    app.cleanup_ctx.append(_record_file)
    app.router.add_post(LOGS_PATH, handle_logs)
    app.router.add_get("/healthz", handle_health)
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, "/_mock/faults", handle_faults)
    app.router.add_get("/_mock/stats", handle_stats)
    return app


async def serve(args: argparse.Namespace, faults: Faults) -> int:
    state = MockState(args, faults)
    # auto_decompress off: the handler sees the body as sent, to count and bound it.
    runner = web.AppRunner(build_app(state), auto_decompress=False, access_log=None,
                           handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
    except OSError as exc:
        await runner.cleanup()
        state.log(f"cannot listen on {args.host}:{args.port}: {exc}", always=True)
        return 1
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    print(f"mock-upstream listening on http://{host}:{port}{LOGS_PATH}", flush=True)
    state.log(f"faults: {ENCODER.encode(faults).decode()}", always=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


# ---------------------------------------------------------------- command line


def _duration(text: str) -> float:
    """Seconds from "90", "1.5", "45s", "10m", "12h" or "30d"."""
    unit = DURATION_UNITS.get(text[-1:].lower())
    try:
        return float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None


def _instant(text: str) -> float:
    if (seconds := parse_timestamp(text)) is None:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or Unix timestamp: {text!r}")
    return seconds


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT,
        help="port to listen on, 0 for a free one (default %(default)s)")
    add("--api-key", action="append", default=[], metavar="KEY",
        help="an accepted x-api-key (repeatable; env MOCK_API_KEYS adds a comma-separated "
             "list); with none, any non-empty key is accepted")
    add("--record", metavar="FILE", help="append one NDJSON line per accepted request")
    add("--now", type=_instant, metavar="TIME",
        help="pin the clock of the timestamp window (ISO 8601 or Unix time)")
    add("--max-age", type=_duration, default=DEFAULT_MAX_AGE, metavar="DURATION",
        help="oldest accepted timestamp, as 30d, 12h, 90m or seconds (default 30d)")
    add("--max-future", type=_duration, default=DEFAULT_MAX_FUTURE, metavar="DURATION",
        help="furthest accepted timestamp ahead of now (default 1d)")
    add("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
        help="largest body, compressed or decompressed, before 413 (default %(default)s)")
    add("--seed", type=int, help="seed the fault dice, for repeatable runs")
    add("-v", "--verbose", action="store_true", help="log one line per request to stderr")
    group = parser.add_argument_group(
        "faults", "also at run time: POST /_mock/faults with a JSON object of these names "
                  "(error_rate, status, ...) merges them in; GET shows them, DELETE clears them")
    for name, (kind, metavar, text) in FAULT_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action="store_true", default=None, help=text)
        else:
            group.add_argument(flag, type=kind, metavar=metavar, help=text)


def run(args: argparse.Namespace) -> int:
    env_keys = (key.strip() for key in os.environ.get("MOCK_API_KEYS", "").split(","))
    args.api_key = [*args.api_key, *filter(None, env_keys)]
    given = {name: getattr(args, name) for name in FAULT_FLAGS if getattr(args, name) is not None}
    try:
        faults = msgspec.convert(given, Faults)
    except msgspec.ValidationError as exc:
        print(f"mock-upstream: invalid fault switch: {exc}", file=sys.stderr)
        return 2
    return uvloop.run(serve(args, faults))
