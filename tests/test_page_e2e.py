"""The live page in a real browser: Debian's chromium, headless, driven by selenium,
against ``quantmesh run`` (simulated exchange, SQLite).

The price comes from a short CSV replay - level, a dip and a rise that complete round
trips, then the feed ends - so the figures stand still and what the page shows can be
compared exactly with ``/api/status``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.cli.support import Daemon, api_status, changed, eventually, fast_config, write_config
from tests.servers.base import require_binary

TOKEN = "tok-page-e2e"
SYMBOL = "ETH/USDT"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "page.png"


def _prices() -> str:
    """6 s level at 2000, down to 1983 and up to 2013 a unit every 0.1 s, back to 2002."""
    path = [2000] * 30 + list(range(1999, 1982, -1)) + list(range(1984, 2014))
    path += list(range(2012, 2001, -1))
    times = [i * 0.2 for i in range(30)] + [6 + i * 0.1 for i in range(len(path) - 30)]
    return "timestamp,price\n" + "".join(f"{t:.1f},{p}\n" for t, p in zip(times, path, strict=True))


def _status(base: str) -> dict[str, Any]:
    return api_status(base, TOKEN)


def _eth(base: str) -> dict[str, Any]:
    symbol: dict[str, Any] = _status(base)["symbols"].get(SYMBOL, {})
    return symbol


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    eventually(condition, timeout, what, interval=0.2)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    chromium = require_binary("chromium", "/usr/bin/chromium")
    chromedriver = require_binary("chromedriver", "/usr/bin/chromedriver")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must download nothing
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def _card(driver: webdriver.Chrome) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'section[data-symbol="{SYMBOL}"]')


def _text(driver: webdriver.Chrome, css: str) -> str:
    try:
        return _card(driver).find_element(By.CSS_SELECTOR, css).text
    except Exception:  # noqa: BLE001 - not drawn yet, or redrawn under our feet: poll again
        return ""


def _orders_shown(driver: webdriver.Chrome) -> int:
    cells = _card(driver).find_elements(By.CSS_SELECTOR, ".ladder td[data-side]")
    return sum(int(cell.get_attribute("data-orders") or 0) for cell in cells)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_the_page_shows_the_ladder_and_pauses_a_symbol(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    (tmp_path / "prices.csv").write_text(_prices(), encoding="utf-8")
    config = changed(
        fast_config(),
        {
            "http": {"enabled": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
            "exchange.simulated.markets.ETHUSDT.feed": {"type": "csv", "path": "./prices.csv"},
        },
    )
    with Daemon(write_config(tmp_path, config), tmp_path) as daemon:
        events = daemon.wait_for("http_listening", 15)
        assert events, daemon.stderr
        base = f"http://127.0.0.1:{events[0]['port']}"

        def settled() -> bool:  # the replay is over: round trips done, orders resting
            eth = _eth(base)
            return (
                (eth.get("price_age_seconds") or 0) > 1.5
                and eth["open_orders"] > 0
                and float(eth["realized_pnl"]) > 0
            )

        _wait(settled, 40, "the replay completes round trips and ends")

        browser.get(f"{base}/")
        wait = WebDriverWait(browser, 15, poll_frequency=0.2)
        token = wait.until(lambda d: d.find_element(By.ID, "token"))
        wait.until(lambda _: token.is_displayed())
        token.send_keys(TOKEN)
        browser.find_element(By.ID, "by").send_keys("ana")
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        assert TOKEN not in browser.current_url

        status = _status(base)
        eth = status["symbols"][SYMBOL]
        wait.until(lambda d: _orders_shown(d) == eth["open_orders"])
        assert _orders_shown(browser) == len(eth["orders"]) == eth["open_orders"]
        assert _text(browser, ".open-orders") == str(eth["open_orders"])
        assert _text(browser, ".price") == eth["price"]
        assert _text(browser, ".pnl") == eth["realized_pnl"]
        assert _text(browser, ".inventory") == eth["inventory"]
        assert _text(browser, ".mode") == "active"
        for order in eth["orders"]:  # on its level's line: amount @ price
            line = f'.ladder tr[data-level="{order["level"]}"] td[data-side="{order["side"]}"]'
            assert f"{order['amount']} @ {order['price']}" in _text(browser, line), order
        for held in eth["levels"]:
            line = f'.ladder tr[data-level="{held["level"]}"]'
            assert _text(browser, f"{line} td.holding") == held["holding"], held
            assert _text(browser, f"{line} td:nth-child(2)") == held["price"], held
        header = browser.find_element(By.TAG_NAME, "header").text
        assert status["instance"] in header
        assert all(member in header for member in status["ownership"]["members"])

        _card(browser).find_element(By.CSS_SELECTOR, "input.reason").send_keys("CPI release")
        _card(browser).find_element(By.CSS_SELECTOR, 'button[data-action="pause"]').click()
        _wait(lambda: _eth(base)["control"]["mode"] == "paused", 10, "status shows the pause")
        control = _eth(base)["control"]
        assert (control["by"], control["reason"]) == ("ana", "CPI release")
        wait.until(lambda d: _text(d, ".mode") == "paused")
        wait.until(lambda d: "reason: CPI release" in _text(d, ".detail"))
        browser.save_screenshot(str(tmp_path / "page.png"))  # the test's artifact
        if os.environ.get("QM_UPDATE_SCREENSHOT"):  # the README's picture, on request
            DOCS_SCREENSHOT.write_bytes((tmp_path / "page.png").read_bytes())

        _card(browser).find_element(By.CSS_SELECTOR, 'button[data-action="resume"]').click()
        _wait(lambda: _eth(base)["control"]["mode"] == "active", 10, "status shows the resume")
        wait.until(lambda d: _text(d, ".mode") == "active")
        errors = [  # a CSP violation or a script error (the first poll's 401 is expected)
            entry
            for entry in browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped
            if entry["level"] == "SEVERE" and entry["source"] != "network"
        ]
        assert errors == [], errors
