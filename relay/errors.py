"""The relay's one exception hierarchy.

    RelayError
    ├── ConfigError              a config file, key or mapping that cannot work (names file and key)
    ├── IngestError              a request the relay will not take; carries its HTTP status
    │   ├── BadRequest           400: nothing in the body could be decoded
    │   ├── Unauthorized         401: missing or wrong token
    │   ├── UnknownSource        404: no source at that path
    │   ├── RequestTimeout       408: the body did not arrive within read_timeout
    │   ├── PayloadTooLarge      413: body over the limit, compressed or decompressed
    │   ├── UnsupportedMedia     415: a Content-Type or Content-Encoding the relay cannot read
    │   └── Unavailable          503: queue full or shutting down; carries Retry-After
    │       ├── QueueFull
    │       └── ShuttingDown
    ├── QueueError               the durable queue failed (disk, corruption)
    │   └── CorruptItem          a queue item whose checksum does not match
    └── NoAnswer                 an upstream request got no HTTP answer (connection error, timeout)

Per-record problems (a field that fails a rule) are not exceptions: they become
`models.Rejection` values so one bad record never costs the others.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """A configuration problem, reported as `file: key: message`."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.message = message
        self.key = key
        self.file = file
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class IngestError(RelayError):
    status: int = 400
    reason: str = "bad request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, code: int | None = None) -> None:
        self.message = message
        self.headers = headers or {}
        self.code = code  # a native protocol's own error code (Splunk HEC's), for its answer
        super().__init__(message)


class BadRequest(IngestError):
    status = 400
    reason = "bad_request"


class Unauthorized(IngestError):
    status = 401
    reason = "unauthorized"


class UnknownSource(IngestError):
    status = 404
    reason = "unknown_source"


class RequestTimeout(IngestError):
    status = 408
    reason = "timeout"


class PayloadTooLarge(IngestError):
    status = 413
    reason = "too_large"


class UnsupportedMedia(IngestError):
    status = 415
    reason = "unsupported_media"


class Unavailable(IngestError):
    status = 503
    reason = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class QueueFull(Unavailable):
    reason = "queue_full"


class ShuttingDown(Unavailable):
    reason = "shutting_down"


class QueueError(RelayError):
    """The durable queue could not do what was asked."""


class CorruptItem(QueueError):
    """A stored item failed its checksum; it is quarantined, not delivered."""


class NoAnswer(RelayError):
    """A transport could not get an HTTP answer; the message says why ("timed out", "ClientConnectorError: ...")."""
