"""A real headless Chromium (Debian's ``chromium`` and ``chromedriver``) for the browser tests.

Selenium drives it through chromedriver; waits are on conditions of the page (an element's
text, an attribute), never a fixed sleep. Without the two programs the tests skip, except in CI
(``CI`` set), where ``.ci/run`` installs them and a skip would hide a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# Long enough for a two-core machine shared with other jobs.
PAGE_TIMEOUT = 90.0


def find_browser() -> tuple[str, str]:
    """The paths of chromium and chromedriver, or a skip (a failure in CI)."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@contextmanager
def headless_chromium(profile: Path) -> Iterator[object]:
    """A Chromium of its own (profile in ``profile``), quit afterwards."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        # Tests run as root in CI, where Chromium's sandbox refuses to start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield browser
    finally:
        browser.quit()


def wait_until(browser: object, condition: Callable[[object], object], what: str) -> object:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, PAGE_TIMEOUT, poll_frequency=0.2).until(condition)  # type: ignore[arg-type]
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}") from None
