"""Secrets out of rejected records before anyone is shown them, and a bound on their size.

A record is shown as received, except: the value of every key that looks like a credential
(token, key, secret, password, authorization, cookie, at any depth, case-insensitive, as a
substring: `api_key`, `X-Auth-Token`, `Cookie`) becomes "[redacted]", and so do values that
carry one inside text (`Bearer abc`, `?api_key=abc`). Over-redacting a harmless `monkey`
field is the price of never showing a key.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from relay.config import Config

REDACTED = "[redacted]"
RECORD_MAX = 16 * 1024  # bytes of one shown record's JSON; past it the head is kept, marked
_KEY_WORDS = ("token", "key", "secret", "passw", "authorization", "cookie", "credential")
_TEXT_WORDS = (*_KEY_WORDS, "authoriz", "bearer", "basic")  # substring tests in C: far cheaper than a regex
_WORDS = r"(?:token|key|secret|passw|authorization|cookie|credential)"
# `Bearer abc`, `Basic abc=` in any text
_SCHEME = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)
# `"api_key": "abc"` in JSON text that did not decode (a bad line is shown as text); the name's
# head (`api_`) need not be matched: only the value is replaced
_JSON_PAIR = re.compile(_WORDS + r"([\w.-]*\"\s*:\s*)(\"(?:[^\"\\]|\\.)*\"?|[^\s,}\]]+)", re.IGNORECASE)
# `api_key=abc` in a query string, `token: abc` in a line
_PAIR = re.compile(_WORDS + r"([\w.-]*\s*[=:]\s*\"?)(?!\[redacted\])([^\s&,;\"'}]+)", re.IGNORECASE)
_MAX_DEPTH = 64
_encode = msgspec.json.Encoder(enc_hook=repr).encode


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with credentials replaced (the original is left as it is)."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _secret_name(k) else redact(v, depth + 1)
                for k, v in value.items()} if depth < _MAX_DEPTH else REDACTED
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value] if depth < _MAX_DEPTH else REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return value


def _secret_name(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _KEY_WORDS)


def redact_text(text: str) -> str:
    low = text.lower()
    if not any(word in low for word in _TEXT_WORDS):  # the common case
        return text
    text = _JSON_PAIR.sub(lambda m: f'{m[0][:m.start(1) - m.start(0)]}{m[1]}"{REDACTED}"', text)
    text = _SCHEME.sub(lambda m: f"{m[1]} {REDACTED}", text)
    return _PAIR.sub(lambda m: f"{m[0][:m.start(2) - m.start(0)]}{REDACTED}", text)


def shown(value: Any, limit: int = RECORD_MAX) -> bytes:
    """The JSON a person is shown for a rejected record: redacted, and at most about `limit`
    bytes (a longer one becomes {"truncated": "<n> bytes, the first <limit> shown", "head": ...})."""
    if isinstance(value, bytes | bytearray):  # an undecodable line: shown as its text
        value = bytes(value[: limit * 2]).decode("utf-8", "replace")
        if len(value) > limit:
            value = value[:limit]
    value = redact(value)
    try:
        text = _encode(value)
    except (TypeError, ValueError, OverflowError):  # e.g. keys that are not strings (MessagePack maps)
        text = _encode(repr(value))
    if len(text) > limit:
        head = text[:limit].decode("utf-8", "ignore")
        text = _encode({"truncated": f"{len(text)} bytes, the first {limit} shown", "head": head})
    # the encoder's buffer may be half again larger than its bytes: keep an exact copy, so the
    # ring's byte count is the memory it holds
    return bytes(memoryview(text))


def scrub(text: bytes, secrets: list[bytes]) -> bytes:
    """Last guard on an answer: any configured secret (source tokens, sink keys, the admin token)
    that made it into a record or message by another name is replaced."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED.encode())
    return text


def config_secrets(config: Config) -> list[bytes]:
    """Every configured credential (source tokens, sink keys, the admin token): never in an answer."""
    found = [token for source in config.sources.values() for token in source.tokens]
    found += [sink.api_key for sink in config.sinks.values()]
    found.append(config.server.admin_token or "")
    return [s.encode() for s in found if s and len(s) >= 4]
