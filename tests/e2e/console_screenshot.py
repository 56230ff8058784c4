"""Take docs/console.png: the console of a relay with realistic traffic flowing.

    .venv/bin/python -m tests.e2e.console_screenshot docs/console.png [--minutes 4]

Real processes (tests.support / tests.e2e.harness): one `relay serve` with three sources and
two sinks, each sink its own `relay mock-upstream`. Load: captured Fluent Bit requests to
`fluentbit`, upstream-form batches to `custom` at a rate that swells and ebbs (a few records
invalid: rejected or repaired), records without a host to `app` (rejected, kept for replay).
`profound`'s upstream refuses entries older than 15 days (upstream rejections); `archive`'s
upstream goes away for the last part of the run, so that sink backs off with a growing backlog.
Then the playground maps a pasted record and headless Chromium takes the whole page.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.browser import browser_available, start_browser, wait_for
from tests.e2e.harness import Relay, fixture, sink_toml
from tests.support import MockUpstream, http_request

TOKEN = "console-screenshot-token"
SOURCES = """\
[sources.fluentbit]
mapping = "fluentbit-nginx"
host = "www.example.com"

[sources.custom]
path = "/v1/logs/custom"
mapping = "profound"

[sources.app]
path = "/v1/logs/app"
mapping = "profound"
"""
PATHS = ["/", "/pricing", "/blog/launch", "/docs/api", "/login", "/static/app.js", "/robots.txt", "/sitemap.xml"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", "GPTBot/1.2", "ClaudeBot/1.0", "curl/8.5.0",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1) Safari/604.1", "PerplexityBot/1.0"]


def record(rng: random.Random, now: datetime) -> dict[str, Any]:
    when = now - timedelta(seconds=rng.uniform(0, 30))
    if rng.random() < 0.01:
        when -= timedelta(days=20)  # the relay keeps it (30 days); profound's upstream refuses it (15)
    entry: dict[str, Any] = {"timestamp": when.isoformat().replace("+00:00", "Z"),
                             "method": rng.choice(["GET"] * 8 + ["POST", "get"]),
                             "host": "www.example.com", "path": rng.choice(PATHS),
                             "status_code": rng.choice([200] * 12 + [301, 304, 404, 500]),
                             "ip": f"198.51.100.{rng.randint(1, 254)}", "user_agent": rng.choice(AGENTS),
                             "bytes_sent": rng.randint(200, 90000)}
    roll = rng.random()
    if roll < 0.012:
        entry["status_code"] = rng.choice([0, 999, 1200])  # rejected: out of range
    elif roll < 0.018:
        del entry["path"]  # rejected: required
    elif roll < 0.024:
        entry["timestamp"] = "yesterday at noon"  # rejected: not a time
    return entry


class Load(threading.Thread):
    def __init__(self, relay: Relay, seconds: float) -> None:
        super().__init__(daemon=True)
        self.relay, self.seconds, self.halt = relay, seconds, threading.Event()

    def run(self) -> None:
        rng = random.Random(12)
        fb_body, fb_headers, _ = fixture("nginx-combined.json.gzip")
        start = time.monotonic()
        tick = 0
        while not self.halt.is_set() and time.monotonic() - start < self.seconds:
            tick += 1
            t = time.monotonic() - start
            swell = 1.0 + 0.6 * math.sin(t / 40.0) + 0.2 * math.sin(t / 7.0)
            now = datetime.now(UTC)
            batch = [record(rng, now) for _ in range(int(120 * swell))]
            http_request(self.relay.base_url + "/v1/logs/custom", "POST", batch)
            if tick % 2 == 0:
                http_request(self.relay.base_url + "/ingest/fluentbit", "POST", fb_body, headers=fb_headers)
            if tick % 9 == 0:
                lost = {k: v for k, v in record(rng, now).items() if k != "host"}
                http_request(self.relay.base_url + "/v1/logs/app", "POST", [lost])
            self.halt.wait(0.25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--width", type=int, default=1920)
    args = parser.parse_args(argv)
    if not browser_available():
        print("needs /usr/bin/chromium and /usr/bin/chromedriver", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        with MockUpstream(tmp_dir, api_keys=["k1"], extra_args=["--max-age", "15d"], verbose=False) as main_up, \
                MockUpstream(tmp_dir, api_keys=["k2"], name="archive-up", verbose=False) as archive_up:
            sinks = (sink_toml("profound", main_up.url, "k1", batch_timeout="1s")
                     + sink_toml("archive", archive_up.url, "k2", batch_timeout="1s", retry_max_backoff="10s"))
            relay = Relay(tmp_dir, sinks, sources=SOURCES, admin_token=TOKEN, queue_max_size="2GiB")
            relay.config_path.write_text(relay.config_path.read_text().replace("[validation]\n", "[validation]\n#"))
            with relay:
                load = Load(relay, seconds)
                load.start()
                driver = start_browser(args.width, 1200)
                try:
                    driver.get(f"{relay.base_url}/-/console?token={TOKEN}")
                    load.join(timeout=seconds * 0.7)
                    archive_up.stop()  # the archive's upstream goes away for the rest of the run
                    load.join(timeout=seconds)
                    load.halt.set()
                    pasted = [record(random.Random(3), datetime.now(UTC)), {"path": "/no-host", "status_code": 200}]
                    pasted[0]["method"] = "get"
                    driver.find_element("css selector", "#map-records").send_keys(
                        "\n".join(json.dumps(r) for r in pasted))
                    from selenium.webdriver.support.ui import Select

                    Select(driver.find_element("css selector", "#map-mapping")).select_by_value("profound")
                    driver.find_element("css selector", "#map-host").send_keys("www.example.com")
                    driver.find_element("css selector", "#map-run").click()
                    wait_for(driver, lambda d: d.find_elements("css selector", "#map-output .map-row"), "mapped")
                    driver.execute_script("window.scrollTo(0, 0)")
                    height = driver.execute_script("return document.documentElement.scrollHeight")
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": args.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                    wait_for(driver, lambda d: d.find_elements("css selector", "#sinks .card"), "cards")
                    driver.save_screenshot(str(args.out))
                finally:
                    driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
