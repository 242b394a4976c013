"""The browser viewer in a real headless browser (Debian's chromium + chromium-driver, Selenium).

The page is opened while the demo server runs the real clip. The checks read the page's own
canvases back as PNG: the 2D overlay must have skeleton pixels, in each person's colour, inside
the boxes that the server's annotation (read independently from /v1/stream) gives for the frame
the page drew; the 3D canvas must not be blank, must change as the people move, and must turn
when dragged. A screenshot is kept in out/test-artefacts/. A second test stops the server under
the page and starts it again: the page must say the stream stopped, then reconnect by itself.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from http_server import OUT, DemoServer, StreamReader
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

# Debian's browser binary itself: its /usr/bin/chromium wrapper only adds a CPU check that reads
# /proc/cpuinfo (which a Raspberry Pi emulation in another test may replace).
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1100")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), (f"{path} is missing: install Debian's browser with "
                                    "`apt-get install chromium chromium-driver`")
    profile = tempfile.mkdtemp(prefix="edge-pose-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    s = DemoServer()
    try:
        yield s.wait_ready()
    finally:
        assert s.stop() == 0, s.log()


def _state(driver: WebDriver) -> dict[str, Any]:
    text = driver.execute_script(
        "const s = window.edgeViewer; return JSON.stringify(s ? {conn: s.conn, "
        "annotations: s.annotations, framesDrawn: s.framesDrawn, lastDrawn: s.lastDrawn, "
        "view3dDraws: s.view3dDraws} : null);")
    state: dict[str, Any] = json.loads(text) if text else {}
    return state


def _canvas(driver: WebDriver, canvas_id: str) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
    """(H, W, 4) uint8 RGBA of a canvas, and the page's state at the same instant."""
    got = driver.execute_script(
        "const s = window.edgeViewer; return [document.getElementById(arguments[0])"
        ".toDataURL('image/png'), JSON.stringify({lastDrawn: s.lastDrawn, "
        "ids: s.lastAnnotation ? s.lastAnnotation.persons.map(p => p.id) : []})];", canvas_id)
    png = base64.b64decode(got[0].split(",", 1)[1])
    bgra = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert bgra is not None and bgra.shape[2] == 4, "canvas is not an RGBA PNG"
    rgba = np.asarray(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA), np.uint8)
    return rgba, json.loads(got[1])


def _wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _classes(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).get_attribute("class") or ""


