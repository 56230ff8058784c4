"""Content-Encoding: undo a request body's compression layers, bounded in size; pure.

    decompress(body, header, limit) -> bytes

Layers (gzip, deflate, zstd, snappy) are undone last-applied first. Each stops as soon
as its output passes `limit`, so a compression bomb costs at most `limit` bytes of
memory (zstd, which has no output cap, overshoots by ~2 MiB at most). A body whose
header names no coding but which starts with gzip or zstd magic is inflated anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import cramjam
import zstandard
from isal import isal_zlib

from relay.errors import BadRequest, PayloadTooLarge, UnsupportedMedia

MAX_ENCODING_LAYERS = 4
# Shippers compress at default levels (zstd window <= 8 MiB); a larger declared window
# would make the decoder allocate it up front, whatever the real payload size.
ZSTD_MAX_WINDOW = 1 << 24

_ZSTD = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SNAPPY_FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"


def decompress(body: bytes, header: str | None, limit: int) -> bytes:
    """The body with every layer `header` names undone; 413 past `limit` bytes."""
    layers = _encoding_layers(header)
    if not layers:
        # A body compressed without saying so (a proxy dropped the header, a hand-rolled
        # client): the magic bytes cannot start JSON, MessagePack events or text.
        if body.startswith(_GZIP_MAGIC):
            layers = [_gunzip]
        elif body.startswith(_ZSTD_MAGIC):
            layers = [_unzstd]
    data = body
    for undo in layers:
        data = undo(data, limit) if data else data
    if len(data) > limit:
        raise PayloadTooLarge(f"body is {len(data)} bytes, over the limit of {limit} bytes")
    return data


def _encoding_layers(header: str | None) -> list[Callable[[bytes, int], bytes]]:
    layers: list[Callable[[bytes, int], bytes]] = []
    for token in (header or "").split(","):
        name = token.strip().lower()
        if name in ("", "identity"):
            continue
        if name not in _DECODERS:
            raise UnsupportedMedia(
                f"Content-Encoding {name!r} is not supported; use gzip, deflate, zstd or snappy"
            )
        layers.append(_DECODERS[name])
    if len(layers) > MAX_ENCODING_LAYERS:
        raise UnsupportedMedia(
            f"Content-Encoding {header!r} has {len(layers)} layers; at most {MAX_ENCODING_LAYERS} are undone"
        )
    # "gzip, zstd" lists codings in the order applied, so the last one comes off first.
    return layers[::-1]


def _too_large(encoding: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body decompresses ({encoding}) to more than the limit of {limit} bytes")


def _inflate_stream(data: bytes, wbits: int, room: int, name: str, limit: int) -> tuple[bytes, bytes]:
    """One deflate stream (gzip member, zlib or raw): (output, bytes after the stream)."""
    inflater = isal_zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, room + 1)  # max_length: a bomb stops at room + 1 bytes
    except isal_zlib.error as exc:  # type: ignore[misc]  # isal ships no types
        raise BadRequest(f"{name} data is corrupt: {exc}") from None
    if len(out) > room:
        raise _too_large(name.split()[0], limit)
    if not inflater.eof:
        raise BadRequest(f"{name} data is truncated: it ends before the end-of-stream marker")
    return out, inflater.unused_data


def decompress_whole(body: bytes, header: str | None, limit: int) -> tuple[bytes, bool]:
    """`decompress`, and whether `body` is exactly one gzip member (`Content-Encoding: gzip`,
    nothing after it): such a body can go upstream as it came, as a sink's gzip batch body,
    which every gzip reader takes (some read only a first member, or refuse padding)."""
    if header is None or header.strip().lower() != "gzip":
        return decompress(body, header, limit), False
    return _gunzip_whole(body, limit)  # its members' room keeps it within `limit`


def _gunzip(data: bytes, limit: int) -> bytes:
    return _gunzip_whole(data, limit)[0]


def _gunzip_whole(data: bytes, limit: int) -> tuple[bytes, bool]:
    """Every member's output, and whether that was one member with nothing after it."""
    if not data.startswith(_GZIP_MAGIC):
        raise BadRequest("Content-Encoding is gzip but the body does not start with 1f 8b")
    parts: list[bytes] = []
    rest, offset, room = data, 0, limit
    padded = False
    while rest:  # a gzip file may hold several members back to back
        out, after = _inflate_stream(rest, 31, room, f"gzip member at byte {offset}", limit)
        parts.append(out)
        room -= len(out)
        offset += len(rest) - len(after)
        rest = after
        if rest and not rest.startswith(_GZIP_MAGIC):
            if rest.strip(b"\0"):  # gzip(1) ignores zero padding after the last member
                raise BadRequest(f"{len(rest)} bytes that are not gzip follow the data at byte {offset}")
            padded = True
            break
    if len(parts) == 1:
        return parts[0], not padded
    return b"".join(parts), False


