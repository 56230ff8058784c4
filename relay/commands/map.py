"""`relay map MAPPING [FILE]`: dry-run a mapping on sample records and say what it did to each.

    relay map fluentbit-nginx body.json --host www.example.com
    relay map myapp samples.ndjson -c configs/relay.toml --format json
    zcat body.gz | relay map nginx-json --bench
    relay map hec-nginx --protocol splunk_hec body.bin        # a protocol's body as it came off the wire

Reads what the ingest reads (a JSON array, NDJSON, one object, concatenated
objects, MessagePack; gzip, zstd, ... detected from the bytes), maps and
validates each record exactly as the relay would, and prints every entry with
its per-record report (fields filled, repaired, missing; or why it was
rejected or filtered), then a summary: counts per reason, fields never filled.
The host: a record's own virtual host wins when the mapping reads one (e.g.
`fluentbit-nginx`: `$host` logged in the second column), `--host` (or the
`host` of `--source`) fills the records that carry none; without it those
are rejected, and the summary says to pass it.
Exit status: 0 when every record became an entry (or was filtered), 1 when
some were rejected, 2 when the mapping or the input cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

import msgspec

from relay.config import PROTOCOLS
from relay.errors import ConfigError, IngestError
from relay.mapping import Mapper, MappingLibrary
from relay.mapping.report import dry_run, read_records
from relay.models import RecordContext, Rejection
from relay.stages.schema import ValidationPolicy, Validator

MAX_INPUT = 1 << 30
_json = msgspec.json.Encoder()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mapping", help="a preset name, or a [mappings.NAME] of --config")
    parser.add_argument("file", nargs="?", help="sample records (default: stdin)")
    parser.add_argument("-c", "--config", help="use this config's [mappings.*] and [validation]")
    parser.add_argument("--source", help="take host and tag header from this [sources.NAME] of --config")
    parser.add_argument("--host", help="the source's `host` setting, for logs that carry no virtual host")
    parser.add_argument("--tag", help="the Fluent Bit tag ($tag)")
    parser.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                        help="an ingest request header ($header.NAME); repeatable")  # fmt: skip
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--reject", action="store_true", help="validate with on_invalid = reject")
    parser.add_argument("--now", help="pin the clock (ISO 8601 or Unix seconds) to try old samples")
    parser.add_argument("--limit", type=int, default=100, help="records listed in the table (default 100)")
    parser.add_argument("--show-code", action="store_true", help="print the Python the mapping compiles to")
    parser.add_argument("--bench", action="store_true", help="measure mapping + validation speed on the input")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                        help="read the input as this protocol's request body, as it comes off the wire "
                             "(e.g. a captured _bulk body), and map the records a source of it would")
    parser.add_argument("--path", help="the request path (and query) the body was sent to "
                                       "(default: the protocol's usual one, e.g. /_bulk)")
    parser.add_argument("--content-type", help="the request's Content-Type, for protocols that read it")


def run(args: argparse.Namespace) -> int:
    try:
        mapper, validator, ctx = _setup(args)
        if args.show_code:
            print(mapper.source)
            if mapper.lane_source is not None:  # what JSON bodies of clean records run (mapping/lane.py)
                print("# The lane: the same mapping for records decoded into its strict Struct, which")
                print("# tries each record's fast road first (relay/mapping/lane.py).")
                print(mapper.lane_source)
            return 0
        records, errors = _read(args.file, args.protocol, args.path, args.content_type)
    except (ConfigError, IngestError, OSError, ValueError) as exc:
        print(f"relay map: {exc}", file=sys.stderr)
        return 2
    if args.bench:
        print(_bench(mapper, records, ctx, validator))
        return 0
    report = dry_run(mapper, validator, ctx, records, errors)
    try:
        if args.format == "json":
            sys.stdout.buffer.write(_json.encode(report.as_json()) + b"\n")
        else:
            print(report.as_table(args.limit))
    except BrokenPipeError:
        pass
    return 1 if report.rejected else 0


def _setup(args: argparse.Namespace) -> tuple[Mapper, Validator, RecordContext]:
    mappings: dict[str, dict[str, Any]] = {}
    file = None
    policy = ValidationPolicy()
    host, tag_header = args.host, None
    if args.config:
        from relay import (
            config as config_module,  # only when asked: the config module knows every section
        )

        config = config_module.load(args.config)
        mappings, file = config.mappings, config.file
        v = config.validation
        policy = ValidationPolicy(on_invalid=v.on_invalid, max_age=float(v.max_age), max_future=float(v.max_future),
                                  now=_when(v.now) if v.now else None)  # fmt: skip
        if args.source:
            source = config.sources.get(args.source)
            if source is None:
                raise ConfigError(f"no source named {args.source!r}", key="sources", file=file)
            host, tag_header = host or source.host, source.tag_header
    elif args.source:
        raise ValueError("--source needs --config")
    if args.reject:
        policy.on_invalid = "reject"
    if args.now:
        policy.now = _when(args.now)
    mapper = MappingLibrary(mappings, file=file).get(args.mapping)
    headers = dict(_header(h) for h in args.header)
    tag = args.tag or (headers.get(tag_header) if tag_header else None)
    return mapper, Validator(policy), RecordContext(source=args.source or "map", tag=tag, headers=headers, host=host)


def _when(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.timestamp()


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--header takes NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


# where each protocol's clients usually send, for --protocol without --path
DEFAULT_PATHS = {"elasticsearch": "/_bulk", "splunk_hec": "/services/collector/event", "datadog": "/api/v2/logs",
                 "otlp": "/v1/logs", "loki": "/loki/api/v1/push"}


def _read(path: str | None, protocol: str = "http", request_path: str | None = None,
          content_type: str | None = None) -> tuple[list[Any], list[Rejection]]:
    """The file's records (and the ones that could not be decoded), read the way the ingest reads them."""
    data = sys.stdin.buffer.read() if path in (None, "-") else open(path, "rb").read()  # noqa: SIM115
    if protocol != "http":
        from relay.stages.protocols import decoder
        try:
            decoder(protocol)
        except ModuleNotFoundError:
            raise ValueError(f"protocol {protocol!r} is not available in this build") from None
    return read_records(data, MAX_INPUT, protocol=protocol, content_type=content_type,
                        path=request_path or DEFAULT_PATHS.get(protocol, "/"))


def _bench(mapper: Mapper, records: list[Any], ctx: RecordContext, validator: Validator) -> str:
    if not records:
        return "no records to measure"
    best, rounds, deadline = float("inf"), 0, time.perf_counter() + 2.0
    while time.perf_counter() < deadline or rounds < 3:
        start = time.perf_counter()
        result = mapper.map_records(records, ctx, validator)
        best = min(best, time.perf_counter() - start)
        rounds += 1
    micros = best / len(records) * 1e6
    return (f"{mapper.name}: {len(records)} records ({len(result.entries)} entries, {len(result.rejections)} rejected), "
            f"best of {rounds} rounds: {micros:.2f} µs/record, {1e6 / micros:,.0f} records/s (mapping + validation)")
