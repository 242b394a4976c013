"""Sources: files, image folders, and live sources that die and come back."""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mjpeg_camera import MjpegCamera, free_port

from edge.sources import (
    DEMO_CLIP,
    ImageFolderSource,
    SourceEnd,
    SourceError,
    VideoFileSource,
    open_camera,
    open_source,
    open_url,
)
from edge.sources.base import SourceSilentError
from edge.sources.files import IMAGE_SUFFIXES
from edge.sources.live import LiveSource
from edge.sources.open import names_stills
from edge.sources.prefetch import Prefetcher


def _short_clip(path: Path, n: int, demo_frames: dict[int, Any]) -> Path:
    frame = cv2.resize(demo_frames[120], (442, 248))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (442, 248))
    for i in range(n):
        writer.write(np.roll(frame, 2 * i, axis=1))
    writer.release()
    return path


def test_video_file_reads_every_frame_on_the_file_clock() -> None:
    src = open_source("demo")
    assert isinstance(src, VideoFileSource) and not src.live
    assert src.frame_count == 230 and src.fps == 30.0
    meta = []  # (frame_id, t_capture_ns, ts, shape): 230 full frames would be 1.2 GB
    with pytest.raises(SourceEnd):
        while True:
            f = src.read()
            meta.append((f.frame_id, f.t_capture_ns, f.ts, f.image.shape))
    src.close()
    assert [m[0] for m in meta] == list(range(230))
    assert (np.diff([m[1] for m in meta]) > 0).all()
    assert meta[30][2] == pytest.approx(1.0) and meta[30][1] == 1_000_000_000
    assert {m[3] for m in meta} == {(994, 1768, 3)}


def test_video_file_loops(tmp_path: Path, demo_frames: dict[int, Any]) -> None:
    src = VideoFileSource(_short_clip(tmp_path / "c.mp4", 5, demo_frames), loop=True)
    frames = [src.read() for _ in range(12)]
    assert [f.frame_id for f in frames] == list(range(12))
    assert (np.diff([f.t_capture_ns for f in frames]) > 0).all()
    np.testing.assert_array_equal(frames[0].image, frames[5].image)


