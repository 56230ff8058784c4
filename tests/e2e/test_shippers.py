"""Shipper compatibility, end to end: every shipper request fixture through a running relay
into `relay mock-upstream`, the auth each shipper offers, and the answers their retry rules need.

One relay + mock serve the whole module. Its sources are configs/shippers/relay-sources.toml
as shipped (fluentbit, vector, syslog-ng, with tokens from the environment) plus open sources
for the other mappings the fixtures need. Each case posts one request, checks the answer,
then waits until the mock has received exactly the accepted entries (and no more).

Fixtures: tests/fixtures/fluent-bit/* (captured from Fluent Bit 4.2.8), tests/fixtures/
vector/* (synthesised from Vector's documented behaviour), tests/fixtures/syslog-ng/* (captured
from syslog-ng 3.38). They all carry the same 200 requests of 2026-11-25, so the relay's clock
is pinned (PINNED_NOW) and deliveries can be compared across shippers and formats.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import pytest
import zstandard

from tests.e2e.harness import PINNED_NOW, Relay, sink_toml
from tests.support import FIXTURES, REPO_ROOT, MockUpstream, http_request, wait_until

REPO = REPO_ROOT
SHIPPERS = REPO / "configs" / "shippers"
FLUENT_BIT = FIXTURES / "fluent-bit"
VECTOR = FIXTURES / "vector"
SYSLOG_NG = FIXTURES / "syslog-ng"
KEY = "test-key"
HOST = "www.example.com"
FB_TOKEN = "fluent-bit-e2e-token"
VECTOR_TOKEN = "vector-fixture-token"  # what the Vector fixtures carry
SYSLOG_NG_TOKEN = "syslog-ng-fixture-token"  # what the syslog-ng capture carries
TOKENS = {"FLUENTBIT_TOKEN": FB_TOKEN, "VECTOR_TOKEN": VECTOR_TOKEN, "SYSLOG_NG_TOKEN": SYSLOG_NG_TOKEN}
# Open sources for the fixtures whose records need another mapping than the shipped sources.
EXTRA_SOURCES = f"""
[sources.fb-json]                # Fluent Bit tail + json parser on nginx JSON logs
mapping = "nginx-json"

[sources.fb-raw]                 # Fluent Bit tail without a parser: {{"log": "<line>"}}
mapping = "nginx-combined"
host = "{HOST}"

[sources.vector-apache]          # Vector remap with parse_apache_log
mapping = "vector-apache"
host = "{HOST}"
tokens = ["{VECTOR_TOKEN}"]

[sources.fb-gelf]                # Fluent Bit format gelf, through the fluentbit-gelf preset
mapping = "fluentbit-gelf"
host = "{HOST}"

[sources.fb-tagged]              # Fluent Bit header_tag: the tag names the site
mapping = "fluentbit-by-tag"
tag_header = "X-Fluent-Tag"
tokens = ["{FB_TOKEN}"]

[mappings.fluentbit-by-tag]
extends = "fluentbit-nginx"
host = "$tag"

