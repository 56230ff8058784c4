"""A real headless Chromium (Debian's `chromium` + `chromium-driver`, `make system-deps`) driven
by Selenium, for the console tests; they skip with BROWSER_MISSING where it is not installed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RELAY_CHROMEDRIVER", "/usr/bin/chromedriver"))
BROWSER_MISSING = (f"needs headless Chromium: {CHROMIUM} and {CHROMEDRIVER} (Debian chromium and chromium-driver, "
                   "`make system-deps`; or set RELAY_CHROMIUM / RELAY_CHROMEDRIVER)")
WAIT = 20.0  # seconds for anything the page shows to appear


def browser_available() -> bool:
    return all(p.is_file() and os.access(p, os.X_OK) for p in (CHROMIUM, CHROMEDRIVER))


def start_browser(width: int = 1600, height: int = 1300) -> Any:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers on the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-proxy-server", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not browser_available():
        pytest.skip(BROWSER_MISSING)
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors since the last call (failed loads, script errors, CSP refusals)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(driver: Any, predicate: Any, message: str, timeout: float = WAIT) -> Any:
    """WebDriverWait: poll `predicate(driver)` until truthy; the page's errors join the failure message."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(predicate)
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s: {message}; browser console: "
                             f"{driver.get_log('browser')}") from None
