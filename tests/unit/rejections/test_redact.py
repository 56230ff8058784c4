"""What a person is shown of a rejected record: credentials gone at any depth, size bounded."""

from __future__ import annotations

import json

from relay.rejections.redact import RECORD_MAX, REDACTED, redact, scrub, shown


def test_credential_keys_are_redacted_at_any_depth_whatever_their_case() -> None:
    record = {"path": "/a", "Authorization": "Bearer abc", "nested": {"deeper": [{"API_KEY": "k1", "ok": 1}],
                                                                      "x-auth-token": "t", "Cookie": "c=1"},
              "password": {"even": "objects"}, "client_secret": 5}
    out = redact(record)
    assert out == {"path": "/a", "Authorization": REDACTED,
                   "nested": {"deeper": [{"API_KEY": REDACTED, "ok": 1}], "x-auth-token": REDACTED, "Cookie": REDACTED},
                   "password": REDACTED, "client_secret": REDACTED}
    assert record["Authorization"] == "Bearer abc"  # the original is left as it was


def test_credentials_inside_text_are_redacted() -> None:
    out = redact({"path": "/login?user=a&api_key=s3cr3t&x=1", "header": "Bearer eyJhbGciOi.abc",
                  "line": 'GET / token: zzzzzz'})
    text = json.dumps(out)
    assert "s3cr3t" not in text and "eyJhbGciOi" not in text and "zzzzzz" not in text
    assert out["path"] == f"/login?user=a&api_key={REDACTED}&x=1"


def test_an_undecodable_line_is_shown_as_text_with_its_json_pairs_redacted() -> None:
    line = b'{"path": "/x", "api_key": "k-123456", "token": 42, oops'
    text = json.loads(shown(line))
    assert isinstance(text, str) and "k-123456" not in text and "42" not in text and '"/x"' in text


def test_a_huge_record_is_truncated_with_a_marker() -> None:
    out = shown({"message": "x" * (RECORD_MAX * 3)})
    assert len(out) < RECORD_MAX + 200
    marked = json.loads(out)
    assert marked["truncated"].startswith(f"{RECORD_MAX * 3 + 14} bytes") and marked["head"].startswith('{"message":"x')


def test_scrub_replaces_configured_secrets_wherever_they_are() -> None:
    assert scrub(b'{"a":"my-source-token-1","b":"ok"}', [b"my-source-token-1", b""]) == b'{"a":"[redacted]","b":"ok"}'