[sources.vector-raw]             # Vector events with the raw line in .message
mapping = "nginx-combined"
host = "{HOST}"
tokens = ["{VECTOR_TOKEN}"]
"""
FB_BASIC = {"Authorization": "Basic " + base64.b64encode(f"fluent-bit:{FB_TOKEN}".encode()).decode(),
            "X-Fluent-Tag": "nginx.access"}  # as fluent-bit.conf sends it (http_User/http_Passwd, header_tag)


@dataclass
class Case:
    shipper: str
    folder: Path
    path: str  # the relay route it is posted to
    auth: dict[str, str] = field(default_factory=dict)  # added to the captured headers
    rejected: tuple[int, ...] = (0,)  # acceptable rejection counts (see vector nginx-parsed)

    @property
    def id(self) -> str:
        return f"{self.shipper}/{self.folder.name}"

    def request(self) -> tuple[bytes, dict[str, str], int]:
        meta = json.loads((self.folder / "request.json").read_text())
        keep = ("content-type", "content-encoding", "authorization")
        headers = {k: v for k, v in meta["headers"] if k.lower() in keep}
        headers.update(self.auth)
        return (self.folder / "body.bin").read_bytes(), headers, meta["record_count"]


def _cases() -> list[Case]:
    cases: list[Case] = []
    for folder in sorted(FLUENT_BIT.glob("*")) if FLUENT_BIT.is_dir() else []:
        if folder.name.startswith("nginx-combined."):
            cases.append(Case("fluent-bit", folder, "/ingest/fluentbit", FB_BASIC))
        elif folder.name.startswith("nginx-json."):
            cases.append(Case("fluent-bit", folder, "/ingest/fb-json"))
        elif folder.name.startswith("raw-line."):
            cases.append(Case("fluent-bit", folder, "/ingest/fb-raw"))
        else:
            raise AssertionError(f"a Fluent Bit fixture this test does not route: {folder.name}")
    vector_routes = {"nginx-parsed": "/ingest/vector", "apache-parsed": "/ingest/vector-apache", "raw": "/ingest/vector-raw"}
    for folder in sorted(p for p in VECTOR.glob("*") if p.is_dir()):
        kind = folder.name.split(".")[0]
        # Line 7's user agent holds \" which parse_nginx_log cannot read: that event arrives
        # unparsed (raw .message). The vector-nginx preset rejects it today; a preset that falls
        # back to parsing .message would accept it.
        rejected = (1, 0) if kind == "nginx-parsed" else (0,)
        cases.append(Case("vector", folder, vector_routes[kind], rejected=rejected))
    for folder in sorted(p for p in SYSLOG_NG.glob("*") if p.is_dir()):
        cases.append(Case("syslog-ng", folder, "/ingest/syslog-ng"))
    return cases


CASES = {case.id: case for case in _cases()}


@dataclass
class Stack:
    upstream: MockUpstream
    relay: Relay
    delivered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.relay.base_url + path

    def accepted_so_far(self) -> int:
        return int(self.upstream.stats()["entries_accepted"])

    def post_and_deliver(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """POST, expect 200, wait until exactly the accepted entries reached the mock; (answer, entries)."""
        before = len(self.upstream.entries())
        assert self.accepted_so_far() == before, "the mock is still receiving an earlier case"
        response = http_request(self.url(path), "POST", body, headers=headers)
        assert response.status == 200, (response.status, response.body[:500])
        answer = response.json()
        wait_until(lambda: self.accepted_so_far() >= before + answer["accepted"], timeout=15,
                   message=lambda: f"delivery stalled\n{self.relay.log_tail()}")
        time.sleep(0.3)  # a batch_timeout more: nothing beyond the accepted entries may arrive
        entries = self.upstream.entries()[before:]
        assert len(entries) == answer["accepted"], (len(entries), answer)
        assert self.upstream.stats()["entries_rejected"] == 0, "the mock upstream refused entries"
        return answer, entries

    def run(self, case: Case) -> list[dict[str, Any]]:
        if case.id not in self.delivered:
            body, headers, count = case.request()
            answer, entries = self.post_and_deliver(case.path, body, headers)
            assert answer["accepted"] + answer["rejected"] == count, answer
            assert answer["rejected"] in case.rejected, answer["errors"]
            self.delivered[case.id] = entries
        return self.delivered[case.id]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("shippers")
    sources = (SHIPPERS / "relay-sources.toml").read_text() + EXTRA_SOURCES
    env = {**TOKENS, "RELAY_DEFAULT_HOST": HOST}
    with MockUpstream(tmp, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp, sink_toml("profound", upstream.url, KEY), sources=sources, env=env) as relay:
        yield Stack(upstream, relay)


def key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


def same_entries(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return sorted(map(key, a)) == sorted(map(key, b))


# --- every fixture, through the relay, counts matching ----------------------------------------------


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_fixture_is_delivered(stack: Stack, case_id: str) -> None:
    case = CASES[case_id]
    entries = stack.run(case)
    assert {e["host"] for e in entries} <= {HOST, "shop.example.com", "example.com"}
    assert all(e["timestamp"].startswith("2026-11-25T08:") for e in entries), entries[0]["timestamp"]


def test_every_public_fluent_bit_fixture_is_covered() -> None:
    covered = {c.folder.name for c in CASES.values() if c.shipper == "fluent-bit"}
    assert covered == {p.name for p in FLUENT_BIT.iterdir() if p.is_dir()}
    assert len(covered) == 20


def test_every_fluent_bit_format_of_the_same_log_delivers_the_same_entries(stack: Stack) -> None:
    """json, json_lines, json_stream, msgpack; gzip or not; date as float, iso8601 or @timestamp."""
    for prefix in ("nginx-combined.", "nginx-json.", "raw-line."):
        group = [c for c in CASES.values() if c.shipper == "fluent-bit" and c.folder.name.startswith(prefix)]
        reference = stack.run(group[0])
        for case in group[1:]:
            assert same_entries(stack.run(case), reference), f"{case.id} differs from {group[0].id}"


@pytest.mark.parametrize("compress", ["zstd", "snappy"])
def test_fluent_bit_zstd_and_snappy_compression(stack: Stack, compress: str) -> None:
    """`compress zstd` / `compress snappy` (no capture of these: the captured json_lines body,
    compressed as Fluent Bit does it: one zstd frame with its content size, one RAW snappy block)."""
    body, headers, _ = CASES["fluent-bit/nginx-combined.json_lines"].request()
    packed = zstandard.ZstdCompressor().compress(body) if compress == "zstd" else bytes(cramjam.snappy.compress_raw(body))
    answer, entries = stack.post_and_deliver("/ingest/fluentbit", packed, {**headers, "Content-Encoding": compress})
    assert (answer["accepted"], answer["rejected"]) == (200, 0)
    assert same_entries(entries, stack.run(CASES["fluent-bit/nginx-combined.json_lines"]))


def test_fluent_bit_gelf_through_its_preset(stack: Stack) -> None:
    """`format gelf` (no capture: built from the nginx-combined records as out_http's GELF
    encoder writes them: version, short_message, host, the other keys as `_key`, timestamp
    in seconds with ms, one object per line), mapped by the fluentbit-gelf preset."""
    records = [json.loads(line) for line in
               (FLUENT_BIT / "nginx-combined.json" / "records.jsonl").read_text().splitlines()]
    lines = []
    for r in records:
        gelf = {"version": "1.1", "short_message": r["path"], "host": r["host"],
                **{"_" + k: v for k, v in r.items() if k not in ("date", "host")}}
        lines.append(json.dumps(gelf, separators=(",", ":"))[:-1] + ',"timestamp":{:.3f}}}'.format(r["date"]))
    body = "".join(line + "\n" for line in lines).encode()
    answer, entries = stack.post_and_deliver("/ingest/fb-gelf", body, {"Content-Type": "application/json"})
    assert (answer["accepted"], answer["rejected"]) == (200, 0)
    assert same_entries(entries, stack.run(CASES["fluent-bit/nginx-combined.json"]))


def test_fluent_bit_header_tag_reaches_the_mapping_as_tag(stack: Stack) -> None:
    """`header_tag X-Fluent-Tag` sends the record's tag; a source's tag_header makes it `$tag`."""
    body, headers, _ = CASES["fluent-bit/nginx-combined.msgpack.gzip"].request()
    answer, entries = stack.post_and_deliver("/ingest/fb-tagged", body, {**headers, **FB_BASIC,
                                                                        "X-Fluent-Tag": "shop.example.com"})
    assert (answer["accepted"], answer["rejected"]) == (200, 0)
    assert {e["host"] for e in entries} == {"shop.example.com"}
    reference = stack.run(CASES["fluent-bit/nginx-combined.msgpack.gzip"])
    assert same_entries(entries, [{**e, "host": "shop.example.com"} for e in reference])


def test_raw_lines_give_the_same_entries_from_every_shipper(stack: Stack) -> None:
    """The same 200 nginx lines, raw: Fluent Bit `log`, Vector `message` (json, ndjson, text) and syslog-ng."""
    reference = stack.run(CASES["fluent-bit/raw-line.json.gzip"])
    for case_id in ("vector/raw.json.zlib", "vector/raw.ndjson", "vector/raw.text.snappy", "syslog-ng/ndjson"):
        assert same_entries(stack.run(CASES[case_id]), reference), case_id


LINE_7 = ("203.0.113.66", "2026-11-25T08:00:19Z")  # user agent with \" : VRL's nginx regex fails on it
LINE_23 = ("192.0.2.14", "2026-11-25T08:02:07Z")  # nginx's \xC3\xAF and \x22 escapes in path and agent


def line(entries: list[dict[str, Any]], which: tuple[str, str]) -> list[dict[str, Any]]:
    return [e for e in entries if (e["ip"], e["timestamp"]) == which]


def without(entries: list[dict[str, Any]], *lines: tuple[str, str]) -> list[dict[str, Any]]:
    return [e for e in entries if (e["ip"], e["timestamp"]) not in lines]


def test_vector_parsed_events_match_the_fluent_bit_parser(stack: Stack) -> None:
    """parse_apache_log and parse_nginx_log fields give what Fluent Bit's nginx parser gives,
    but for lines 7 and 23 (covered by the two tests below)."""
    fluent_bit = stack.run(CASES["fluent-bit/nginx-combined.json"])
    assert len(without(fluent_bit, LINE_7, LINE_23)) == 198
    for case_id in ("vector/apache-parsed.ndjson.zstd", "vector/nginx-parsed.json.gzip"):
        vector = stack.run(CASES[case_id])
        assert same_entries(without(vector, LINE_7, LINE_23), without(fluent_bit, LINE_7, LINE_23)), case_id


@pytest.mark.parametrize("case_id", ["vector/apache-parsed.ndjson.zstd", "vector/nginx-parsed.json.gzip"])
def test_vector_presets_undo_nginx_escapes_like_the_fluent_bit_preset(stack: Stack, case_id: str) -> None:
    expected = line(stack.run(CASES["fluent-bit/nginx-combined.json"]), LINE_23)
    assert expected and expected[0]["path"] == "/wiki/na\u00efve_bayes"
    assert line(stack.run(CASES[case_id]), LINE_23) == expected


def test_vector_event_that_vrl_could_not_parse_is_still_mapped(stack: Stack) -> None:
    entries = stack.run(CASES["vector/nginx-parsed.json.gzip"])
    assert len(line(entries, LINE_7)) == 1


def test_vector_nginx_parse_failure_is_reported_with_its_index(stack: Stack) -> None:
    case = CASES["vector/nginx-parsed.json.gzip"]
    body, headers, _ = case.request()
    answer, _ = stack.post_and_deliver(case.path, body, headers)
    if answer["rejected"]:
        assert len(answer["errors"]) == 1 and answer["errors"][0].startswith("$[7]."), answer


def test_plain_app_posts_one_json_object_per_request(stack: Stack) -> None:
    """An app that logs one request per POST: a single JSON object, plain or gzip, no array."""
    record = json.loads((FLUENT_BIT / "nginx-json.json.no-date" / "records.jsonl").read_text().splitlines()[0])
    body = json.dumps(record).encode()
    for payload, headers in [(body, {"Content-Type": "application/json"}),
                             (gzip.compress(body), {"Content-Type": "application/json", "Content-Encoding": "gzip"})]:
        answer, entries = stack.post_and_deliver("/ingest/fb-json", payload, headers)
        assert (answer["accepted"], answer["rejected"]) == (1, 0) and len(entries) == 1
        assert entries[0]["path"] == record["request_uri"].split("?")[0]


# --- auth, as each shipper sends it -----------------------------------------------------------------


def small_body() -> tuple[bytes, dict[str, str]]:
    lines = (SYSLOG_NG / "ndjson" / "body.bin").read_bytes().split(b"\n")[:2]
    return b"\n".join(lines), {"Content-Type": "application/x-ndjson"}


@pytest.mark.parametrize("auth, status", [
    ({"Authorization": "Bearer " + SYSLOG_NG_TOKEN}, 200),                       # syslog-ng headers(), Vector bearer
    ({"Authorization": "Basic " + base64.b64encode(f"any:{SYSLOG_NG_TOKEN}".encode()).decode()}, 200),  # basic
    ({"x-api-key": SYSLOG_NG_TOKEN}, 200),                                        # direct integrations
    ({"Authorization": "Bearer wrong-token"}, 401),
    ({"Authorization": "Basic " + base64.b64encode(f"{SYSLOG_NG_TOKEN}:wrong".encode()).decode()}, 401),
    ({"x-api-key": FB_TOKEN}, 401),                                               # another source's token
    ({}, 401),
], ids=["bearer", "basic-password", "x-api-key", "wrong-bearer", "token-as-basic-user", "other-sources-token", "none"])
def test_token_auth(stack: Stack, auth: dict[str, str], status: int) -> None:
    body, headers = small_body()
    before = stack.accepted_so_far()
    if status == 200:
        answer, entries = stack.post_and_deliver("/ingest/syslog-ng", body, {**headers, **auth})
        assert answer["accepted"] == 2 and len(entries) == 2
        return
    response = http_request(stack.url("/ingest/syslog-ng"), "POST", body, headers={**headers, **auth})
    assert response.status == 401, response.body
    assert response.json()["status"] == "error" and "token" in response.json()["error"]
    assert response.headers.get("www-authenticate", "").startswith("Basic")
    time.sleep(0.3)
    assert stack.accepted_so_far() == before


def test_fluent_bit_bearer_header_as_in_the_yaml_config(stack: Stack) -> None:
    body, headers, _ = CASES["fluent-bit/nginx-combined.json_lines.gzip"].request()
    headers = {**headers, "Authorization": f"Bearer {FB_TOKEN}", "X-Fluent-Tag": "nginx.access"}
    answer, entries = stack.post_and_deliver("/ingest/fluentbit", body, headers)
    assert answer["accepted"] == 200 and answer["rejected"] == 0 and len(entries) == 200


# --- answers each shipper's retry rules act on ----------------------------------------------------------


def test_400_only_when_nothing_decodes(stack: Stack) -> None:
    url = stack.url("/ingest/fb-json")
    for body, headers in [
        (b'[{"date":1795593600.0,"remote_addr":"192.0.2.1"', {"Content-Type": "application/json"}),  # cut short
        (b"\x1f\x8b\x08\x00garbage", {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        (b"{oops}\n{also bad}\n", {"Content-Type": "application/x-ndjson"}),
    ]:
        response = http_request(url, "POST", body, headers=headers)
        assert response.status == 400, (body, response.status, response.body)
        assert response.json()["status"] == "error"


def test_one_bad_record_is_reported_and_the_rest_delivered(stack: Stack) -> None:
    """Fluent Bit and Vector drop a 4xx request whole: a bad line must not cost the other 199."""
    body, headers, _ = CASES["fluent-bit/nginx-json.json_lines"].request()
    lines = body.split(b"\n")
    lines[3] = lines[3][: len(lines[3]) // 2]  # a truncated line
    answer, _entries = stack.post_and_deliver("/ingest/fb-json", b"\n".join(lines), headers)
    assert (answer["accepted"], answer["rejected"]) == (199, 1)
    assert len(answer["errors"]) == 1 and answer["errors"][0].startswith("$[3]: line 4 "), answer


def test_records_that_decode_but_cannot_map_get_200_with_reasons(stack: Stack) -> None:
    """Retrying would fail again, so 200 (no retry) with the reason, not 4xx/5xx."""
    response = http_request(stack.url("/ingest/fb-json"), "POST", [{"foo": 1}, {"log": "not an access log"}])
    assert response.status == 200, response.body
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (0, 2) and len(answer["errors"]) == 2
    assert answer["errors"][0].startswith("$[0].") and answer["errors"][1].startswith("$[1].")


@pytest.mark.parametrize("headers, named", [
    ({"Content-Type": "application/json", "Content-Encoding": "br"}, "br"),
    ({"Content-Type": "application/json", "Content-Encoding": "gzip, lz4"}, "lz4"),
    ({"Content-Type": "application/xml"}, "application/xml"),
    ({"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}, "application/x-protobuf"),
], ids=["brotli", "lz4-layer", "xml", "protobuf"])
def test_415_names_what_it_cannot_read(stack: Stack, headers: dict[str, str], named: str) -> None:
    response = http_request(stack.url("/ingest/fb-json"), "POST", b"{}", headers=headers)
    assert response.status == 415, response.body
    assert named in response.json()["error"]


def test_full_queue_answers_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    """Backpressure: 503 + Retry-After, which Fluent Bit, Vector and (with this repo's config) syslog-ng retry."""
    body, headers, _ = CASES["fluent-bit/nginx-combined.json.gzip"].request()
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW], faults={"down": True}) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), env=TOKENS,
                  queue_max_size="256KiB", max_body_size="64KiB") as relay:
        url = relay.base_url + "/ingest/fluentbit"
        statuses = []
        for _ in range(400):  # items are stored compressed: it takes a while to fill 256KiB
            response = http_request(url, "POST", body, headers=headers)
            statuses.append(response.status)
            if response.status != 200:
                break
        assert statuses[0] == 200 and statuses[-1] == 503, statuses
        assert int(response.headers["retry-after"]) >= 1
        assert "full" in response.json()["error"]
        acknowledged = 200 * (len(statuses) - 1)
        upstream.set_faults(down=False)
        wait_until(lambda: upstream.stats()["entries_accepted"] >= acknowledged, timeout=30,
                   message=lambda: f"the queue never drained\n{relay.log_tail()}")
        retried = http_request(url, "POST", body, headers=headers)  # what the shipper does next
        assert retried.status == 200 and retried.json()["accepted"] == 200
        wait_until(lambda: upstream.stats()["entries_accepted"] >= acknowledged + 200, timeout=30)