def test_image_folder_skips_and_counts_unreadable_images(tmp_path: Path,
                                                         demo_frames: dict[int, Any]) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), demo_frames[0][::4, ::4])
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cv2.imwrite(str(tmp_path / "c.jpg"), demo_frames[120][::4, ::4])
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource) and src.frame_count == 3
    a, c = src.read(), src.read()
    with pytest.raises(SourceEnd):
        src.read()
    assert (a.frame_id, c.frame_id) == (0, 1) and src.dropped == 1
    assert a.image.shape == demo_frames[0][::4, ::4].shape


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p / "missing.png", r"no such file or folder"),
    (lambda p: (p / "bad.png").write_bytes(b"garbage") and p / "bad.png", r"cannot be read"),
])
def test_single_image_errors(tmp_path: Path, make: Any, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        src = open_source(str(make(tmp_path)))
        src.read()


def test_a_truncated_jpeg_is_skipped_not_posed_half_grey(tmp_path: Path,
                                                         demo_frames: dict[int, Any]) -> None:
    """A JPEG cut short (a copy interrupted, a card pulled) used to be read as its first rows
    over grey and posed, with only libjpeg's "Premature end of JPEG file" on stderr, while
    POST /v1/pose refused the same bytes. Cut anywhere, even just its end marker: skipped."""
    ok, jpg = cv2.imencode(".jpg", demo_frames[120][::2, ::2])
    assert ok
    whole = jpg.tobytes()
    for i, cut in enumerate((len(whole) // 3, len(whole) - 2)):
        (tmp_path / f"cut{i}.jpg").write_bytes(whole[:cut])
    (tmp_path / "whole.jpg").write_bytes(whole)
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource)
    frame = src.read()
    with pytest.raises(SourceEnd):
        src.read()
    assert frame.name == "whole.jpg" and frame.image.shape == demo_frames[120][::2, ::2].shape
    assert [name for name, _ in src.skipped] == ["cut0.jpg", "cut1.jpg"]
    assert all("cannot be decoded (corrupt or truncated)" in why for _, why in src.skipped)


@pytest.mark.parametrize(("uri", "stills"), [
    ("demo", False), ("0", False), ("picamera2", False), ("picamera2:1", False),
    ("/dev/video0", False), ("http://cam/snapshot.jpg", False), ("rtsp://cam/live", False),
    ("{tmp}", True), ("{tmp}/a.JPG", True), ("{tmp}/a.webp", True), ("{tmp}/a.mp4", False),
    ("{tmp}/no_such_folder", False),
])
def test_names_stills_is_what_open_source_reads_as_stills(tmp_path: Path, uri: str,
                                                          stills: bool) -> None:
    """One rule for "is this source photos": the service refuses them by it (it used to
    judge by suffix alone, so a camera's ``http://.../snapshot.jpg`` URL was refused)."""
    assert names_stills(uri.format(tmp=tmp_path)) is stills


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no images \(.*\)$"):
        open_source(str(tmp_path))
    assert ".png" in IMAGE_SUFFIXES
    (tmp_path / "walk.MP4").write_bytes((MEDIA / "vfr_96x54.mp4").read_bytes())
    with pytest.raises(SourceError, match=r"no images .*; it holds 1 video\(s\) \(walk\.MP4\): "
                                          r"give one video file as the source"):
        open_source(str(tmp_path))


@pytest.mark.parametrize(("uri", "match"), [
    ("/no/such/video.mp4", r"no such file, and not a camera index"),
    ("picamera2:x", r"picamera2:<index>"),
    ("picamera2", r"python3-picamera2"),
])
def test_bad_uris(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        open_source(uri)


def test_dead_camera_gives_a_clear_error_after_the_timeout() -> None:
    """No /dev/video99 exists: the source keeps retrying in the background, and a read that
    waits longer than its timeout says why."""
    src = open_camera(99, reconnect_initial_s=0.05, reconnect_max_s=0.1)
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"camera:99: no frame for 0.5 s.*cannot open"):
            src.read(timeout=0.5)
        assert time.monotonic() - t0 < 3.0
        assert not src.connected.is_set()
    finally:
        src.close()


def test_a_damaged_frame_of_a_live_stream_is_skipped_not_a_reconnect() -> None:
    """A real MJPEG camera sending every fifth frame as a broken JPEG (a weak link): OpenCV
    fails that read and the next one succeeds. Each broken frame used to close the stream and
    reconnect after the backoff (12 reconnects in 5 s here, a WARNING each, frames lost)."""
    cam = MjpegCamera(fps=15.0)
    cam.frames = [jpg if i % 5 else b"\xff\xd8 broken" + b"\x00" * 100
                  for i, jpg in enumerate(cam.frames)]
    cam.start()
    src = open_url(cam.url, reconnect_initial_s=0.5, reconnect_max_s=0.5)
    try:
        got = []
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            got.append(src.read(timeout=5.0))
        assert src.reconnects == 0, src.last_error
        assert src.bad_frames >= 8
        # 4 of every 5 frames at 15 fps is 60 (>= 40 measured); without the skip: none. Half
        # of that leaves room for a loaded host (no speed is asserted here)
        assert len(got) >= 20
    finally:
        src.close()
        cam.stop()


def test_a_stream_that_ends_is_still_reopened_at_once(tmp_path: Path,
                                                      demo_frames: dict[int, Any]) -> None:
    """Skipping damaged frames must not delay a real end: the file's end fails every read."""
    clip = _short_clip(tmp_path / "stream.mp4", 10, demo_frames)
    src = open_url(str(clip), reconnect_initial_s=0.05, reconnect_max_s=0.05)
    try:
        end = time.monotonic() + 5.0
        while src.reconnects < 3 and time.monotonic() < end:
            time.sleep(0.05)
        assert src.reconnects >= 3
    finally:
        src.close()


def test_live_source_keeps_the_newest_frame_and_reconnects(tmp_path: Path,
                                                           demo_frames: dict[int, Any]) -> None:
    """A stream read by OpenCV's FFmpeg back-end (here a local file, the same code path as an
    RTSP/HTTP URL): it ends, the source reconnects with backoff and delivers again; frames the
    reader was too slow for are counted as dropped; frame ids keep increasing."""
    clip = _short_clip(tmp_path / "stream.mp4", 40, demo_frames)
    src = open_url(str(clip), reconnect_initial_s=0.05, reconnect_max_s=0.2)
    try:
        seen = []
        deadline = time.monotonic() + 20
        while src.reconnects < 2 and time.monotonic() < deadline:
            seen.append(src.read(timeout=5.0))
            time.sleep(0.02)
        assert src.reconnects >= 2, "the stream ended and came back twice"
        ids = [f.frame_id for f in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert src.dropped > 0  # newest-frame-only: a slow reader skips frames
        t = [f.t_capture_ns for f in seen]
        assert t == sorted(t)
    finally:
        src.close()
    with pytest.raises(SourceError, match=r"closed"):
        src.read(timeout=0.1)


def test_demo_clip_is_the_bundled_asset() -> None:
    assert DEMO_CLIP.is_file() and DEMO_CLIP.stat().st_size == 3968304


# --- reading ahead -----------------------------------------------------------------------------


def test_prefetcher_gives_every_frame_in_order_then_the_end(tmp_path: Path,
                                                            demo_frames: dict[int, Any]) -> None:
    clip = _short_clip(tmp_path / "c.mp4", 12, demo_frames)
    direct = VideoFileSource(clip)
    want = [direct.read() for _ in range(12)]
    direct.close()
    src = VideoFileSource(clip)
    with Prefetcher[None](src, depth=2) as ahead:
        assert (ahead.fps, ahead.frame_count, ahead.live) == (30.0, 12, False)
        got = [ahead.read() for _ in range(12)]
        for _ in range(2):  # the end, and again
            with pytest.raises(SourceEnd):
                ahead.read()
    src.close()
    assert [(f.frame_id, f.t_capture_ns) for f in got] == [
        (f.frame_id, f.t_capture_ns) for f in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_prefetcher_passes_a_truncated_file_error_after_the_good_frames(tmp_path: Path) -> None:
    clip = tmp_path / "truncated.mp4"
    clip.write_bytes(DEMO_CLIP.read_bytes()[:400_000])  # 12 whole frames of 230
    src = VideoFileSource(clip)
    n = 0
    with Prefetcher[None](src, depth=3) as ahead, pytest.raises(SourceError, match="truncated"):
        while True:
            assert ahead.read().frame_id == n
            n += 1
    src.close()
    assert 5 < n < 230


def test_prefetcher_stopped_early_ends_its_thread(tmp_path: Path,
                                                  demo_frames: dict[int, Any]) -> None:
    """A consumer that stops after 2 of 40 frames: the reader, blocked on its full queue,
    ends; the source may then be closed; reads after the stop say the source ended."""
    src = VideoFileSource(_short_clip(tmp_path / "c.mp4", 40, demo_frames))
    ahead = Prefetcher[None](src, depth=1).start()
    assert [ahead.read().frame_id for _ in range(2)] == [0, 1]
    ahead.stop()
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
    src.close()
    ahead.stop()  # twice is fine
    with pytest.raises(SourceEnd):
        ahead.read()


def test_prefetcher_refuses_live_sources_and_no_depth(tmp_path: Path,
                                                      demo_frames: dict[int, Any]) -> None:
    src = VideoFileSource(_short_clip(tmp_path / "c.mp4", 2, demo_frames))
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(src, depth=0)
    src.close()
    cam = open_camera(99, reconnect_initial_s=0.05, reconnect_max_s=0.1)
    try:
        with pytest.raises(ValueError, match="live"):
            Prefetcher(cam)
    finally:
        cam.close()


def test_prefetcher_runs_ahead_work_in_order_and_passes_its_error_in_order(
        tmp_path: Path, demo_frames: dict[int, Any]) -> None:
    """``ahead`` (an every-frame run's detector) sees every frame once, in order, on the
    reading thread; its result comes with its frame; its error comes after the frames before."""
    src = VideoFileSource(_short_clip(tmp_path / "c.mp4", 8, demo_frames))
    seen: list[tuple[int, str]] = []

    def work(frame: Any) -> int:
        seen.append((frame.frame_id, threading.current_thread().name))
        if frame.frame_id == 5:
            raise RuntimeError("detector broke on frame 5")
        return int(frame.image.sum() % 1000)

    got = []
    with Prefetcher(src, depth=2, ahead=work) as ahead, \
            pytest.raises(RuntimeError, match="frame 5"):
        while True:
            frame, value = ahead.read_with()
            assert value == int(frame.image.sum() % 1000)
            got.append(frame.frame_id)
    src.close()
    assert got == [0, 1, 2, 3, 4]
    assert seen == [(i, "prefetch") for i in range(6)]


def test_a_video_without_frames_is_an_error_at_open(tmp_path: Path) -> None:
    """A valid container with no frame and no frame count: `run` used to end at once with
    exit 0 and empty outputs, as if the video had nobody in it."""
    path = tmp_path / "empty.avi"
    cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 64)).release()
    with pytest.raises(SourceError, match=r"empty\.avi: no frame can be read"):
        VideoFileSource(path)


def _avi_announcing(path: Path, frames: int, announced: int) -> Path:
    """An MJPEG AVI of `frames` frames at 30 fps whose stream header says `announced`."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 3 * i, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    strh = data.find(b"strh")  # AVISTREAMHEADER.dwLength: 32 bytes into the chunk's data
    assert strh > 0 and data[strh + 8: strh + 12] == b"vids"
    struct.pack_into("<I", data, strh + 8 + 32, announced)
    path.write_bytes(bytes(data))
    return path


def _read_all(src: VideoFileSource) -> int:
    n = 0
    with pytest.raises(SourceEnd):
        while True:
            assert src.read().frame_id == n
            n += 1
    return n


def test_a_whole_video_whose_header_estimates_more_frames_ends_cleanly(tmp_path: Path) -> None:
    """Containers without a frame count (AVI, FLV, TS, WebM) are counted by OpenCV from their
    duration, audio included: the bundled clip looped into AVI announced 1855 frames and held
    1840. Such a whole file used to end in "truncated or corrupt" and exit 1."""
    src = VideoFileSource(_avi_announcing(tmp_path / "a.avi", 40, 55))
    assert src.frame_count == 55
    assert _read_all(src) == 40
    src.close()


def test_a_video_ending_far_short_of_its_header_is_truncated(tmp_path: Path) -> None:
    src = VideoFileSource(_avi_announcing(tmp_path / "a.avi", 40, 140))  # 100 > 2 s of frames
    for i in range(40):
        assert src.read().frame_id == i
    with pytest.raises(SourceError, match=r"frame 40 of 140 could not be read: the file is "
                                          r"truncated or corrupt"):
        src.read()
    src.close()


def test_a_video_in_a_codec_opencv_cannot_decode_names_it(tmp_path: Path) -> None:
    """AV1 (tests/media/av1_96x54_5f.mp4, 5 frames of the demo clip by ffmpeg 5.1's libaom):
    OpenCV's wheel has no AV1 decoder; the file used to open and then fail at frame 0 as
    "truncated or corrupt". A build that decodes it reads its 5 frames."""
    path = MEDIA / "av1_96x54_5f.mp4"
    try:
        src = VideoFileSource(path)
    except SourceError as e:
        assert "no frame can be read (codec 'AV01')" in str(e)
        assert "codec is one OpenCV's FFmpeg cannot decode" in str(e)
    else:
        assert _read_all(src) == 5
        src.close()


MEDIA = Path(__file__).parent / "media"


def test_a_variable_frame_rate_video_keeps_its_timeline() -> None:
    """tests/media/vfr_96x54.mp4: the demo clip's frames n with n % 3 == 0 or n % 5 == 0 (0, 3,
    5, 6, 9, 10, ...) kept at their times n / 30 s (ffmpeg 5.1, ``-fps_mode vfr``), as a phone
    in low light records. Times used to be index / the header's average rate (13.9 fps),
    up to 71 ms off; the trackers and filters saw 72 ms steps where the clip has 33 and 100."""
    src = VideoFileSource(MEDIA / "vfr_96x54.mp4")
    want = [round(n * 1e9 / 30) for n in range(200) if n % 3 == 0 or n % 5 == 0][:46]
    got = []
    with pytest.raises(SourceEnd):
        while True:
            f = src.read()
            assert f.ts == f.t_capture_ns / 1e9
            got.append(f.t_capture_ns)
    src.close()
    assert got == want


def test_an_avi_is_timed_by_index_and_its_header_estimate_is_no_error() -> None:
    """tests/media/mjpeg_audio_96x54_15f.avi (ffmpeg 5.1: MJPEG and MP3, 0.5 s of the demo
    clip): OpenCV announces 16 frames and reports the second frame's time as 66.7 ms; AVI
    has no presentation times, so its clock is index / rate; the 15 frames end cleanly."""
    src = VideoFileSource(MEDIA / "mjpeg_audio_96x54_15f.avi")
    assert src.frame_count == 16 and src.fps == 30.0
    got = []
    with pytest.raises(SourceEnd):
        while True:
            got.append(src.read().t_capture_ns)
    src.close()
    assert got == [round(i * 1e9 / 30) for i in range(15)]


def test_a_looping_video_file_clock_runs_on() -> None:
    src = VideoFileSource(MEDIA / "vfr_96x54.mp4", loop=True)
    got = [src.read().t_capture_ns for _ in range(100)]
    src.close()
    assert (np.diff(got) > 0).all()
    one = [round(n * 1e9 / 30) for n in range(200) if n % 3 == 0 or n % 5 == 0][:46]
    period = round(1e9 / src.fps) if src.fps else 0
    second = [one[-1] + period + t for t in one]
    assert got[:46] == one and got[46:92] == second


def test_a_camera_named_by_its_device_path_is_a_camera() -> None:
    """``--source /dev/video0`` (or udev's /dev/v4l/by-id/... name) used to be taken for a video
    file: "video /dev/video0: no such file". No camera here (the seam): an absent device is a
    live source that keeps trying, as a camera index is; another device is refused."""
    for uri in ("/dev/video99", "/dev/v4l/by-id/usb-Example_Cam-video-index0"):
        src = open_source(uri, reconnect_initial_s=0.02, reconnect_max_s=0.05)
        try:
            assert src.live and src.name == f"camera:{uri}"
        finally:
            src.close()
    with pytest.raises(SourceError, match=r"'/dev/null': not a V4L2 video device"):
        open_source("/dev/null")


@contextlib.contextmanager
def _web_server(folder: Path) -> Iterator[str]:
    """A real HTTP file server (the standard library's) on a free loopback port: its URL."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_video_file_on_a_web_server_is_read_as_a_file(tmp_path: Path,
                                                        demo_frames: dict[int, Any]) -> None:
    """``--source https://host/clip.mp4`` was read as a camera: as fast as it decoded, most
    frames dropped, and at its end "lost", reconnected and played again for ever. Now: every
    frame, on the file's clock, then the end, as the same file on disk."""
    _short_clip(tmp_path / "clip.mp4", 12, demo_frames)
    (tmp_path / "vfr.mp4").write_bytes((MEDIA / "vfr_96x54.mp4").read_bytes())
    with _web_server(tmp_path) as base:
        for name in ("clip.mp4", "vfr.mp4"):
            remote = open_source(f"{base}/{name}")
            assert isinstance(remote, VideoFileSource) and remote.remote and not remote.live
            local = VideoFileSource(tmp_path / name)
            assert (remote.frame_count, remote.fps) == (local.frame_count, local.fps)
            assert _read_all(remote) == _read_all(local) > 0
            remote.close()
            local.close()
        remote = open_source(f"{base}/clip.mp4")
        frames = [remote.read() for _ in range(12)]
        local = VideoFileSource(tmp_path / "clip.mp4")
        for a in frames:
            b = local.read()
            assert (a.frame_id, a.t_capture_ns) == (b.frame_id, b.t_capture_ns)
            np.testing.assert_array_equal(a.image, b.image)
        remote.close()
        local.close()


def test_a_live_stream_or_a_silent_server_stays_live() -> None:
    """An MJPEG camera has no length (a live source, whatever its URL's name); a file URL
    whose server does not answer is left to the live source's reconnects."""
    cam = MjpegCamera()
    cam.start()
    try:
        src = open_source(cam.url)
        assert src.live
        src.close()
    finally:
        cam.stop()
    src = open_source(f"http://127.0.0.1:{free_port()}/clip.mp4", reconnect_initial_s=0.02,
                      reconnect_max_s=0.05)
    assert src.live
    src.close()


class _StallingCamera:
    """An MJPEG camera over HTTP whose connections can go silent without closing, as when its
    cable is pulled: the peer sends no more bytes and no FIN. New connections are served."""

    def __init__(self) -> None:
        self.frames = MjpegCamera().frames[:20]
        self.stalled = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for i in range(100_000):
                        if cam.stalled.is_set():
                            time.sleep(120)  # silent, open: the daemon thread dies with it
                            return
                        jpg = cam.frames[i % len(cam.frames)]
                        self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg
                                         + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1 / 15)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"


def test_a_stalled_network_camera_is_reopened_after_the_stall_timeout() -> None:
    """The connection goes silent without closing; the camera is back 0.5 s later (new
    connections get frames). OpenCV's own limit (30 s) kept the stream stalled: frames again
    30.6 s after the stall. With ``stall_timeout_s`` 2 s: within a few seconds."""
    cam = _StallingCamera()
    src = open_source(cam.url, reconnect_initial_s=0.1, reconnect_max_s=0.2,
                      stall_timeout_s=2.0)
    try:
        for _ in range(5):
            src.read(timeout=20)
        cam.stalled.set()
        t0 = time.monotonic()
        time.sleep(0.5)
        cam.stalled.clear()  # back: the stalled connection stays silent, new ones are served
        while True:
            with contextlib.suppress(SourceSilentError):
                src.read(timeout=0.5)
                break
            assert time.monotonic() - t0 < 15, "the stalled stream was not reopened"
        assert isinstance(src, LiveSource) and src.reconnects >= 1
    finally:
        src.close()
        cam.server.shutdown()
        cam.server.server_close()


def test_a_camera_that_never_opens_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """No /dev/video99: every retry used to log a WARNING (every 2 s for ever by default)."""
    with caplog.at_level(logging.DEBUG, "edge.sources.live"):
        src = open_camera(99, reconnect_initial_s=0.02, reconnect_max_s=0.05)
        try:
            time.sleep(1.0)
        finally:
            src.close()
    tries = [r for r in caplog.records if "cannot open" in r.getMessage()]
    assert len(tries) >= 5
    assert [r.levelno for r in tries].count(logging.WARNING) == 1
