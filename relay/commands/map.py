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
from collections import Counter
from datetime import datetime
from typing import Any

import msgspec

from relay.config import PROTOCOLS
from relay.errors import ConfigError, IngestError
from relay.mapping import Mapper, MappingLibrary
from relay.models import RecordContext, Rejection
from relay.stages.schema import FIELDS, OPTIONAL, Entry, ValidationPolicy, Validator

MAX_INPUT = 1 << 30
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xff\x06\x00\x00sNaPpY": "snappy"}
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
            return 0
        records, errors = _read(args.file, args.protocol, args.path, args.content_type)
    except (ConfigError, IngestError, OSError, ValueError) as exc:
        print(f"relay map: {exc}", file=sys.stderr)
        return 2
    if args.bench:
        print(_bench(mapper, records, ctx, validator))
        return 0
    report = Report(mapper)
    for rejection in errors:
        report.add(rejection.index, None, rejection, {}, filtered=False)
    for index, record in enumerate(records):
        result = mapper.map_records([record], ctx, validator)
        entry = result.entries[0] if result.entries else None
        first = result.rejections[0] if result.rejections else None
        renamed = None if first is None else Rejection(index, first.field, first.reason, first.message)
        report.add(index, entry, renamed, result.repairs, filtered=bool(result.filtered))
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
    from relay.stages.compression import decompress
    from relay.stages.decode import decode_body
    from relay.stages.protocols import decoder

    data = sys.stdin.buffer.read() if path in (None, "-") else open(path, "rb").read()  # noqa: SIM115
    encoding = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
    if protocol == "http":
        decoded = decode_body(data, content_type=content_type, content_encoding=encoding, max_size=MAX_INPUT)
    else:
        try:
            decode = decoder(protocol)
        except ModuleNotFoundError:
            raise ValueError(f"protocol {protocol!r} is not available in this build") from None
        decoded = decode(decompress(data, encoding, MAX_INPUT), content_type=content_type,
                         path=request_path or DEFAULT_PATHS.get(protocol, "/"), max_size=MAX_INPUT)
    records = decoded.records
    errors = list(decoded.errors)
    if decoded.indexes is not None:  # renumber the good records by their place in the input
        by_place: list[Any] = [None] * (len(records) + len(errors))
        for record, place in zip(records, decoded.indexes):
            by_place[place] = record
        bad = {e.index for e in errors}
        records = [r for i, r in enumerate(by_place) if i not in bad]
    return records, errors


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


class Report:
    """Per-record lines and the summary of one dry run."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.rows: list[dict[str, Any]] = []
        self.filled: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.repairs: Counter[str] = Counter()
        self.entries = self.rejected = self.filtered = self.repaired = 0

    def add(self, index: int, entry: Entry | None, rejection: Rejection | None, repairs: dict[str, int],
            *, filtered: bool) -> None:  # fmt: skip
        row: dict[str, Any] = {"index": index}
        if entry is not None:
            present = [f for f in FIELDS if getattr(entry, f) is not msgspec.UNSET]
            self.filled.update(present)
            self.entries += 1
            self.repaired += bool(repairs)
            self.repairs.update(repairs)
            row.update(status="repaired" if repairs else "ok", entry=msgspec.to_builtins(entry),
                       repaired=sorted(repairs), missing=[f for f in OPTIONAL if f not in present])  # fmt: skip
        elif rejection is not None:
            self.rejected += 1
            self.reasons[f"{rejection.field or 'record'}:{rejection.reason}"] += 1
            row.update(status="rejected", field=rejection.field, reason=rejection.reason, error=rejection.render())
        else:
            self.filtered += filtered
            row.update(status="filtered")
        self.rows.append(row)

    def summary(self) -> dict[str, Any]:
        return {
            "records": len(self.rows), "entries": self.entries, "repaired": self.repaired,
            "rejected": self.rejected, "filtered": self.filtered,
            "rejections": dict(self.reasons.most_common()), "repairs": dict(self.repairs.most_common()),
            "filled": {f: self.filled[f] for f in FIELDS},
            "never_filled": [f for f in FIELDS if not self.filled[f]] if self.entries else list(FIELDS),
        }  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda row: row["index"])
        return {"mapping": self.mapper.name, "describe": self.mapper.describe(), "records": rows,
                "summary": self.summary()}  # fmt: skip

    def as_table(self, limit: int) -> str:
        lines = [self.mapper.describe(), ""]
        rows = sorted(self.rows, key=lambda row: row["index"])
        for row in rows[: max(limit, 0)]:
            status = row["status"]
            if status in ("ok", "repaired"):
                lines.append(f"#{row['index']:<4} {status:<9}{_json.encode(row['entry']).decode()}")
                if row["repaired"]:
                    lines.append(f"{'':15}repaired: {', '.join(row['repaired'])}")
                if row["missing"]:
                    lines.append(f"{'':15}missing:  {', '.join(row['missing'])}")
            elif status == "rejected":
                lines.append(f"#{row['index']:<4} REJECTED {row['error']}")
            else:
                lines.append(f"#{row['index']:<4} filtered (drop_if)")
        if len(rows) > limit:
            lines.append(f"... {len(rows) - limit} more records (--limit, or --format json for all)")
        s = self.summary()
        lines += ["", f"{s['records']} records: {s['entries']} entries ({s['repaired']} repaired), "
                      f"{s['rejected']} rejected, {s['filtered']} filtered"]  # fmt: skip
        if s["rejections"]:
            lines.append("  rejected: " + ", ".join(f"{k} x{n}" for k, n in s["rejections"].items()))
        if s["repairs"]:
            lines.append("  repairs:  " + ", ".join(f"{k} x{n}" for k, n in s["repairs"].items()))
        if self.entries:
            lines.append("  filled:   " + ", ".join(f"{f} {n}/{self.entries}" for f, n in s["filled"].items() if n))
        if s["never_filled"]:
            lines.append("  never filled: " + ", ".join(s["never_filled"]))
        if "host:required" in s["rejections"] and self.mapper.needs_host:
            found = "takes the host from the records that carry one" if self.mapper.reads_host else \
                "finds no virtual host in the records"
            lines.append(f"  hint: {self.mapper.name} {found}: pass --host (the source's `host` setting) "
                         "for the others")  # fmt: skip
        return "\n".join(lines)
