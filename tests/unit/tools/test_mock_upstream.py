"""`relay mock-upstream`, driven as a real process over HTTP through tests/support.py."""

from __future__ import annotations

import gzip
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    HttpResponse,
    MockUpstream,
    Process,
    free_port,
    http_request,
    wait_until,
)

KEY = "test-key-1"
NOW_ISO = "2025-06-15T12:00:00+00:00"  # the mock's pinned clock
NOW = datetime.fromisoformat(NOW_ISO).timestamp()
DAY = 86400
MAX_BODY = 1024 * 1024
MISSING = object()


def entry(**changes: Any) -> dict[str, Any]:
    """A valid entry with a unique path; a change to MISSING removes the field."""
    base: dict[str, Any] = {
        "timestamp": NOW - 60,
        "method": "GET",
        "host": "www.example.com",
        "path": f"/page/{uuid.uuid4().hex}",
        "status_code": 200,
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not MISSING}


def post(mock: MockUpstream, body: Any, key: str | None = KEY, gzip: bool = False,
         headers: dict[str, str] | None = None) -> HttpResponse:
    all_headers = {"x-api-key": key} if key is not None else {}
    all_headers.update(headers or {})
    return http_request(mock.url, "POST", body, headers=all_headers, gzip=gzip)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstream]:
    args = ["--now", NOW_ISO, "--max-body", str(MAX_BODY)]
    env = {"TZ": "XST-5:30"}  # local time away from UTC: naive times must still read as UTC
    tmp = tmp_path_factory.mktemp("upstream")
    with MockUpstream(tmp, api_keys=[KEY], extra_args=args, env=env) as mock:
        yield mock


@pytest.fixture
def mock(upstream: MockUpstream) -> Iterator[MockUpstream]:
    """The shared mock with no faults; its log of this test is printed (shown on failure)."""
    upstream.clear_faults()
    start = len(upstream.log_text())
    yield upstream
    print(upstream.log_text()[start:])


# ---------------------------------------------------------------- process and key


def test_prints_listening_url_with_the_chosen_port_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    with MockUpstream(tmp_path, port=port) as mock:
        url = f"http://127.0.0.1:{port}/v1/logs/custom"
        assert f"mock-upstream listening on {url}\n" in mock.log_text()
        assert mock.url == url
        assert http_request(mock.base_url + "/healthz").status == 200
        assert mock.terminate() == 0


def test_port_0_picks_a_free_port_and_sigint_exits_0(tmp_path: Path) -> None:
    with MockUpstream(tmp_path) as mock:
        assert mock.port and mock.port > 0
        assert f"listening on http://127.0.0.1:{mock.port}/v1/logs/custom" in mock.log_text()
        mock.popen.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        assert mock.wait() == 0


def test_restart_keeps_port_and_appends_to_the_record(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, extra_args=["--now", NOW_ISO]) as mock:
        port = mock.port
        assert post(mock, [entry()]).status == 200
        assert mock.kill9() == -9
        mock.start()
        assert mock.port == port
        assert post(mock, [entry()]).status == 200
        assert [r["count"] for r in mock.records()] == [1, 1]


def test_missing_or_wrong_key_is_401_and_nothing_is_recorded(mock: MockUpstream) -> None:
    before = len(mock.records())
    for key in (None, "", "wrong-key"):
        response = post(mock, [entry()], key=key)
        assert response.status == 401, key
        assert response.json() == {"detail": "Invalid API key"}
    assert len(mock.records()) == before
    assert post(mock, [entry()]).status == 200


def test_keys_from_flags_and_env_are_all_accepted_and_never_logged(tmp_path: Path) -> None:
    keys = ["key-alpha-19f", "key-beta-83c", "key-gamma-5d2"]
    env = {"MOCK_API_KEYS": f"{keys[0]}, {keys[1]},"}
    with MockUpstream(tmp_path, api_keys=[keys[2]], env=env, extra_args=["--now", NOW_ISO]) as mock:
        for key in keys:
            assert post(mock, [entry()], key=key).status == 200, key
        assert post(mock, [entry()], key="key-delta").status == 401
        mock.set_faults(status=401)
        assert post(mock, [entry()], key=keys[0]).status == 401
    log = mock.log_text()
    assert "POST 200" in log  # the per-request log is on, and still shows no key
    assert not any(key in log for key in keys)


def test_without_configured_keys_any_non_empty_key_passes(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, extra_args=["--now", NOW_ISO]) as mock:
        assert post(mock, [entry()], key="anything").status == 200
        assert post(mock, [entry()], key=None).status == 401


# ---------------------------------------------------------------- body


