"""`POST /-/console/map`: the console's mapping playground, the same dry run as `relay map`.

Body: {"mapping": NAME, "records": TEXT, "host": HOST?, "tag": TAG?}; TEXT is what a shipper
would send (a JSON array, NDJSON, one object). The answer is `relay map --format json`'s
report, from relay.mapping.report. Bounded: MAX_INPUT bytes of text, MAX_RECORDS records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import ConfigError, IngestError
from relay.mapping.report import dry_run, read_records
from relay.models import RecordContext
from relay.stages.schema import Validator

if TYPE_CHECKING:
    from relay.runtime import Runtime

MAX_INPUT = 1 << 20  # bytes of pasted records
MAX_RECORDS = 1000


class MapRequest(msgspec.Struct, forbid_unknown_fields=True):
    mapping: str
    records: str
    host: str | None = None
    tag: str | None = None


class PlaygroundError(Exception):
    """What the page shows instead of a report (a 400)."""


def parse_request(body: bytes) -> MapRequest:
    try:
        return msgspec.json.decode(body, type=MapRequest)
    except msgspec.ValidationError as exc:
        raise PlaygroundError(f"expected {{mapping, records, host?, tag?}}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise PlaygroundError(f"the request body is not JSON: {exc}") from None


def run_playground(runtime: Runtime, request: MapRequest) -> dict[str, Any]:
    """The dry-run report of `request.records` under the named mapping of the running config."""
    from relay.routes import validation_policy

    data = request.records.encode()
    if len(data) > MAX_INPUT:
        raise PlaygroundError(f"records: {len(data)} bytes; the playground takes at most {MAX_INPUT}")
    if not data.strip():
        raise PlaygroundError("records: paste at least one record (JSON, a JSON array or NDJSON)")
    try:
        mapper = runtime.mapping_library().get(request.mapping)
        validator = Validator(validation_policy(runtime.config))
        records, errors = read_records(data, MAX_INPUT)
    except (ConfigError, IngestError) as exc:
        raise PlaygroundError(str(exc)) from None
    if len(records) + len(errors) > MAX_RECORDS:
        raise PlaygroundError(f"records: {len(records) + len(errors)} records; the playground takes at most "
                              f"{MAX_RECORDS}")
    ctx = RecordContext(source="console", tag=request.tag or None, headers={}, host=request.host or None)
    report = dry_run(mapper, validator, ctx, records, errors)
    answer = report.as_json()
    answer["table"] = report.as_table(MAX_RECORDS)  # the very text `relay map` prints
    return answer