# --- a real shipper, where one is installed ------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("syslog-ng"), reason="syslog-ng is not installed (Debian: syslog-ng-core, syslog-ng-mod-http)")
def test_real_syslog_ng_with_the_shipped_config(stack: Stack, tmp_path: Path) -> None:
    """syslog-ng follows a log with configs/shippers/syslog-ng.conf (2 workers) and every line arrives."""
    log = tmp_path / "access.log"
    shutil.copy(VECTOR / "source.log", log)
    conf = (SHIPPERS / "syslog-ng.conf").read_text()
    conf = conf.replace("/var/log/nginx/access.log", str(log))
    conf = conf.replace("/var/lib/syslog-ng/disk-buffer", str(tmp_path / "disk-buffer"))
    (tmp_path / "syslog-ng.conf").write_text(conf)
    reference = stack.run(CASES["syslog-ng/ndjson"])
    before = len(stack.upstream.entries())
    env = {**os.environ, "RELAY_URL": stack.relay.base_url, "RELAY_TOKEN": SYSLOG_NG_TOKEN}
    with open(tmp_path / "syslog-ng.log", "wb") as out:
        proc = subprocess.Popen(
            ["syslog-ng", "-F", "-f", str(tmp_path / "syslog-ng.conf"), "-R", str(tmp_path / "persist"),
             "-p", str(tmp_path / "pid"), "-c", str(tmp_path / "ctl"), "--no-caps"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: stack.accepted_so_far() >= before + 200, timeout=20,
                   message=lambda: (tmp_path / "syslog-ng.log").read_text(errors="replace"))
    finally:
        proc.terminate()
        proc.wait(10)
    time.sleep(0.3)
    assert same_entries(stack.upstream.entries()[before:], reference)