def test_gzip_and_plain_bodies_are_both_accepted_and_counted(mock: MockUpstream) -> None:
    before = mock.stats()
    sent_at = time.monotonic()
    assert post(mock, [entry()], gzip=True).json()["message"] == "Processing 1 log entries"
    # the system's monotonic clock, as the bench reads it: when the drain ended
    assert sent_at < mock.stats()["last_accepted_at"] < time.monotonic()
    assert post(mock, [entry(), entry()]).json()["message"] == "Processing 2 log entries"
    after = mock.stats()
    assert after["gzip_requests"] - before["gzip_requests"] == 1
    assert after["plain_requests"] - before["plain_requests"] == 1
    assert [r["gzip"] for r in mock.records()[-2:]] == [True, False]


def test_multi_member_gzip_is_read_whole(mock: MockUpstream) -> None:
    body = gzip.compress(b'[{"a": 1},') + gzip.compress(b'{"b": 2}]')
    response = post(mock, body, headers={"Content-Encoding": "gzip"})
    assert response.status == 200
    assert len(response.json()["errors"]) == 2


def test_1000_entries_pass_and_1001_are_refused_with_413(mock: MockUpstream) -> None:
    before = len(mock.records())
    response = post(mock, [entry() for _ in range(1001)], gzip=True)
    assert response.status == 413
    assert "1000" in response.json()["detail"]
    assert len(mock.records()) == before
    response = post(mock, [entry() for _ in range(1000)], gzip=True)
    assert response.status == 200
    assert response.json()["message"] == "Processing 1000 log entries"
    assert mock.stats()["max_batch"] >= 1001


@pytest.mark.parametrize(
    ("body", "gzipped", "status"),
    [
        (b'{"method": "GET"}', False, 422),
        (b'"text"', False, 422),
        (b"[{]", False, 400),
        (b"", False, 400),
        (b"not gzip at all", True, 400),
        (gzip.compress(b"[1, 2, 3]")[:-6], True, 400),  # truncated
        (gzip.compress(b"[not json]"), True, 400),
    ],
    # gzip bytes carry the time: ids from the bytes would differ between pytest-xdist workers
    ids=["object", "string", "bad-json", "empty", "not-gzip", "truncated-gzip", "gzip-not-json"],
)
def test_undecodable_or_non_array_bodies_are_refused(
    mock: MockUpstream, body: bytes, gzipped: bool, status: int
) -> None:
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    response = post(mock, body, headers=headers)
    assert response.status == status
    assert isinstance(response.json()["detail"], str)


def test_bodies_over_the_limit_are_413_compressed_or_not(mock: MockUpstream) -> None:
    big = b"[" + b" " * (MAX_BODY + 10) + b"]"
    assert post(mock, big).status == 413
    response = post(mock, gzip.compress(big), headers={"Content-Encoding": "gzip"})
    assert response.status == 413
    assert "Decompressed" in response.json()["detail"]


# ---------------------------------------------------------------- entries


def test_response_shape_of_an_accepted_batch(mock: MockUpstream) -> None:
    response = post(mock, [entry(), {"method": "GET"}, entry()])
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "message", "first_visit_id", "errors"}
    assert body["status"] == "accepted"
    assert body["message"] == "Processing 2 log entries"
    assert uuid.UUID(body["first_visit_id"]).version == 4
    assert len(body["errors"]) == 1
    assert body["errors"][0].startswith("Invalid log format: entry 1: ")


VALID_VARIANTS = {
    "unix seconds float": {"timestamp": NOW - 1.5},
    "unix milliseconds": {"timestamp": int((NOW - 60) * 1000)},
    "numeric string": {"timestamp": str(int(NOW))},
    "iso Z": {"timestamp": "2025-06-15T11:59:00Z"},
    "iso offset": {"timestamp": "2025-06-15T13:59:00.123+02:00"},
    "iso naive is utc": {"timestamp": "2025-05-16T12:00:00"},  # exactly 30 days old in UTC
    "oldest allowed": {"timestamp": NOW - 30 * DAY},
    "furthest ahead allowed": {"timestamp": NOW + DAY},
    "longest strings": {"method": "M" * 10, "host": "h" * 255, "path": "/" * 2048,
                        "ip": "1" * 45, "user_agent": "u" * 1024, "referer": "r" * 2048},
    "empty user agent": {"user_agent": ""},
    "status bounds low": {"status_code": 100},
    "status bounds high": {"status_code": 599},
    "all optional fields": {"query_params": {"q": "shoes", "k" * 100: "v" * 1000},
                            "referer": "https://www.google.com/", "bytes_sent": 0,
                            "duration_ms": 12.5},
    "integer duration": {"duration_ms": 0},
    "optional nulls": {"query_params": None, "referer": None, "bytes_sent": None,
                       "duration_ms": None},
    "unknown extra field": {"extra": "ignored"},
}


