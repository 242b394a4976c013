"""The browser viewer in a real headless browser (Debian's chromium + chromium-driver, Selenium).

The page is opened while the demo server runs the real clip. The checks read the page's own
canvases back as PNG: the 2D overlay must have skeleton pixels, in each person's colour, inside
the boxes that the server's annotation (read independently from /v1/stream) gives for the frame
the page drew; the 3D canvas must not be blank, must change as the people move, and must turn
when dragged. A screenshot is kept in out/test-artefacts/. A second test stops the server under
the page and starts it again: the page must say the stream stopped, then reconnect by itself.

The photo tests give the page real photos (zidane.jpg, pinned in tests/testdata.py) through its
file input and by a drop: the page must draw the photo, the skeletons where the annotation the
device returned puts them, the photo's people in 3D, their count, and mark it as not live while
the stream keeps arriving underneath; every refusal (400, 413, 415, 429, server down) must be a
message on the page; "Back to live" must bring live frames back.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from http_server import OUT, DemoServer, StreamReader
from PIL import Image
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from testdata import photo

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


def _assert_skeletons_in_boxes(overlay: npt.NDArray[np.uint8],
                               persons: list[dict[str, Any]]) -> None:
    """Skeleton pixels of (H, W, 4) RGBA ``overlay`` in each person's colour inside its box.

    The box is the extent of the person's drawn joints (the annotation's ``bbox``), widened by
    the page's line and joint size; its label (``#id``, a photo's with its score) is drawn
    above the box's top left corner in a font of ``8 + 6 * thick`` px, so its area is allowed
    too (a far person's label is wider than the person).
    """
    h, w = overlay.shape[:2]
    thick = max(2, round(min(w, h) / 240))  # the page's line width (drawSkeletons)
    pad = thick + 3
    font = 8 + 6 * thick
    opaque = overlay[:, :, 3] > 200
    assert opaque.sum() > 100, "the 2D overlay is empty"
    inside = np.zeros_like(opaque)
    for p in persons:
        b = p["bbox"]
        x1, x2 = max(int(b["x1"] * w) - pad, 0), int(b["x2"] * w) + pad + 1
        y1, y2 = max(int(b["y1"] * h) - pad, 0), int(b["y2"] * h) + pad + 1
        inside[y1:y2, x1:x2] = True
        px = overlay[y1:y2, x1:x2][opaque[y1:y2, x1:x2]]
        d = np.abs((_hue(px) - _person_hue(int(p["id"])) + 180.0) % 360.0 - 180.0)
        assert (d < 12).sum() >= 40, f"person {p['id']}: {(d < 12).sum()} pixels of its colour"
        chars = len(f"#{p['id']} 0.00")  # an upper bound: the score is on photos only
        base = max(b["y1"] * h - 6, 14)
        lx = int(b["x1"] * w)
        inside[max(int(base - font) - 2, 0):int(base + 0.3 * font) + 1,
               max(lx - 2, 0):lx + int(0.7 * font * chars) + 2] = True
    share = (opaque & inside).sum() / opaque.sum()
    assert share > 0.97, f"{1 - share:.1%} of the skeleton pixels lie outside every box"


def _assert_3d_people(view: npt.NDArray[np.uint8], ids: list[int]) -> None:
    """The (H, W, 4) 3D canvas is not blank and has a skeleton in each id's colour."""
    background = np.array([0x0B, 0x0E, 0x12], np.uint8)
    drawn_px = np.any(view[:, :, :3] != background, axis=2)
    assert drawn_px.mean() > 0.01, "the 3D canvas is blank"
    hues = _hue(view[drawn_px])
    for tid in ids:
        d = np.abs((hues - _person_hue(tid) + 180.0) % 360.0 - 180.0)
        assert (d < 10).sum() >= 30, f"3D view: no skeleton in person {tid}'s colour"


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
        _assert_skeletons_in_boxes(overlay, ann["persons"])
        video, _ = _canvas(browser, "video")
        assert video[:, :, :3].std() > 20, "the video canvas is blank"

        # 3D: not blank, changes as people move, turns when dragged.
        view_a, st_a = _canvas(browser, "view3d")
        _assert_3d_people(view_a, st_a["ids"])
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
        # A photo chosen while the server is down: said on the page.
        errors = _photo_state(browser)["photoErrors"]
        assert "does not answer" in _refused(browser, photo("zidane.jpg"), errors)
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


# ---------------------------------------------------------------------------- a photo on the page

def _photo_state(driver: WebDriver) -> dict[str, Any]:
    text = driver.execute_script(
        "const s = window.edgeViewer; return JSON.stringify({mode: s.mode, photo: s.photo, "
        "photoError: s.photoError, photosShown: s.photosShown, photoErrors: s.photoErrors, "
        "annotations: s.annotations, framesDrawn: s.framesDrawn, view3dDraws: s.view3dDraws, "
        "conn: s.conn});")
    got: dict[str, Any] = json.loads(text)
    return got


def _choose(driver: WebDriver, path: Path) -> None:
    """Gives ``path`` to the page's file input, as a person choosing it would."""
    driver.find_element(By.ID, "photo-input").send_keys(str(path))


def _answered(driver: WebDriver, before: dict[str, Any]) -> bool:
    """Whether the page refused or showed a photo since its state ``before``."""
    now = _photo_state(driver)
    return bool(now["photoErrors"] > before["photoErrors"]
                or now["photosShown"] > before["photosShown"])


def _refused(driver: WebDriver, path: Path, errors_before: int) -> str:
    """Chooses ``path``, waits for the page's refusal and returns its visible message."""
    _choose(driver, path)
    _wait(f"the page to refuse {path.name}",
          lambda: _photo_state(driver)["photoErrors"] > errors_before, 60)
    box = driver.find_element(By.ID, "photo-error")
    assert box.is_displayed(), f"{path.name}: the refusal is not shown on the page"
    text: str = box.text
    assert path.name in text or "Too many" in text, text
    return text


def _drop(driver: WebDriver, data: bytes, name: str, ctype: str) -> None:
    """Drops a file of ``data`` on the 2D panel (dragenter, dragover, drop with its files)."""
    driver.execute_script(
        "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));"
        "const dt = new DataTransfer();"
        "dt.items.add(new File([bytes], arguments[1], {type: arguments[2]}));"
        "const target = document.getElementById('stack2d');"
        "for (const type of ['dragenter', 'dragover', 'drop']) target.dispatchEvent("
        "  new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));",
        base64.b64encode(data).decode(), name, ctype)


def _sideways_jpeg(upright_bgr: npt.NDArray[np.uint8]) -> bytes:
    """``upright_bgr`` (H, W, 3) stored turned a quarter (W, H, 3) with EXIF orientation 6."""
    stored = np.ascontiguousarray(np.rot90(upright_bgr, k=1))  # what a sideways sensor stores
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(buf, "JPEG", exif=exif,
                                                                  quality=95)
    return buf.getvalue()


def _assert_drawn_photo(driver: WebDriver, upright_bgr: npt.NDArray[np.uint8]) -> None:
    """The 2D canvas holds ``upright_bgr`` (H, W, 3), upright, at the annotation's size."""
    video, _ = _canvas(driver, "video")
    h, w = upright_bgr.shape[:2]
    assert video.shape[:2] == (h, w), (video.shape, upright_bgr.shape)
    rgb = cv2.cvtColor(upright_bgr, cv2.COLOR_BGR2RGB).astype(np.float64)
    diff = np.abs(video[:, :, :3].astype(np.float64) - rgb).mean()
    assert diff < 6, f"the drawn photo is not the photo: mean difference {diff:.1f} / 255"


def test_viewer_poses_a_photo_and_goes_back_to_live(server: DemoServer, browser: WebDriver,
                                                    tmp_path: Path) -> None:
    zidane = photo("zidane.jpg")
    read = cv2.imread(str(zidane))
    assert read is not None and read.shape == (720, 1280, 3)
    upright = np.asarray(read, np.uint8)
    browser.get_log("browser")  # type: ignore[no-untyped-call]  # (drops earlier tests' entries)
    browser.get(f"http://127.0.0.1:{server.port}/")
    _wait("live frames", lambda: _state(browser).get("framesDrawn", 0) >= 3, 90)
    assert not browser.find_element(By.ID, "photo-bar").is_displayed()

    # A photo through the file input: drawn, its skeletons where its annotation says, in 3D.
    _choose(browser, zidane)
    _wait("the photo's result", lambda: _photo_state(browser)["photosShown"] == 1, 180)
    st = _photo_state(browser)
    assert st["mode"] == "photo" and not st["photoError"], st["photoError"]
    ann = st["photo"]["annotation"]
    persons = ann["persons"]
    assert (ann["image"]["width"], ann["image"]["height"]) == (1280, 720)
    assert len(persons) == 2, [p["bbox"] for p in persons]
    bar = browser.find_element(By.ID, "photo-bar")
    assert bar.is_displayed() and "not live" in bar.text and "zidane.jpg" in bar.text, bar.text
    assert browser.find_element(By.ID, "photo-count").text == "2"
    assert browser.find_element(By.ID, "title2d").text.startswith("Photo")
    _assert_drawn_photo(browser, upright)
    overlay, _ = _canvas(browser, "overlay")
    _assert_skeletons_in_boxes(overlay, persons)
    view, _ = _canvas(browser, "view3d")
    _assert_3d_people(view, [int(p["id"]) for p in persons])
    round_trips = {"zidane.jpg (first, models loaded)": st["photo"]["ms"]}

    # It stays the photo's view while the stream keeps arriving underneath (a loaded host
    # delivers fewer annotations a second: waited for, not timed).
    _wait("the stream under the photo",
          lambda: _photo_state(browser)["annotations"] > st["annotations"] + 3, 30)
    later = _photo_state(browser)
    assert later["framesDrawn"] == st["framesDrawn"], "a live frame was drawn over the photo"
    assert later["conn"] == "live"
    assert np.array_equal(_canvas(browser, "overlay")[0], overlay)
    assert np.array_equal(_canvas(browser, "view3d")[0], view)
    OUT.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(OUT / "viewer_photo.png"))

    # Refusals are messages on the page; the photo stays.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    assert "not a JPEG or PNG" in _refused(browser, notes, 0)
    assert browser.save_screenshot(str(OUT / "viewer_photo_refused.png"))
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a photo either\n")
    assert "not an image the device can read" in _refused(browser, fake, 1)
    huge = tmp_path / "huge.png"  # 25 MP of one colour: a small file over http.max_pixels
    ok, png = cv2.imencode(".png", np.zeros((5000, 5000, 3), np.uint8))
    assert ok
    huge.write_bytes(png.tobytes())
    assert "too large" in (text := _refused(browser, huge, 2)) and "5000x5000" in text, text
    heavy = tmp_path / "heavy.jpg"  # over http.max_body_bytes (8 MiB): refused by the page
    heavy.write_bytes(zidane.read_bytes() + bytes(9 << 20))
    assert "too large" in (text := _refused(browser, heavy, 3)) and "MiB" in text, text
    assert _photo_state(browser)["mode"] == "photo"
    assert browser.find_element(By.ID, "photo-count").text == "2"
    browser.find_element(By.ID, "photo-error-close").click()
    assert not browser.find_element(By.ID, "photo-error").is_displayed()

    # Over the rate limit (this client's bucket emptied by a script): 429 said on the page.
    # The bucket refills at http.pose_rate_per_s (2/s): on a loaded host the page's upload can
    # come after a refill and be posed; then the bucket is emptied again (at most 5 tries).
    for _ in range(5):
        before = _photo_state(browser)
        for _ in range(8):
            server.request("POST", "/v1/pose", b"x", {"Content-Type": "text/plain"})
        _choose(browser, zidane)
        _wait("the page to refuse or pose zidane.jpg", partial(_answered, browser, before), 60)
        if _photo_state(browser)["photoErrors"] > before["photoErrors"]:
            break
    text = browser.find_element(By.ID, "photo-error").text
    assert "Too many photos" in text and "try again in" in text, text
    time.sleep(2.5)  # the bucket refills (http.pose_rate_per_s = 2)
    shown = _photo_state(browser)["photosShown"]

    # A photo stored sideways with EXIF orientation 6, dropped on the page: drawn upright, the
    # keypoints on it as on the upright photo.
    _drop(browser, _sideways_jpeg(upright), "sideways.jpg", "image/jpeg")
    _wait("the dropped photo's result", lambda: _photo_state(browser)["photosShown"] == shown + 1,
          60)
    st = _photo_state(browser)
    assert not st["photoError"] and not st["photo"]["turned"], st
    assert st["photo"]["name"] == "sideways.jpg"
    turned = st["photo"]["annotation"]
    assert (turned["image"]["width"], turned["image"]["height"]) == (1280, 720)
    _assert_drawn_photo(browser, upright)
    _assert_skeletons_in_boxes(_canvas(browser, "overlay")[0], turned["persons"])
    # The surest person (the man on the right, score ~1; the other's pose changes with any
    # re-encoding of the photo) is where he is on the upright photo.
    def surest(people: list[dict[str, Any]]) -> npt.NDArray[np.float64]:
        """The box centre, 0-1 of the image, (2,), of the person with the best score."""
        b = max(people, key=lambda p: float(p["score"]))["bbox"]
        return np.array([(b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2])

    assert len(turned["persons"]) >= 1
    moved = np.abs(surest(persons) - surest(turned["persons"])).max()
    assert moved < 0.05, f"the sideways photo's best pose is {moved:.2f} from the upright's"
    assert "dragging" not in _classes(browser, "stack2d") + (
        browser.find_element(By.TAG_NAME, "body").get_attribute("class") or "")
    round_trips["sideways.jpg (EXIF 6, 720x1280 stored)"] = st["photo"]["ms"]

    # The same 1280x720 photo again, the models warm: the page's round trip.
    _choose(browser, zidane)
    _wait("the photo's result again", lambda: _photo_state(browser)["photosShown"] == shown + 2,
          60)
    st = _photo_state(browser)
    assert st["photo"]["name"] == "zidane.jpg" and len(st["photo"]["annotation"]["persons"]) == 2
    _assert_drawn_photo(browser, upright)
    round_trips["zidane.jpg (again)"] = st["photo"]["ms"]

    # Back to live: the bar goes, live frames and the live 3D view come back.
    drawn, draws = st["framesDrawn"], st["view3dDraws"]
    browser.find_element(By.ID, "back-live").click()
    _wait("live frames again", lambda: (
        (s := _photo_state(browser))["mode"] == "live" and s["framesDrawn"] > drawn + 3
        and s["view3dDraws"] > draws + 3), 30)
    assert not browser.find_element(By.ID, "photo-bar").is_displayed()
    assert browser.find_element(By.ID, "title2d").text.startswith("Camera")
    assert _state(browser)["conn"] == "live"
    (OUT / "viewer_photo.json").write_text(json.dumps({"round_trip_ms": round_trips}, indent=1))
    print("page round trips (ms):", round_trips)
    log = browser.get_log("browser")  # type: ignore[no-untyped-call]  # untyped in selenium
    errors = [e for e in log if e["level"] == "SEVERE" and "/v1/pose" not in e["message"]]
    assert not errors, errors


def test_viewer_poses_a_photo_of_another_format(server: DemoServer, browser: WebDriver,
                                                tmp_path: Path) -> None:
    """A WebP (what browsers save from the web) or a BMP: the device reads JPEG and PNG only,
    and the page used to send them as they were (415, "not a JPEG or PNG"). The page now
    sends the JPEG of its own decoding: posed, drawn, the people found as in the JPEG."""
    zidane = photo("zidane.jpg")
    upright = np.asarray(cv2.imread(str(zidane)), np.uint8)
    browser.get(f"http://127.0.0.1:{server.port}/")
    _wait("live frames", lambda: _state(browser).get("framesDrawn", 0) >= 1, 90)
    for n, (name, params) in enumerate((("zidane.webp", [cv2.IMWRITE_WEBP_QUALITY, 95]),
                                        ("zidane.bmp", []))):
        ok, data = cv2.imencode(Path(name).suffix, upright, params)
        assert ok
        (tmp_path / name).write_bytes(data.tobytes())
        _choose(browser, tmp_path / name)
        _wait(f"{name}'s result", partial(_answered, browser, {"photoErrors": 0,
                                                                "photosShown": n}), 120)
        st = _photo_state(browser)
        assert not st["photoError"], st["photoError"]
        assert st["photo"]["name"] == name
        ann = st["photo"]["annotation"]
        assert (ann["image"]["width"], ann["image"]["height"]) == (1280, 720)
        assert len(ann["persons"]) == 2, [p["bbox"] for p in ann["persons"]]
        _assert_drawn_photo(browser, upright)
        _assert_skeletons_in_boxes(_canvas(browser, "overlay")[0], ann["persons"])


def test_viewer_poses_a_photo_with_the_token(browser: WebDriver) -> None:
    """A device with a token: the page opened as /#token=... sends it with the photo too."""
    token = "viewer-photo-token-0123456789"
    s = DemoServer(env={"EDGE_POSE_HTTP_TOKEN": token}).wait_ready()
    try:
        s.token = token
        assert s.request("POST", "/v1/pose", photo("messi5.jpg").read_bytes(),
                         {"Content-Type": "image/jpeg", "Authorization": "Bearer wrong"}
                         ).status == 401
        browser.get(f"http://127.0.0.1:{s.port}/#token={token}")
        _wait("live frames", lambda: _state(browser).get("framesDrawn", 0) >= 3, 90)
        _choose(browser, photo("messi5.jpg"))
        _wait("the photo's result or a refusal", lambda: (
            (st := _photo_state(browser))["photosShown"] + st["photoErrors"] >= 1), 180)
        st = _photo_state(browser)
        assert st["photosShown"] == 1, st["photoError"]
        ann = st["photo"]["annotation"]
        assert (ann["image"]["width"], ann["image"]["height"]) == (548, 342)
        assert len(ann["persons"]) >= 1
        assert _state(browser)["conn"] == "live"
    finally:
        assert s.stop() == 0, s.log()
