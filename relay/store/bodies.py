"""Upstream request bodies: entries as a JSON array, compressed the sink's way.

Shared by the batcher (sealing inbox items) and the commit of a request that fills
whole batches (store/outbox.py), so both write the same bytes for the same entries.
"""

from __future__ import annotations

from typing import NamedTuple

from isal import igzip


class BatchShape(NamedTuple):
    """How a sink cuts and encodes its batches (its `batch_max_entries`, `compression`, level)."""

    max_entries: int
    compression: str
    level: int


def compress(raw: bytes, compression: str, level: int) -> tuple[bytes, str | None]:
    if compression == "gzip":
        # isal above level 3 costs far more CPU for a few percent fewer bytes
        return igzip.compress(raw, compresslevel=min(level, 3)), "gzip"
    return raw, None


def from_lines(lines: list[bytes], compression: str, level: int) -> tuple[bytes, str | None]:
    """The body of encoded entries, one bytes value each."""
    return compress(b"[" + b",".join(lines) + b"]", compression, level)


def from_ndjson(run: bytes, compression: str, level: int) -> tuple[bytes, str | None]:
    """The body of a run of encoded entries, each ending in "\\n" (as the inbox stores them)."""
    return compress(array_of(run), compression, level)


def array_of(run: bytes) -> bytes:
    """A run of encoded entries, each ending in "\\n", as one JSON array.

    An encoded entry holds no raw newline (JSON escapes it in strings), so the separators
    are swapped in one pass instead of splitting a run into a bytes object per entry."""
    return b"[" + run[:-1].replace(b"\n", b",") + b"]" if run else b"[]"


def cut(lines: bytes, count: int, size: int) -> tuple[list[bytes], bytes]:
    """`lines` (`count` entries, each ending in "\\n") as whole runs of `size` entries and the rest."""
    whole = count // size
    if whole == 1 and count == size:
        return [lines], b""
    runs: list[bytes] = []
    start = 0
    find = lines.index
    for _ in range(whole):
        end = start
        for _ in range(size):
            end = find(b"\n", end) + 1
        runs.append(lines[start:end])
        start = end
    return runs, lines[start:]