@pytest.mark.parametrize("changes", VALID_VARIANTS.values(), ids=VALID_VARIANTS.keys())
def test_valid_entry_is_processed_and_recorded(mock: MockUpstream, changes: dict[str, Any]) -> None:
    sent = entry(**changes)
    body = post(mock, [sent]).json()
    assert body["errors"] == []
    assert body["message"] == "Processing 1 log entries"
    assert mock.records()[-1]["entries"] == [sent]


INVALID_VARIANTS = [
    ("timestamp", MISSING), ("timestamp", None), ("timestamp", "yesterday"), ("timestamp", True),
    ("timestamp", [NOW]), ("timestamp", NOW - 30 * DAY - 1), ("timestamp", NOW + DAY + 1),
    ("timestamp", int((NOW - 40 * DAY) * 1000)), ("timestamp", "2025-07-15T00:00:00Z"),
    ("method", MISSING), ("method", "M" * 11), ("method", 1),
    ("host", MISSING), ("host", "h" * 256), ("host", ["a"]),
    ("path", MISSING), ("path", "/" * 2049),
    ("status_code", MISSING), ("status_code", 99), ("status_code", 600), ("status_code", "200"),
    ("status_code", 200.5), ("status_code", 200.0), ("status_code", True),
    ("ip", MISSING), ("ip", "1" * 46),
    ("user_agent", MISSING), ("user_agent", "u" * 1025), ("user_agent", 5),
    ("query_params", ["a=b"]), ("query_params", "a=b"), ("query_params", {"a": 1}),
    ("query_params", {"k" * 101: "v"}), ("query_params", {"a": "v" * 1001}),
    ("referer", "r" * 2049), ("referer", 7),
    ("bytes_sent", -1), ("bytes_sent", 1.5), ("bytes_sent", "10"), ("bytes_sent", False),
    ("duration_ms", -0.1), ("duration_ms", "5"), ("duration_ms", True),
]


@pytest.mark.parametrize(("field", "value"), INVALID_VARIANTS,
                         ids=[f"{f}={str(v)[:16]}" for f, v in INVALID_VARIANTS])
def test_invalid_entry_is_skipped_with_an_error_naming_its_field(
    mock: MockUpstream, field: str, value: Any
) -> None:
    good = entry()
    body = post(mock, [good, entry(**{field: value})]).json()
    assert body["message"] == "Processing 1 log entries"
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert error.startswith("Invalid log format: entry 1: "), error
    assert field in error
    record = mock.records()[-1]
    assert record["entries"] == [good]
    assert record["errors"] == body["errors"]


def test_every_broken_rule_of_an_entry_is_named(mock: MockUpstream) -> None:
    bad = entry(method="TOOLONGMETHOD", status_code=700, bytes_sent=-5, host=MISSING)
    error = post(mock, [bad]).json()["errors"][0]
    for field in ("method", "status_code", "bytes_sent", "host is required"):
        assert field in error


def test_non_object_entries_are_skipped(mock: MockUpstream) -> None:
    body = post(mock, [1, "x", None, entry()]).json()
    assert body["message"] == "Processing 1 log entries"
    assert [e.split(": ")[1] for e in body["errors"]] == ["entry 0", "entry 1", "entry 2"]


def test_an_all_invalid_batch_is_still_200_with_0_processed(mock: MockUpstream) -> None:
    response = post(mock, [entry(status_code=1), entry(ip=MISSING)])
    assert response.status == 200
    assert response.json()["message"] == "Processing 0 log entries"
    assert mock.records()[-1]["count"] == 0


def test_record_line_holds_the_request(mock: MockUpstream) -> None:
    sent = [entry(), entry(status_code="x"), entry(query_params={"utm_source": "news"})]
    before = time.time()
    post(mock, sent, gzip=True)
    record = mock.records()[-1]
    assert set(record) == {"t", "count", "gzip", "key", "entries", "errors"}
    assert before - 1 <= record["t"] <= time.time() + 1
    assert record["count"] == 2
    assert record["gzip"] is True
    assert record["key"] == KEY
    assert record["entries"] == [sent[0], sent[2]]
    assert len(record["errors"]) == 1 and "entry 1: status_code" in record["errors"][0]
    assert mock.entries()[-2:] == [sent[0], sent[2]]


def test_stats_count_requests_statuses_and_entries(mock: MockUpstream) -> None:
    before = mock.stats()
    post(mock, [entry(), entry(), entry(method=MISSING)])
    post(mock, [entry()], key="bad")
    after = mock.stats()
    assert after["requests"] - before["requests"] == 2
    assert after["by_status"]["200"] - before["by_status"].get("200", 0) == 1
    assert after["by_status"]["401"] - before["by_status"].get("401", 0) == 1
    assert after["entries_accepted"] - before["entries_accepted"] == 2
    assert after["entries_rejected"] - before["entries_rejected"] == 1


