"""A local MJPEG network camera for the tests: real frames of the demo clip served over HTTP as
``multipart/x-mixed-replace`` (what IP cameras and ``motion`` serve), that can be switched off
and on again on the same port to inject a camera outage.

It is a real protocol peer for OpenCV's FFmpeg back-end, not a stand-in for edge-pose code: the
source under test connects, reads, loses the stream and reconnects exactly as with a camera.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2

from edge.sources import DEMO_CLIP

BOUNDARY = b"edgeposeframe"


def _demo_jpegs(n: int = 60, width: int = 640) -> list[bytes]:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    out: list[bytes] = []
    try:
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                break
            h = round(frame.shape[0] * width / frame.shape[1])
            ok, buf = cv2.imencode(".jpg", cv2.resize(frame, (width, h)))
            assert ok
            out.append(buf.tobytes())
    finally:
        cap.release()
    return out


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MjpegCamera:
    """Serves ``/video.mjpg`` at ``fps`` on ``127.0.0.1:port`` while switched on.

    Args:
        port: TCP port (a free one when None); kept across :meth:`stop` / :meth:`start`.
        fps: Frames per second sent to each client.
    """

    def __init__(self, port: int | None = None, fps: float = 15.0) -> None:
        self.port = port if port is not None else free_port()
        self.fps = fps
        self.frames = _demo_jpegs()
        self.sent = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._on = threading.Event()

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> None:
        """Switches the camera on (listens and streams)."""
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/video.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type",
                                 f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                i = 0
                with contextlib.suppress(OSError):
                    while cam._on.is_set():
                        jpg = cam.frames[i % len(cam.frames)]
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                                         + jpg + b"\r\n")
                        self.wfile.flush()
                        cam.sent += 1
                        i += 1
                        time.sleep(1.0 / cam.fps)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._on.set()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Switches the camera off: streams end, new connections are refused."""
        self._on.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
