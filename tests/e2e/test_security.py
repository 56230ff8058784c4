"""Tokens and keys never leak; tokens in every form shippers send; TLS on the listener."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import PINNED_NOW, Relay, entries, sink_toml
from tests.support import MockUpstream, Process, http_request, wait_until

KEY = "upstream-secret-5f2a9c"
TOKEN = "shipper-token-81be7d"
SOURCES = f"""
[sources.secured]
mapping = "profound"
tokens = ["{TOKEN}", "second-token-3c1f"]
"""


def test_tokens_in_every_form_and_never_logged(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), extra=SOURCES) as relay:
        url = relay.base_url + "/ingest/secured"
        body = entries(0, 1)
        basic = base64.b64encode(f"fluentbit:{TOKEN}".encode()).decode()
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"x-api-key": TOKEN},
                        {"Authorization": f"Basic {basic}"}, {"Authorization": "Bearer second-token-3c1f"}):
            assert http_request(url, "POST", body, headers=headers).status == 200, headers
        for headers in ({}, {"Authorization": "Bearer wrong-token-aa11"}, {"x-api-key": TOKEN[:-1]},
                        {"Authorization": "Basic !!!notbase64"}):
            response = http_request(url, "POST", body, headers=headers)
            assert response.status == 401, headers
            assert "www-authenticate" in response.headers
            assert TOKEN not in response.body.decode()
        wait_until(lambda: upstream.stats()["entries_accepted"] == 4, timeout=20)
        log = relay.log_text()
        for secret in (TOKEN, "wrong-token-aa11", "second-token-3c1f", KEY):
            assert secret not in log
        assert KEY not in relay.metrics()


def test_upstream_key_is_never_logged_or_echoed(tmp_path: Path) -> None:
    with MockUpstream(tmp_path, api_keys=["the-right-key"], extra_args=["--now", PINNED_NOW]) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY)) as relay:
        assert http_request(relay.base_url + "/v1/logs/custom", "POST", entries(0, 3)).status == 200
        wait_until(lambda: "paused" in relay.log_text(), timeout=15, message=relay.log_tail)
        check = Process(["check-config", "-c", str(relay.config_path)], tmp_path, name="check")
        with check:
            assert check.wait(20) == 0
        for text in (relay.log_text(), relay.metrics(), check.log_text().split("\n", 1)[1]):
            assert KEY not in text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls_listener(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY))
        relay.config_path.write_text(relay.config_path.read_text().replace(
            "[server]", f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"'))
        Process.start(relay)  # Relay.start() probes plain HTTP; wait on the log instead
        try:
            relay.wait_for_log("listening on https://")
            context = ssl.create_default_context(cafile=str(cert))
            request = urllib.request.Request(f"https://127.0.0.1:{relay.port}/v1/logs/custom",
                                             data=json.dumps(entries(0, 1)).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                 urllib.request.ProxyHandler({}))
            wait_until(lambda: opener.open(request, timeout=5).status == 200, ignore=(OSError,), timeout=10)
            wait_until(lambda: upstream.stats()["entries_accepted"] >= 1, timeout=20)
            with pytest.raises(OSError):  # plain HTTP on the TLS port gets nowhere
                http_request(f"http://127.0.0.1:{relay.port}/healthz", timeout=3)
        finally:
            relay.stop()


# -- sources without tokens answer only loopback clients unless allow_anonymous (issue 13 #6) ----

OPEN_SOURCES = """
[sources.open]
mapping = "profound"

[sources.anon]
mapping = "profound"
allow_anonymous = true

[sources.secured]
mapping = "profound"
tokens = ["shipper-token-81be7d"]
"""


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine's own interfaces that is not loopback (connecting to it from
    here gives the relay a non-loopback peer); None when the machine has none."""
    try:
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for address in re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out):
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def test_open_source_answers_only_loopback_unless_allow_anonymous(tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=["--now", PINNED_NOW]) as upstream:
        relay = Relay(tmp_path, sink_toml("profound", upstream.url, KEY), sources=OPEN_SOURCES)
        relay.config_path.write_text(relay.config_path.read_text().replace(
            f'address = "127.0.0.1:{relay.port}"', f'address = "0.0.0.0:{relay.port}"'))
        with relay:
            outside = f"http://{address}:{relay.port}"
            refused = http_request(outside + "/ingest/open", "POST", entries(0, 1))
            assert refused.status == 401, refused.body
            error = refused.json()["error"]
            assert "sources.open.tokens" in error and "sources.open.allow_anonymous = true" in error, error
            assert http_request(outside + "/ingest/anon", "POST", entries(1, 1)).status == 200
            assert http_request(outside + "/ingest/secured", "POST", entries(2, 1),
                                headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
            assert http_request(outside + "/ingest/secured", "POST", entries(3, 1)).status == 401
            assert http_request(relay.base_url + "/ingest/open", "POST", entries(4, 1)).status == 200  # loopback
            wait_until(lambda: upstream.stats()["entries_accepted"] == 3, timeout=20)
            log = relay.log_text()
            assert re.search(r"WARNING .*source anon accepts writes from any client.*allow_anonymous", log), log
            assert re.search(r"source open: .*no token: loopback clients only", log), log
            check = Process(["check-config", "-c", str(relay.config_path)], tmp_path, name="check")
            with check:
                assert check.wait(20) == 0
            text = check.log_text()
            assert "warning: sources.anon: allow_anonymous = true" in text, text
            assert "auth:    none: loopback clients only" in text, text
