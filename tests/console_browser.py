"""The web console in a real headless browser: `maas up --auth` as a user starts it, Debian's
`chromium` driven through Debian's `chromium-driver` by Selenium (both found on PATH and
installed by `make setup`; Selenium Manager never runs, nothing is downloaded), and the
browser on the console's pages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from maas.cli.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "console"
WINDOW = (1280, 900)
PHONE = (390, 844)


@dataclass(frozen=True)
class Up:
    """A running `maas up --auth`: its gateway, its console's URL and the admin key."""

    target: str
    console: str
    admin_key: str


def wait_for_line(lines: list[str], prefix: str, proc: subprocess.Popen[str],
                  timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        found = next((line for line in list(lines) if line.startswith(prefix)), None)
        if found:
            return found.strip()
        time.sleep(0.1)
    raise AssertionError(f"`maas up` printed no {prefix!r}:\n{''.join(lines[-40:])}")


@contextmanager
def running_up(data: Path) -> Iterator[Up]:
    """`maas up --auth` (one worker, its console on a free port) until SIGTERM at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maas.cli.main", "up", "--auth", "--no-demo", "--workers", "1",
         "--port", str(port), "--console-port", "0", "--data-dir", str(data)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MAAS_LOG_LEVEL": "WARNING"})
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for_line(lines, "maas ready:", proc, 90)
        console = wait_for_line(lines, "maas console: ", proc, 10).split()[-1].rstrip("/")
        yield Up(f"127.0.0.1:{port}", console, (data / "admin.key").read_text().strip())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:  # it did not stop: nothing of it outlives the test
                proc.kill()
                proc.wait(10)
        reader.join(10)
        proc.stdout.close()


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and its chromedriver, on PATH; a missing one fails the test."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("the browser tests need Debian's `chromium` and `chromium-driver` "
                    f"(found chromium={browser}, chromedriver={driver}): run `make setup`")
    return browser, driver


@contextmanager
def headless_chromium() -> Iterator[Chrome]:
    """Debian's Chromium, headless, logging its console. The driver is named explicitly, so
    Selenium Manager never runs (and SE_OFFLINE forbids it any download)."""
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        driver = Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


@dataclass
class Console:
    """The browser on the console's pages, logged in with one key at a time."""

    driver: Chrome
    base: str
    key: str = field(default="", repr=False)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def log_in(self, key: str) -> None:
        """Through the login form, as a user would."""
        if key == self.key:
            return
        self.open("/login")
        self.driver.delete_all_cookies()
        self.open("/login")
        self.driver.find_element(By.ID, "api_key").send_keys(key)
        self.driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        self.until(lambda d: urlsplit(d.current_url).path == "/models")
        self.key = key

    def until(self, condition: Callable[[Chrome], Any], timeout_s: float = 30) -> Any:
        return WebDriverWait(self.driver, timeout_s, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException,
                                                 StaleElementReferenceException),
                             ).until(condition)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def script_errors(self) -> list[str]:
        """The SEVERE entries of the browser's log since the last call."""
        log = self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
        return [e["message"] for e in log if e["level"] == "SEVERE"]

    def screenshot(self, name: str, size: tuple[int, int] = WINDOW) -> None:
        """The whole page as NAME.png: in docs/console/ with MAAS_SCREENSHOTS=1, in DIR with
        MAAS_SCREENSHOTS=DIR, nowhere without it (so a test run rewrites no committed file)."""
        chosen = os.environ.get("MAAS_SCREENSHOTS", "")
        if not chosen:
            return
        folder = SCREENSHOTS if chosen == "1" else Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        width, height = size
        for _ in range(2):  # a viewport of the page's full height, at that width
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": size == PHONE})
            height = max(size[1], int(self.js("return document.body.scrollHeight")))
        time.sleep(0.3)  # the charts redraw for the new size
        self.driver.save_screenshot(str(folder / f"{name}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
