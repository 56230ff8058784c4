"""The console in a real browser (headless Chromium via Selenium) against real `relay serve` and
`relay mock-upstream` processes: it opens with the token exchanged for a cookie and no console
errors, follows a sink from running to backing off when upstream goes away and back, shows a
rejected record, replays it after a fixed mapping into upstream, and maps a pasted record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.browser import browser, console_errors, wait_for  # noqa: F401  (browser: a fixture)
from tests.e2e.harness import Relay, entries, sink_toml
from tests.support import MockUpstream, http_request, wait_until

TOKEN = "console-admin-token-e2e"
KEY = "test-key"
PIN = ["--now", "2026-11-25T09:30:00+00:00"]
SOURCES = """\
[sources.app]
path = "/v1/logs/app"
mapping = "profound"
"""


def open_console(driver: Any, relay: Relay) -> None:
    """Sign in the way an operator does: the token once in the URL, then the cookie."""
    driver.get(f"{relay.base_url}/-/console?token={TOKEN}")
    wait_for(driver, lambda d: d.current_url == f"{relay.base_url}/-/console", "the redirect to /-/console")
    wait_for(driver, lambda d: d.find_elements("css selector", "#sinks .card"), "the sink cards")
    assert TOKEN not in driver.page_source


def sink_state(driver: Any, name: str) -> str:
    cards = driver.find_elements("css selector", f'#sinks .card[data-sink="{name}"]')
    return str(cards[0].get_attribute("data-state")) if cards else ""


def rejection(driver: Any, marker: str, *, press: bool = False) -> tuple[str, str] | None:
    """(reason, record text) of the shown rejection whose record holds `marker`; `press`: its button too."""
    for item in driver.find_elements("css selector", "#rejections li.rejection"):
        if marker in item.text:
            if press:
                item.find_element("css selector", "button").click()
            return (item.find_element("css selector", ".reason").text,
                    item.find_element("css selector", "pre.record").text)
    return None


def post(relay: Relay, path: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    response = http_request(relay.base_url + path, "POST", records)
    assert response.status == 200, response.body
    return response.json()  # type: ignore[no-any-return]


def test_console_follows_a_sink_down_and_back_without_errors(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=PIN) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), admin_token=TOKEN) as relay:
        open_console(browser, relay)
        wait_for(browser, lambda d: sink_state(d, "profound") == "running", "sink running")
        post(relay, "/v1/logs/custom", entries(0, 5))
        wait_until(lambda: len(upstream.entries()) == 5, timeout=20)
        upstream.stop()  # upstream goes away
        post(relay, "/v1/logs/custom", entries(5, 5))
        wait_for(browser, lambda d: sink_state(d, "profound") == "backing_off", "sink backing off")
        card = browser.find_element("css selector", '#sinks .card[data-sink="profound"]')
        assert card.find_element("css selector", ".sink-state").text.lower() == "backing off"
        assert card.find_element("css selector", ".error").text  # the upstream error, on the card
        upstream.start()  # and comes back on the same port
        wait_for(browser, lambda d: sink_state(d, "profound") == "running", "sink running again", timeout=30)
        wait_until(lambda: sorted(e["path"] for e in upstream.entries()) == sorted(f"/e2e/{i}" for i in range(10)),
                   timeout=20)
        wait_for(browser, lambda d: "last error" in d.find_element(
            "css selector", '#sinks .card[data-sink="profound"]').text, "the last error, after recovery")
        accepted = '#sources .card[data-source="custom"] .stat[data-figure="accepted total"] b'
        wait_for(browser, lambda d: d.find_element("css selector", accepted).text == "10", "10 accepted, on the card")
        source = browser.find_element("css selector", '#sources .card[data-source="custom"]')
        assert source.find_elements("css selector", "svg.chart polyline")  # the chart has its lines
        for secret in (TOKEN, KEY):
            assert secret not in browser.page_source
        assert console_errors(browser) == []


def test_playground_maps_a_pasted_record(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    sink = sink_toml("profound", "http://127.0.0.1:9/v1/logs/custom", KEY)
    with Relay(tmp_path, sink, admin_token=TOKEN) as relay:
        open_console(browser, relay)
        pasted = [entries(0, 1, method="get")[0], {"path": "/nothing-else"}]
        browser.find_element("css selector", "#map-records").send_keys("\n".join(json.dumps(r) for r in pasted))
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("css selector", "#map-mapping")).select_by_value("profound")
        browser.find_element("css selector", "#map-host").send_keys("www.example.com")
        browser.find_element("css selector", "#map-run").click()
        rows = wait_for(browser, lambda d: d.find_elements("css selector", "#map-output .map-row"), "mapped rows")
        assert [r.get_attribute("data-status") for r in rows] == ["repaired", "rejected"]
        assert '"method":"GET"' in rows[0].text and "/e2e/0" in rows[0].text  # the entry made, upper-cased
        assert "repaired: method" in rows[0].text
        summary = browser.find_element("css selector", "#map-summary").text
        assert summary.startswith("2 records: 1 entries (1 repaired), 1 rejected")
        assert console_errors(browser) == []


def test_a_rejection_shows_with_its_record_and_replay_after_a_fix_delivers_it(
        tmp_path: Path, browser: Any) -> None:  # noqa: F811
    with MockUpstream(tmp_path, api_keys=[KEY], extra_args=PIN) as upstream, \
            Relay(tmp_path, sink_toml("profound", upstream.url, KEY), admin_token=TOKEN, sources=SOURCES) as relay:
        # the user agent is markup: shown as text, never run (and CSP would report it as an error)
        record = {"timestamp": "2026-11-25T09:00:00Z", "method": "GET", "path": "/needs-a-host",
                  "status_code": 200, "ip": "192.0.2.1", "user_agent": "<img src=x onerror=alert(1)>"}
        answer = post(relay, "/v1/logs/app", [record])
        assert answer["rejected"] == 1 and "host" in answer["errors"][0]  # the mapping has no host to give
        state = http_request(relay.base_url + "/-/console/state", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert state["rejections"]  # the page polls /-/rejections only where it is served
        open_console(browser, relay)
        # the list is redrawn every few seconds: read it, and press its buttons, within one wait step
        reason, text = wait_for(browser, lambda d: rejection(d, "/needs-a-host"), "the rejection with its record")
        assert "host" in reason
        shown = json.loads(text)
        assert shown["path"] == "/needs-a-host" and shown["user_agent"] == record["user_agent"]
        assert not browser.find_elements("css selector", "#rejections img")
        # the fix: the source gets its host; then replay from the console
        relay.config_path.write_text(relay.config_path.read_text().replace(
            'mapping = "profound"\n', 'mapping = "profound"\nhost = "www.example.com"\n'))
        reload = http_request(relay.base_url + "/-/reload", "POST", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reload.status == 200, reload.body
        wait_for(browser, lambda d: "ok" in d.find_element("css selector", "#reload").text, "the reload on the page")
        # the playground, from the rejection, with the fixed config: the record now maps
        wait_for(browser, lambda d: rejection(d, "/needs-a-host", press=True), "try in playground")
        browser.find_element("css selector", "#map-run").click()
        rows = wait_for(browser, lambda d: d.find_elements("css selector", "#map-output .map-row"), "mapped rows")
        assert [r.get_attribute("data-status") for r in rows] == ["ok"] and "www.example.com" in rows[0].text
        browser.find_element("css selector", "#replay").click()
        result = wait_for(browser, lambda d: d.find_element("css selector", "#replay-result").text.startswith(
            "replayed") and d.find_element("css selector", "#replay-result").text, "the replay's result")
        assert "1 accepted" in result and "0 still rejected" in result
        wait_until(lambda: [e for e in upstream.entries() if e["path"] == "/needs-a-host"], timeout=20)
        (delivered,) = [e for e in upstream.entries() if e["path"] == "/needs-a-host"]
        assert delivered["host"] == "www.example.com"
        assert console_errors(browser) == []