def _hue(rgba: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Hue in degrees of (N, 4) RGBA pixels."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgba[None, :, :3]), cv2.COLOR_RGB2HSV_FULL)[0]
    return np.asarray(hsv[:, 0], np.float64) * 360.0 / 256.0


def _person_hue(track_id: int) -> float:
    """The viewer's colour of a track id: hsl(id * 137.508 mod 360, 100 %, 50 %)."""
    return (track_id * 137.508) % 360.0


def test_viewer_draws_live_skeletons_and_3d(server: DemoServer, browser: WebDriver) -> None:
    reader = StreamReader(server)  # the server's annotations, read apart from the page
    reader.start()
    try:
        browser.get(f"http://127.0.0.1:{server.port}/")
        _wait("frames drawn with people on them", lambda: (
            (s := _state(browser)).get("framesDrawn", 0) >= 5
            and (s.get("lastDrawn") or {}).get("persons", 0) >= 1), 90)
        assert _state(browser)["conn"] == "live"

        # 2D: skeleton pixels in each person's colour inside that person's box.
        for _ in range(20):
            overlay, st = _canvas(browser, "overlay")
            drawn = st["lastDrawn"]
            ann = reader.annotations.get(drawn["frame_id"])
            if drawn["persons"] >= 1 and ann is not None and len(ann["persons"]) >= 1:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no drawn frame with people matched the server's stream")
        assert len(ann["persons"]) == drawn["persons"]
        h, w = overlay.shape[:2]
        assert 320 <= w <= 1280 and abs(w / h - 1768 / 994) < 0.01, (w, h)  # shown size
        opaque = overlay[:, :, 3] > 200
        assert opaque.sum() > 100, "the 2D overlay is empty"
        inside = np.zeros_like(opaque)
        for p in ann["persons"]:
            b = p["bbox"]
            x1, x2 = int((b["x1"] - 0.02) * w), int((b["x2"] + 0.02) * w) + 1
            y1, y2 = int((b["y1"] - 0.07) * h), int((b["y2"] + 0.02) * h) + 1
            x1, y1 = max(x1, 0), max(y1, 0)
            inside[y1:y2, x1:x2] = True
            px = overlay[y1:y2, x1:x2][opaque[y1:y2, x1:x2]]
            d = np.abs((_hue(px) - _person_hue(int(p["id"])) + 180.0) % 360.0 - 180.0)
            assert (d < 12).sum() >= 40, f"person {p['id']}: {(d < 12).sum()} pixels of its colour"
        share = (opaque & inside).sum() / opaque.sum()
        assert share > 0.97, f"{1 - share:.1%} of the skeleton pixels lie outside every box"
        video, _ = _canvas(browser, "video")
        assert video[:, :, :3].std() > 20, "the video canvas is blank"

        # 3D: not blank, changes as people move, turns when dragged.
        view_a, st_a = _canvas(browser, "view3d")
        background = np.array([0x0B, 0x0E, 0x12], np.uint8)
        drawn_px = np.any(view_a[:, :, :3] != background, axis=2)
        assert drawn_px.mean() > 0.01, "the 3D canvas is blank"
        sat = view_a[drawn_px]
        hues = _hue(sat)
        for tid in st_a["ids"]:
            d = np.abs((hues - _person_hue(tid) + 180.0) % 360.0 - 180.0)
            assert (d < 10).sum() >= 30, f"3D view: no skeleton in person {tid}'s colour"
        time.sleep(1.5)
        view_b, _ = _canvas(browser, "view3d")
        moved = np.any(view_a != view_b, axis=2).mean()
        assert moved > 0.001, "the 3D view did not change in 1.5 s"
        canvas = browser.find_element(By.ID, "view3d")
        before, _ = _canvas(browser, "view3d")
        ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(
            150, 40).release().perform()
        after, _ = _canvas(browser, "view3d")
        grid = np.any(before != after, axis=2).mean()
        assert grid > 0.01, "dragging did not turn the 3D view"

        # Rates against budgets and the people count.
        # Read in one script: the page rebuilds the table with every stats update.
        def stage_names() -> list[str]:
            names: list[str] = browser.execute_script(
                "return [...document.querySelectorAll('#stages tbody tr')]"
                ".map(r => r.cells[0].textContent);")
            return names

        _wait("the stage table", lambda: len(stage_names()) == 5, 20)
        assert stage_names() == ["detect", "pose2d", "pose3d", "track", "total"]
        assert browser.find_element(By.ID, "people").text.isdigit()
        assert browser.find_element(By.ID, "conn").text == "live"
        OUT.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(OUT / "viewer.png"))
        log = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
        errors = [e for e in log if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        reader.close()
    assert reader.error is None


def test_viewer_says_the_stream_stopped_and_reconnects(browser: WebDriver) -> None:
    first = DemoServer().wait_ready()
    port = first.port
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        _wait("live frames", lambda: _state(browser).get("framesDrawn", 0) >= 3, 60)
        assert first.stop() == 0
        _wait("the stopped message", lambda: browser.find_element(By.ID, "banner")
              .is_displayed(), 20)
        banner = browser.find_element(By.ID, "banner").text
        assert "Stream stopped" in banner or "does not answer" in banner, banner
        assert _state(browser)["conn"] in ("disconnected", "connecting")
        assert "stale" in _classes(browser, "stack2d")
        OUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUT / "viewer_stopped.png"))
        drawn = _state(browser)["framesDrawn"]
        second = DemoServer(port=port).wait_ready()
        try:
            _wait("the page to reconnect", lambda: (
                (s := _state(browser))["conn"] == "live" and s["framesDrawn"] > drawn + 3), 60)
            assert not browser.find_element(By.ID, "banner").is_displayed()
            assert "stale" not in _classes(browser, "stack2d")
        finally:
            assert second.stop() == 0
    finally:
        first.stop()
