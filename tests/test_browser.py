"""End to end: the real server in a child process, the page driven by headless Chromium.

Uses Debian's ``chromium`` and ``chromium-driver`` packages through Selenium (``.ci/run``
installs them). Outside CI the test skips when they are missing; in CI (``CI=true``) it fails.
The screenshot lands in ``artifacts/browser.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "examples" / "photos"
ARTIFACTS = ROOT / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
]


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = (
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    from facegender.serve.local import LocalServer

    with LocalServer(model=tiny_checkpoint) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(monkeypatch_module):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    monkeypatch_module.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    profile = tempfile.mkdtemp(prefix="facegender-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _wait_result(driver, timeout: float = 180.0) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: (
            d.find_element("tag name", "body").get_attribute("data-state") in ("done", "error")
        )
    )
    return driver.find_element("tag name", "body").get_attribute("data-state")


def _api(server, path: Path) -> dict:
    req = urllib.request.Request(
        server.url + "/v1/predict",
        data=path.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def test_page_upload_shows_boxes_and_probabilities(server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element("id", "model").text.startswith("model ")
    )
    photo = PHOTOS / "two_people.jpg"
    expected = _api(server, photo)  # also warms the server up (detector, first inference)
    browser.find_element("id", "file").send_keys(str(photo))
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        state = _wait_result(browser)
    finally:
        browser.save_screenshot(str(ARTIFACTS / "browser.png"))
    assert state == "done", browser.find_element("id", "status").text
    rows = browser.find_elements("css selector", "#faces li.face")
    boxes = browser.find_elements("css selector", "#boxes .box")
    assert len(expected["faces"]) == 2
    assert len(rows) == len(boxes) == len(expected["faces"])
    for row, box, face in zip(rows, boxes, expected["faces"], strict=True):
        p = float(row.get_attribute("data-female-probability"))
        assert p == pytest.approx(face["female_probability"])
        assert row.get_attribute("data-gender") == face["gender"]
        assert face["gender"] in box.text and face["gender"] in box.get_attribute("class")
    assert "2 faces found" in browser.find_element("id", "status").text

    # The boxes sit where the API says, on the photo as the browser shows it.
    img = browser.find_element("id", "photo")
    assert img.size["width"] > 100 and browser.execute_script("return arguments[0].complete", img)
    sx = img.size["width"] / expected["width"]
    for box, face in zip(boxes, expected["faces"], strict=True):
        x = box.location["x"] - img.location["x"]
        assert abs(x - face["box"][0] * sx) <= 4
        assert abs(box.size["width"] - face["box"][2] * sx) <= 8

    assert browser.save_screenshot(str(ARTIFACTS / "browser.png"))
    assert (ARTIFACTS / "browser.png").stat().st_size > 10_000

    # Everything the page loaded came from this server: no CDN.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    remote = [u for u in urls if not u.startswith((server.url, "blob:", "data:"))]
    assert urls and not remote, urls
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def test_page_reports_errors(server, browser, tmp_path):
    browser.get(server.url + "/")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    browser.find_element("id", "file").send_keys(str(bad))
    assert _wait_result(browser) == "error"
    assert "415" in browser.find_element("id", "status").text
    assert "not an image" in browser.find_element("id", "status").text
    assert browser.find_elements("css selector", "#faces li") == []
    assert server.alive()