def _inflate(data: bytes, limit: int) -> bytes:
    if data.startswith(_GZIP_MAGIC):  # some clients label gzip as deflate
        return _gunzip(data, limit)
    # RFC 9110 deflate is zlib-wrapped (Vector's `zlib` sends that); many clients send raw.
    zlib_header = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
    errors: list[BadRequest] = []
    for wbits in (15, -15) if zlib_header else (-15,):
        try:
            out, after = _inflate_stream(data, wbits, limit, "deflate", limit)
        except BadRequest as exc:  # a raw stream can pass the zlib header check by chance
            errors.append(exc)
            continue
        if after:
            raise BadRequest(f"{len(after)} bytes follow the end of the deflate data")
        return out
    raise errors[0]  # when the header looked like zlib, the zlib error says what is wrong


def _unzstd(data: bytes, limit: int) -> bytes:
    if not data.startswith(_ZSTD_MAGIC):
        raise BadRequest("Content-Encoding is zstd but the body does not start with 28 b5 2f fd")
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"zstd frame header is invalid: {exc}") from None
    if declared > limit:
        raise _too_large("zstd", limit)
    view, pos, produced = memoryview(data), 0, 0
    parts: list[bytes] = []
    inflater = _ZSTD.decompressobj()
    while pos < len(data):
        # zstd has no output cap, so feed small slices: one input byte yields at most
        # ~32 KiB (a 4-byte RLE block fills 128 KiB), so a bomb overshoots by ~2 MiB at most.
        piece = view[pos : pos + max(64, (limit - produced) >> 15)]
        try:
            out = inflater.decompress(piece)
        except zstandard.ZstdError as exc:
            raise BadRequest(f"zstd data is corrupt near byte {pos}: {exc}") from None
        pos += len(piece)
        produced += len(out)
        if produced > limit:
            raise _too_large("zstd", limit)
        parts.append(out)
        if inflater.eof:  # a frame ended: what is left is the next frame
            pos -= len(inflater.unused_data)
            if pos < len(data):
                inflater = _ZSTD.decompressobj()
    if not inflater.eof:
        raise BadRequest("zstd data is truncated: the last frame is incomplete")
    return b"".join(parts)


def _unsnappy(data: bytes, limit: int) -> bytes:
    try:
        if data.startswith(_SNAPPY_FRAMED_MAGIC):
            if _snappy_framed_size(data) > limit:
                raise _too_large("snappy", limit)
            return bytes(cramjam.snappy.decompress(data))
        # Raw block format (Fluent Bit, Prometheus): the varint header is the output size.
        if _varint(data, 0) > limit:
            raise _too_large("snappy", limit)
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise BadRequest(f"snappy data is corrupt: {exc}") from None


def _snappy_framed_size(data: bytes) -> int:
    """Sum the sizes the chunk headers announce, before inflating anything."""
    pos, total = 0, 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise BadRequest(f"snappy framed data is truncated in the chunk header at byte {pos}")
        kind, length = data[pos], int.from_bytes(data[pos + 1 : pos + 4], "little")
        end = pos + 4 + length
        if end > len(data):
            raise BadRequest(f"snappy framed data is truncated: chunk at byte {pos} needs {length} bytes")
        if kind == 0x00:  # compressed: 4-byte CRC, then a raw block led by its size
            total += _varint(data, pos + 8)
        elif kind == 0x01:  # uncompressed: 4-byte CRC, then the bytes
            total += max(0, length - 4)
        elif 0x02 <= kind <= 0x7F:
            raise BadRequest(f"snappy framed data has reserved chunk type {kind:#04x} at byte {pos}")
        pos = end
    return total


def _varint(data: bytes, pos: int) -> int:
    """The little-endian base-128 length that leads a raw snappy block."""
    value = 0
    for shift, byte in zip(range(0, 35, 7), data[pos : pos + 5]):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise BadRequest(f"snappy data has an invalid length header at byte {pos}")


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gunzip, "x-gzip": _gunzip, "deflate": _inflate,
    "zstd": _unzstd, "snappy": _unsnappy, "x-snappy-framed": _unsnappy,
}
