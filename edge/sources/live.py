"""Live sources: V4L2 cameras, RTSP/HTTP streams and the Raspberry Pi camera.

A capture thread reads as fast as the device delivers and keeps only the newest frame (older
ones are counted as dropped), so the pipeline always works on what the camera sees now. When the
device fails to open or stops delivering, the thread reconnects with exponential backoff
(``reconnect_initial_s`` doubling up to ``reconnect_max_s``) until the source is closed.

A frame the device sends damaged (a corrupt JPEG from an IP camera on a weak link) is skipped
and counted (``bad_frames``), not taken for the device's end: the stream is reopened only after
``MAX_BAD_GRABS`` failed reads in a row, or failed reads for ``BAD_GRAB_WINDOW_S`` since the
last good frame (a stalled stream: OpenCV's read then blocks for its own timeout first).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge.sources.base import Rotate, SourceError, SourceSilentError, turn
from edge.types import Frame

logger = logging.getLogger(__name__)

#: Failed reads in a row after which the device is taken as gone and reopened.
MAX_BAD_GRABS = 5

#: A network stream's connection is given up and reopened when opening it, or reading one
#: frame, takes longer than this, s (``source.stall_timeout_s``'s default).
STALL_TIMEOUT_S = 10.0

#: Failed reads for this long since the last good frame (s) also reopen the device.
BAD_GRAB_WINDOW_S = 1.0


class Grabber(Protocol):
    """One opened device: returns BGR frames until it fails.

    ``turned``: True when the device delivers its frames already turned as the source asks
    (the Pi camera's sensor read out flipped), so the capture thread does not turn them.
    """

    turned: bool

    def grab(self) -> npt.NDArray[np.uint8] | None:
        """The next image (H, W, 3) uint8 BGR, or None when the device failed."""
        ...

    def close(self) -> None:
        """Releases the device."""
        ...


class _CvGrabber:
    turned = False

    def __init__(self, target: int | str, width: int | None, height: int | None,
                 fps: float | None, stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        if isinstance(target, int) or target.startswith("/dev/"):
            self._cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        else:
            # FFmpeg's own limits on a connection's open and on each read; OpenCV's default
            # (30 s) kept a stalled stream (a pulled cable: no bytes, no close) for 30 s
            # after its camera was back.
            ms = max(1, round(stall_timeout_s * 1000))
            self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"cannot open {target!r}")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        # Keep the driver's queue short: a stale frame is worse than a dropped one.
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def grab(self) -> npt.NDArray[np.uint8] | None:
        ok, image = self._cap.read()
        if not ok or image is None or image.ndim != 3:
            return None
        return np.ascontiguousarray(image, dtype=np.uint8)

    def close(self) -> None:
        self._cap.release()


class _PiGrabber:
    """The Pi camera; a half turn and a mirror are read out so by the sensor when it can.

    libcamera's ``Transform`` (horizontal and vertical flips) is applied by the sensor's readout
    or the ISP at no cost to the CPU, where ``cv2`` turning a 1280x720 frame costs 0.3-0.6 ms
    on x86 and several times that on a Pi; it has no quarter turn on the Pi's sensors, so
    90 and 270 stay the capture thread's (:func:`~edge.sources.base.turn`). A camera or
    libcamera that refuses the flips gets them on the CPU, logged once.
    """

    def __init__(self, module: Any, camera: int, width: int | None, height: int | None,
                 rotate: Rotate = 0, mirror: bool = False) -> None:
        self._cam = module.Picamera2(camera)
        size = (width or 1280, height or 720)
        # "RGB888" in libcamera's naming is B,G,R byte order in memory: what OpenCV calls BGR.
        main = {"size": size, "format": "RGB888"}
        self.turned = False
        if rotate in (0, 180) and (rotate or mirror):
            # a half turn is both flips; the mirror, after it, undoes or adds the horizontal
            hflip, vflip = (rotate == 180) != mirror, rotate == 180
            try:
                transform = importlib.import_module("libcamera").Transform(
                    hflip=int(hflip), vflip=int(vflip))
                self._cam.configure(self._cam.create_video_configuration(
                    main=main, buffer_count=2, transform=transform))
                self.turned = True
            except Exception as e:  # no libcamera module, or flips the camera refuses
                logger.warning("picamera2: the sensor cannot flip (%s: %s); frames are turned "
                               "on the CPU", type(e).__name__, e)
        if not self.turned:
            self._cam.configure(self._cam.create_video_configuration(main=main,
                                                                     buffer_count=2))
        self._cam.start()

    def grab(self) -> npt.NDArray[np.uint8] | None:
        try:
            image = self._cam.capture_array("main")
        except Exception:  # libcamera raises many kinds; all mean "no frame"
            logger.exception("picamera2 capture failed")
            return None
        return np.ascontiguousarray(image[..., :3], dtype=np.uint8)

    def close(self) -> None:
        self._cam.stop()
        self._cam.close()


class LiveSource:
    """Newest-frame-only source over a device that may fail and come back.

    The capture thread turns each frame upright by ``rotate`` and ``mirror``
    (:func:`~edge.sources.base.turn`: a camera mounted upside down or on its side), so the
    core's thread does not pay for it.
    """

    live = True
    frame_count: int | None = None

    def __init__(self, name: str, opener: Callable[[], Grabber], fps: float | None = None,
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 2.0,
                 rotate: Rotate = 0, mirror: bool = False) -> None:
        self.name = name
        self.rotate: Rotate = rotate
        self.mirror = mirror
        self.fps = fps
        self._opener = opener
        self._backoff0 = reconnect_initial_s
        self._backoff_max = reconnect_max_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._captured = 0
        self._delivered = 0
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.reconnects = 0
        #: Failed reads that the next read made good (damaged frames skipped).
        self.bad_frames = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"capture:{name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Frames captured but replaced by a newer one before anyone read them."""
        with self._cond:
            pending = 1 if self._latest is not None else 0
            return self._captured - self._delivered - pending

    def _run(self) -> None:
        backoff = self._backoff0
        index = 0
        while not self._stop.is_set():
            try:
                grabber = self._opener()
            except Exception as e:  # any failure to open means "retry later"
                error = f"{type(e).__name__}: {e}"
                # Once per reason, not at every retry: a camera that never comes back wrote a
                # WARNING every 2 s for ever (43,000 lines a day in the journal).
                (logger.warning if error != self.last_error else logger.debug)(
                    "source %s: cannot open (%s); retrying every %.1f-%.1f s", self.name,
                    error, backoff, self._backoff_max)
                self.last_error = error
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            self.connected.set()
            logger.info("source %s: connected", self.name)
            try:
                bad = 0
                last_good = time.monotonic()
                while not self._stop.is_set():
                    image = grabber.grab()
                    if image is None:
                        bad += 1
                        if bad >= MAX_BAD_GRABS or (time.monotonic() - last_good
                                                    > BAD_GRAB_WINDOW_S):
                            self.last_error = "the device stopped delivering frames"
                            break
                        continue
                    if bad:
                        self.bad_frames += bad
                        (logger.warning if self.bad_frames == bad else logger.debug)(
                            "source %s: %d frame(s) could not be read; skipped (%d so far)",
                            self.name, bad, self.bad_frames)
                        bad = 0
                    last_good = time.monotonic()
                    backoff = self._backoff0
                    t_ns, ts = time.monotonic_ns(), time.time()  # captured: before the turn
                    if not grabber.turned:
                        image = turn(image, self.rotate, self.mirror)
                    frame = Frame(image, index, t_ns, ts)
                    index += 1
                    with self._cond:
                        self._latest = frame
                        self._captured += 1
                        self._cond.notify_all()
            finally:
                grabber.close()
                self.connected.clear()
            if not self._stop.is_set():
                self.reconnects += 1
                logger.warning("source %s: lost (%s); reconnecting in %.1f s", self.name,
                               self.last_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    def read(self, timeout: float | None = None) -> Frame:
        """The newest frame not yet read; waits for one.

        Raises:
            SourceSilentError: No new frame within ``timeout`` seconds (the capture thread goes
                on reconnecting; ask again).
            SourceError: The source is closed.
        """
        with self._cond:
            ok = self._cond.wait_for(lambda: self._latest is not None or self._stop.is_set(),
                                     timeout)
            if self._stop.is_set():
                raise SourceError(f"source {self.name}: closed")
            if not ok or self._latest is None:
                why = f" (last error: {self.last_error})" if self.last_error else ""
                raise SourceSilentError(f"source {self.name}: no frame for {timeout} s{why}")
            frame, self._latest = self._latest, None
            self._delivered += 1
            return frame

    def close(self) -> None:
        """Stops the capture thread and releases the device."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


def quiet_video_backends(debug: bool = False) -> None:
    """Keeps OpenCV's and FFmpeg's own log lines off the console and the journal.

    Each retry of a missing camera printed OpenCV's ``[ WARN:0@...] global cap_v4l.cpp:914
    open VIDEOIO(V4L2:/dev/video0): can't open camera by index`` and a ``cap.cpp`` line, and an
    unreachable stream FFmpeg's ``[tcp @ 0x...] Connection ... failed``: two lines every 2 s
    for ever (about 86,000 a day under systemd), beside this package's own message, logged
    once per reason. Left to OpenCV's errors and FFmpeg's fatal errors unless ``debug``; a
    level set in ``OPENCV_LOG_LEVEL`` or ``OPENCV_FFMPEG_LOGLEVEL`` is kept. FFmpeg's is read
    when OpenCV first opens a video, so this is called before any source opens.

    Args:
        debug: Keep both at their own defaults (``-vv``, ``logging.level = "DEBUG"``).
    """
    if debug:
        return
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL


def open_camera(index: int | str, width: int | None = None, height: int | None = None,
                fps: float | None = None, rotate: Rotate = 0, mirror: bool = False,
                **backoff: float) -> LiveSource:
    """A V4L2 camera by index (``/dev/video<index>``) or by device path.

    A path (``/dev/video0``, ``/dev/v4l/by-id/usb-...-video-index0``) is opened anew at each
    reconnect, so a persistent ``by-id`` name follows its camera when a replug gives it
    another index. ``width`` and ``height`` are the device's (before ``rotate``).
    """
    return LiveSource(f"camera:{index}", lambda: _CvGrabber(index, width, height, fps), fps,
                      rotate=rotate, mirror=mirror, **backoff)


def open_url(url: str, rotate: Rotate = 0, mirror: bool = False,
             stall_timeout_s: float = STALL_TIMEOUT_S, **backoff: float) -> LiveSource:
    """An RTSP or HTTP(S) video stream, read by OpenCV's FFmpeg back-end.

    A connection that takes longer than ``stall_timeout_s`` (s) to open, or to deliver a frame,
    is closed and opened again (``source.stall_timeout_s``).
    """
    return LiveSource(url, lambda: _CvGrabber(url, None, None, None, stall_timeout_s), None,
                      rotate=rotate, mirror=mirror, **backoff)


def open_picamera2(camera: int = 0, width: int | None = None, height: int | None = None,
                   fps: float | None = None, rotate: Rotate = 0, mirror: bool = False,
                   **backoff: float) -> LiveSource:
    """The Raspberry Pi camera through picamera2 (imported only here).

    Raises:
        SourceError: When picamera2 (or libcamera, simplejpeg... that it imports) fails to
            import, with how to install it.
    """
    try:
        module = importlib.import_module("picamera2")
    except ImportError as e:
        raise SourceError(
            f"picamera2 is not available ({e}). On Raspberry Pi OS: `sudo apt install "
            "python3-picamera2` and create the venv with --system-site-packages "
            "(deploy/install.sh does both); it does not exist off the Pi") from None
    except Exception as e:  # any import-time failure of the Pi's apt stack
        # e.g. "ValueError: numpy.dtype size changed": a module built against Debian's numpy
        # 1.x loaded with the venv's numpy 2. Restarting would fail the same way: exit 2.
        raise SourceError(
            f"picamera2 is installed but failed to import ({type(e).__name__}: {e}). Its apt "
            "modules do not match the venv's packages (numpy 2 against python3-simplejpeg "
            "built for numpy 1.x is the usual cause): re-run deploy/install.sh, which installs "
            "the device lock (simplejpeg included) into the venv") from None
    return LiveSource(f"picamera2:{camera}",
                      lambda: _PiGrabber(module, camera, width, height, rotate, mirror),
                      fps, rotate=rotate, mirror=mirror, **backoff)