# ---------------------------------------------------------------- faults


def test_injected_500_processes_and_records_nothing(mock: MockUpstream) -> None:
    before_records, before_stats = len(mock.records()), mock.stats()
    mock.set_faults(error_rate=1)
    response = post(mock, [entry()])
    assert response.status == 500
    assert isinstance(response.json()["detail"], str)
    assert len(mock.records()) == before_records
    assert mock.stats()["entries_accepted"] == before_stats["entries_accepted"]
    mock.clear_faults()
    assert post(mock, [entry()]).status == 200


def test_error_rate_answers_about_that_fraction(mock: MockUpstream) -> None:
    mock.set_faults(error_rate=0.5)
    statuses = [post(mock, []).status for _ in range(200)]
    assert set(statuses) == {200, 500}
    assert 60 <= statuses.count(500) <= 140


@pytest.mark.parametrize(("status", "retry_after", "header"),
                         [(429, 7, "7"), (503, 1.5, "2"), (429, None, None), (502, 5, None),
                          (499, None, None)])
def test_injected_status_sends_retry_after_with_429_and_503(
    mock: MockUpstream, status: int, retry_after: float | None, header: str | None
) -> None:
    mock.set_faults(status=status, retry_after=retry_after)
    response = post(mock, [entry()])
    assert response.status == status
    assert response.headers.get("retry-after") == header
    assert "detail" in response.json()


def test_status_rate_0_never_injects(mock: MockUpstream) -> None:
    mock.set_faults(status=503, status_rate=0)
    assert all(post(mock, []).status == 200 for _ in range(20))


@pytest.mark.parametrize("switch", [{"down": True}, {"drop_rate": 1}])
def test_down_and_drop_close_the_connection_without_an_answer(
    mock: MockUpstream, switch: dict[str, Any]
) -> None:
    before_records, before_dropped = len(mock.records()), mock.stats()["dropped"]
    mock.set_faults(**switch)
    with pytest.raises(OSError):  # ConnectionResetError, RemoteDisconnected, URLError
        post(mock, [entry()])
    assert mock.stats()["dropped"] == before_dropped + 1
    assert len(mock.records()) == before_records
    mock.clear_faults()
    assert post(mock, [entry()]).status == 200


def test_latency_delays_the_answer(mock: MockUpstream) -> None:
    mock.set_faults(latency=0.5)
    started = time.monotonic()
    assert post(mock, [entry()]).status == 200
    assert time.monotonic() - started >= 0.5


def test_reject_marker_and_reject_field_refuse_the_whole_batch(mock: MockUpstream) -> None:
    before = len(mock.records())
    mock.set_faults(reject_marker="POISON", reject_field="bad_field")
    response = post(mock, [entry(), entry(path="/a/POISON/b")])
    assert response.status == 400 and "POISON" in response.json()["detail"]
    response = post(mock, [entry(bad_field=1), entry()])
    assert response.status == 400 and "bad_field" in response.json()["detail"]
    assert len(mock.records()) == before
    assert post(mock, [entry(), entry()]).status == 200


def test_faults_change_at_run_time_and_merge(mock: MockUpstream) -> None:
    assert mock.faults()["status"] is None
    mock.set_faults(status=503)
    faults = mock.set_faults(retry_after=3)
    assert (faults["status"], faults["retry_after"]) == (503, 3)
    assert mock.faults() == faults
    assert post(mock, [entry()]).headers["retry-after"] == "3"
    for bad in ({"no_such_switch": 1}, {"error_rate": 1.5}, {"status": 200}, {"latency": -1}):
        response = http_request(mock.base_url + "/_mock/faults", "POST", bad)
        assert response.status == 400, bad
    assert mock.faults() == faults  # a refused change changes nothing
    assert mock.clear_faults()["status"] is None
    assert post(mock, [entry()]).status == 200


def test_fault_flags_apply_from_start(tmp_path: Path) -> None:
    faults = {"status": 503, "retry_after": 2, "latency": 0.1}
    with MockUpstream(tmp_path, faults=faults) as mock:
        response = post(mock, [entry()])
        assert (response.status, response.headers.get("retry-after")) == (503, "2")
        assert {k: mock.faults()[k] for k in faults} == faults


def test_invalid_fault_flag_exits_2(tmp_path: Path) -> None:
    with Process(["mock-upstream", "--port", "0", "--error-rate", "2"], tmp_path) as process:
        assert process.wait() == 2
        assert "error_rate" in process.log_text()


def test_wait_until_times_out_with_the_message() -> None:
    with pytest.raises(AssertionError, match="never true"):
        wait_until(lambda: False, timeout=0.2, message="never true")
    assert wait_until(lambda: 42, timeout=0.2) == 42
