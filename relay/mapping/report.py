"""One dry run of a mapping over sample records, and its per-record report: what `relay map`
prints and what the console's mapping playground shows, from this one code.

    records, errors = read_records(data, max_size)      # decoded the way the ingest decodes
    report = dry_run(mapper, validator, ctx, records, errors)
    report.as_json() / report.as_table(limit)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from relay.mapping.mapper import Mapper
from relay.models import RecordContext, Rejection
from relay.stages.compression import decompress
from relay.stages.decode import decode_body
from relay.stages.protocols import decoder
from relay.stages.schema import FIELDS, OPTIONAL, Entry, Validator

_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xff\x06\x00\x00sNaPpY": "snappy"}
_json = msgspec.json.Encoder()


def read_records(data: bytes, max_size: int, *, protocol: str = "http", content_type: str | None = None,
                 path: str = "/") -> tuple[list[Any], list[Rejection]]:
    """The records in `data` (and the ones that could not be decoded), read the way the ingest reads
    them: a JSON array, NDJSON, one object, MessagePack; gzip, zstd, snappy detected from the bytes;
    or, for a native protocol, its body as it comes off the wire (`path`: where it was sent)."""
    encoding = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
    if protocol == "http":
        decoded = decode_body(data, content_type=content_type, content_encoding=encoding, max_size=max_size)
    else:
        decoded = decoder(protocol)(decompress(data, encoding, max_size), content_type=content_type,
                                    path=path, max_size=max_size)
    records = decoded.records
    errors = list(decoded.errors)
    if decoded.indexes is not None:  # renumber the good records by their place in the input
        by_place: list[Any] = [None] * (len(records) + len(errors))
        for record, place in zip(records, decoded.indexes, strict=False):
            by_place[place] = record
        bad = {e.index for e in errors}
        records = [r for i, r in enumerate(by_place) if i not in bad]
    return records, errors


def dry_run(mapper: Mapper, validator: Validator, ctx: RecordContext, records: list[Any],
            errors: list[Rejection]) -> Report:
    """Map and validate each record on its own, exactly as the relay would, and report on each."""
    report = Report(mapper)
    for rejection in errors:
        report.add(rejection.index, None, rejection, {}, filtered=False)
    for index, record in enumerate(records):
        result = mapper.map_records([record], ctx, validator)
        entry = result.entries[0] if result.entries else None
        first = result.rejections[0] if result.rejections else None
        renamed = None if first is None else Rejection(index, first.field, first.reason, first.message)
        report.add(index, entry, renamed, result.repairs, filtered=bool(result.filtered))
    return report


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
