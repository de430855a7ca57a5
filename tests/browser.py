"""A real headless browser for the tests of the pages: Debian's chromium driven by selenium 4.

    from browser import browser, save_screenshot      # noqa: F401  (pytest finds the fixture)

    def test_page(browser):
        browser.get(url)
        save_screenshot(browser, "page-opened")        # test-artifacts/page-opened.png

``new_browser(*extra_args)`` starts one outside a fixture (e.g. with
``--allow-file-access-from-files`` for a page opened from file://); close it with ``.quit()``.
Every browser gets a fresh profile folder, removed when it quits, so no test sees another's
cache, cookies or storage. Nothing is fetched from the network: background networking,
component updates and sync are off.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BASE_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync",
             # the pages play muted videos from script; a headless run has no user gesture to give
             "--autoplay-policy=no-user-gesture-required")


class Browser(webdriver.Chrome):
    """A Chrome webdriver that removes its own profile folder when it quits."""

    profile_dir: Path

    def quit(self) -> None:
        try:
            super().quit()
        finally:
            shutil.rmtree(self.profile_dir, ignore_errors=True)


def new_browser(*extra_args: str, width: int = 1400, height: int = 1000) -> Browser:
    """Start headless chromium with a fresh profile; ``extra_args`` are added to the standard ones."""
    profile_dir = Path(tempfile.mkdtemp(prefix="examrec-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*BASE_ARGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}", *extra_args):
        options.add_argument(arg)
    # Browser console messages become readable through driver.get_log("browser").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = Browser(service=Service(CHROMEDRIVER), options=options)
    except BaseException:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise
    driver.profile_dir = profile_dir
    driver.set_script_timeout(60)
    return driver


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh headless chromium for one test."""
    driver = new_browser()
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the window as ``test-artifacts/<name>.png`` and return the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The page's console messages at level SEVERE since the last call (uncaught errors included)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
