"""The HTTP transport: a local API, live streams, Prometheus metrics and the browser viewer.

The runtime hands the transport each processed frame (:meth:`HttpTransport.write`, the
:class:`~edge.sinks.base.Sink` protocol), the published events (:meth:`HttpTransport.events`)
and the periodic stats (:meth:`HttpTransport.stats`); it offers a stats snapshot, commands, the
still-image pose and a readiness check as callables. Endpoints (all JSON unless said)::

    GET  /                  the viewer (edge/web/index.html, viewer.js, viewer.css)
    GET  /healthz           liveness: 200 while the server runs
    GET  /readyz            readiness: 200 or 503 with the reason (the runtime's ``ready()``)
    GET  /v1/info           device, version, stage budgets, limits
    GET  /v1/annotation     the latest annotation (schema v1); 503 before the first frame
    GET  /v1/stream         Server-Sent Events: ``annotation`` (id: frame_id) and ``stats``
    GET  /v1/events         Server-Sent Events: ``event`` (id: seq); resumes after
                            ``Last-Event-ID`` from the ``events_kept`` newest events
    GET  /v1/stats          the stats payload (stats_schema.json)
    POST /v1/pose           a JPEG/PNG body or multipart file -> its annotation
    POST /v1/set/<name>     a command, payload as on MQTT ``set/<name>``
    GET  /v1/frame.jpg      the latest frame, skeletons drawn (``?overlay=0``: without;
                            ``?width=``: scaled down, px)
    GET  /v1/video.mjpg     MJPEG of annotated frames at most ``mjpeg_max_fps`` (``?fps=``,
                            ``?overlay=``, ``?width=``)
    GET  /metrics           Prometheus text format

**Nothing here can slow the core.** :meth:`~HttpTransport.write` appends to a bounded queue
under a lock held for O(1) work and wakes the server's event loop (its own thread); when the
loop falls behind the oldest pose frame is dropped and counted. Every stream client has its own
bounded queue with the same rule; a client that takes nothing for ``write_timeout_s`` is
disconnected. JPEG encoding (drawing, scaling, compressing) runs in a worker thread of the
server, once per frame however many clients watch, and only when someone asks for a frame.
Events are not dropped: an events client that falls ``events_kept`` behind is disconnected and
resumes with ``Last-Event-ID``.

**Security.** Static files are a fixed table read at start (no file system paths come from the
URL, so no listing and no traversal). A POST from a page of another origin is refused, and a
loopback-bound server answers only requests addressed to a loopback name (DNS rebinding).
When a bearer token is configured every endpoint except
the viewer's files and the probes needs ``Authorization: Bearer <token>``;
:func:`~edge.transports.http_config.check_bind` refuses a non-loopback bind without one.
``POST /v1/pose`` has a per-client token bucket, a body limit checked before reading, a pixel
limit checked from the image header before decoding, and a bound on requests waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge import __version__
from edge.annotation import Annotation
from edge.comms.commands import COMMANDS, CommandError
from edge.config import ConfigError
from edge.sinks.video import draw_annotation
from edge.skeleton import BLAZEPOSE_BONES
from edge.transports.http_config import HttpConfig, check_bind, is_loopback
from edge.transports.images import image_size, sniff
from edge.types import U8, Frame, is_ascii_number

logger = logging.getLogger(__name__)

StatsSnapshot = Callable[[], dict[str, Any]]
Command = Callable[[str, bytes], dict[str, Any]]
PoseImage = Callable[[bytes], dict[str, Any]]
Ready = Callable[[], tuple[bool, str]]

#: The viewer's files: URL path -> (file in edge/web, content type). Nothing else is served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}
#: Paths open without the token: the viewer's files (they hold no data) and the probes.
PUBLIC = frozenset({*STATIC, "/healthz", "/readyz"})
IMAGE_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'",
}
_BONE_NAMES = [[a.name.lower(), b.name.lower()] for a, b in BLAZEPOSE_BONES]
_KEEPALIVE_S = 15.0
_BOUNDARY = "edgeposeframe"


@dataclass
class HttpCounters:
    """What the transport did (``/metrics``, :meth:`HttpTransport.counters`).

    Attributes:
        frames_in: Pose frames handed to :meth:`HttpTransport.write`.
        frames_dropped: Of those, dropped because the server's loop was behind.
        client_dropped: Pose frames dropped from slow stream clients' queues.
        clients_disconnected: Streaming clients cut for not reading (``write_timeout_s``,
            or an events client ``events_kept`` behind).
        clients_refused: Streaming clients refused over ``max_clients``.
        events_in: Events handed to :meth:`HttpTransport.events`.
        events_dropped: Of those, dropped because the server's loop did not take them.
        requests: HTTP requests answered.
        unauthorized: Requests refused for a missing or wrong token.
        pose_ok: ``POST /v1/pose`` answered with an annotation.
        pose_rejected: ``POST /v1/pose`` refused (4xx/5xx, rate limit included).
        pose_rate_limited: Of those, refused by the rate limit.
        commands_accepted: Commands applied.
        commands_rejected: Commands refused.
        jpeg_encoded: Frames encoded as JPEG.
    """

    frames_in: int = 0
    frames_dropped: int = 0
    client_dropped: int = 0
    clients_disconnected: int = 0
    clients_refused: int = 0
    events_in: int = 0
    events_dropped: int = 0
    requests: int = 0
    unauthorized: int = 0
    pose_ok: int = 0
    pose_rejected: int = 0
    pose_rate_limited: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    jpeg_encoded: int = 0


def encode_jpeg(image: U8, annotation: Annotation | None, *, max_width: int,
                quality: int) -> bytes:
    """Scales a frame down to ``max_width``, draws the skeletons and encodes it as JPEG.

    Args:
        image: (H, W, 3) uint8 BGR frame.
        annotation: Its annotation, drawn when not None (normalised coordinates, so drawing
            after scaling is exact).
        max_width: Wider frames are scaled to this width, px.
        quality: JPEG quality, 10-100.

    Returns:
        The JPEG bytes.
    """
    h, w = image.shape[:2]
    if w > max_width:
        size = (max_width, max(1, round(h * max_width / w)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    if annotation is not None:
        image = draw_annotation(image, annotation)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return bytes(buf)


def _lower_priority(nice: int) -> None:
    """Raises the calling thread's nice value by ``nice`` (Linux: niceness is per thread)."""
    if nice and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


class _Client:
    """One streaming client's bounded queue (touched only on the server's loop)."""

    def __init__(self, maxlen: int) -> None:
        self.items: deque[str] = deque(maxlen=maxlen)
        self.wake = asyncio.Event()
        self.closed = False

    def push(self, text: str) -> bool:
        """Queues one message; returns True when the oldest was dropped for it."""
        full = len(self.items) == self.items.maxlen
        self.items.append(text)
        self.wake.set()
        return full


class _Bucket:
    """A token bucket (per client of ``POST /v1/pose``)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.t = float(burst), time.monotonic()

    def take(self) -> float:
        """Takes a token; returns 0, or the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _sse(event: str, data: str, ident: int | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status,
                             headers=headers)


class HttpTransport:
    """The HTTP server as a transport of the annotation stream.

    Args:
        config: The ``[http]`` section.
        stats_snapshot: Returns the stats payload (stats_schema.json), or raises RuntimeError
            while there are none yet (503); called from a worker thread of the server.
        command: Applies ``set/<name>`` with the raw payload, as MQTT does; returns a JSON
            object (the new value); raises :class:`~edge.comms.commands.CommandError` when the
            command is invalid. Called from a worker thread.
        pose_image: An encoded JPEG/PNG -> its annotation payload; raises ValueError when the
            image cannot be decoded. Called from one worker thread, one request at a time.
        ready: Returns (ready, reason) for ``/readyz``.
        token: The bearer token, or None (then only a loopback bind is allowed).
        budgets: Stage name -> budget in runs per second, shown by the viewer.
        device_id: The device's id (``/v1/info``).

    Raises:
        ConfigError: A non-loopback ``host`` without a token.
    """

    def __init__(self, config: HttpConfig, *, stats_snapshot: StatsSnapshot, command: Command,
                 pose_image: PoseImage, ready: Ready, token: str | None = None,
                 budgets: Mapping[str, float] | None = None,
                 device_id: str = "edge-pose") -> None:
        check_bind(config, token)
        self.config = config
        self._loopback = is_loopback(config.host)
        self._stats_snapshot = stats_snapshot
        self._command = command
        self._pose_image = pose_image
        self._ready = ready
        self._token = token
        self.budgets = dict(budgets or {})
        self.device_id = device_id
        self.counters = HttpCounters()
        self._static = {path: (resources.files("edge.web").joinpath(name).read_bytes(), ctype)
                        for path, (name, ctype) in STATIC.items()}
        # Shared with the core thread: only these, under this lock.
        self._lock = threading.Lock()
        self._inbox: deque[tuple[Frame, Annotation]] = deque(maxlen=config.queue)
        # Bounded only against a dead loop; events stay lossless on the durable (MQTT) path.
        self._events_inbox: deque[dict[str, Any]] = deque(maxlen=100_000)
        self._stats_inbox: dict[str, Any] | None = None
        self._wake_pending = False
        # Owned by the server's loop thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._new_frame: asyncio.Event | None = None
        self._latest: tuple[Frame, Annotation, str] | None = None
        self._latest_stats: str | None = None
        self._stream_clients: set[_Client] = set()
        self._event_clients: set[_Client] = set()
        self._n_streaming = 0
        self._events_kept: deque[tuple[int, str]] = deque(maxlen=config.events_kept)
        self._event_seq = 0
        self._jpeg: dict[tuple[int, bool, int], asyncio.Future[bytes]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._pose_waiting = 0
        # JPEG encoding and still images run at a lower priority than the core's threads.
        lower = (config.worker_nice,)
        self._jpeg_pool = ThreadPoolExecutor(1, thread_name_prefix="http-jpeg",
                                             initializer=_lower_priority, initargs=lower)
        self._pose_pool = ThreadPoolExecutor(1, thread_name_prefix="http-pose",
                                             initializer=_lower_priority, initargs=lower)
        self._work_pool = ThreadPoolExecutor(2, thread_name_prefix="http-work")
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.port: int | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_MetricsCollector(self))

    # ------------------------------------------------------------------ runtime side

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        host = self.config.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Binds and starts serving in its own thread.

        Raises:
            ConfigError: The address cannot be bound (in use, not ours): names
                ``http.host``/``http.port``.
        """
        if self._thread is not None:
            raise RuntimeError("HttpTransport.start called twice")
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError(f"HTTP server did not start within {timeout_s} s")
        if self._start_error is not None:
            e = self._start_error
            raise ConfigError("[http]", [("http.port", f"cannot listen on "
                                          f"{self.config.host}:{self.config.port}: {e}")]
                              ) from None
        logger.info("HTTP on %s (viewer at /, API under /v1)", self.url)

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Hands one processed frame to the server; never blocks (the oldest is dropped)."""
        with self._lock:
            if len(self._inbox) == self._inbox.maxlen:
                self.counters.frames_dropped += 1
            self._inbox.append((frame, annotation))
            self.counters.frames_in += 1
        self._wake()

    def events(self, events: list[dict[str, Any]]) -> None:
        """Hands published events (events_schema.json payloads, with ``seq``) to the server."""
        if not events:
            return
        with self._lock:
            room = self._events_inbox.maxlen or 0
            self.counters.events_dropped += max(0, len(self._events_inbox) + len(events) - room)
            self._events_inbox.extend(events)
            self.counters.events_in += len(events)
        self._wake()

    def stats(self, stats: dict[str, Any]) -> None:
        """Hands the periodic stats payload to the server (sent on ``/v1/stream``)."""
        with self._lock:
            self._stats_inbox = stats
        self._wake()

    def close(self) -> None:
        """Stops serving: streams end, the port is released; safe to call twice."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        for pool in (self._jpeg_pool, self._pose_pool, self._work_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    def counters_snapshot(self) -> dict[str, int]:
        """The counters, plus the streaming clients connected now."""
        with self._lock:
            out = asdict(self.counters)
        out["clients"] = self._n_streaming
        return out

    def _wake(self) -> None:
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # closed: the frame goes with the server
            loop.call_soon_threadsafe(self._drain)

    # ------------------------------------------------------------------ the loop thread

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner: web.AppRunner | None = None
        try:
            self._stop = asyncio.Event()
            self._new_frame = asyncio.Event()
            # keepalive_timeout also runs from a connection's start: a client that sends no
            # whole request line and headers within it (a slowloris dribbling them) is cut.
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0,
                                   handle_signals=False, logger=SERVER_LOGGER,
                                   keepalive_timeout=self.config.read_timeout_s)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.config.host, self.config.port, backlog=64)
            loop.run_until_complete(site.start())
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
            self._loop = loop
        except BaseException as e:
            self._start_error = e
            self._started.set()
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
            loop.close()
            return
        self._started.set()
        self._drain()  # frames written before the loop existed
        try:
            loop.run_until_complete(self._stop.wait())
        finally:
            for c in self._stream_clients | self._event_clients:
                c.closed = True
                c.wake.set()
            if self._new_frame is not None:
                self._new_frame.set()
            loop.run_until_complete(runner.cleanup())
            self._loop = None
            loop.close()

    def _drain(self) -> None:
        """Moves what the runtime handed over to the clients (on the loop)."""
        with self._lock:
            frames = list(self._inbox)
            self._inbox.clear()
            events = list(self._events_inbox)
            self._events_inbox.clear()
            stats, self._stats_inbox = self._stats_inbox, None
            self._wake_pending = False
        for frame, annotation in frames:
            text = annotation.to_json()
            self._latest = (frame, annotation, text)
            msg = _sse("annotation", text, annotation.frame_id)
            for c in self._stream_clients:
                if c.push(msg):
                    self.counters.client_dropped += 1
        if frames and self._new_frame is not None:
            self._new_frame.set()
            self._new_frame = asyncio.Event()
            self._jpeg = {k: v for k, v in self._jpeg.items() if k[0] == frames[-1][1].frame_id}
        for ev in events:
            seq = ev.get("seq")
            self._event_seq = int(seq) if isinstance(seq, int) else self._event_seq + 1
            msg = _sse("event", json.dumps(ev, separators=(",", ":")), self._event_seq)
            self._events_kept.append((self._event_seq, msg))
            for c in list(self._event_clients):
                if len(c.items) == c.items.maxlen:  # never drop an event: cut the client
                    c.closed = True
                    c.wake.set()
                    self._event_clients.discard(c)
                    self.counters.clients_disconnected += 1
                else:
                    c.push(msg)
        if stats is not None:
            self._latest_stats = json.dumps(stats, separators=(",", ":"))
            msg = _sse("stats", self._latest_stats)
            for c in self._stream_clients:
                c.push(msg)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[self._middleware])
        r = app.router
        for path in STATIC:
            r.add_get(path, self._static_file)
        r.add_get("/healthz", self._healthz)
        r.add_get("/readyz", self._readyz)
        r.add_get("/v1/info", self._info)
        r.add_get("/v1/annotation", self._annotation)
        r.add_get("/v1/stream", self._stream)
        r.add_get("/v1/events", self._events)
        r.add_get("/v1/stats", self._stats)
        r.add_post("/v1/pose", self._pose)
        r.add_post("/v1/set/{name}", self._set)
        r.add_get("/v1/frame.jpg", self._frame_jpg)
        r.add_get("/v1/video.mjpg", self._mjpeg)
        r.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        self.counters.requests += 1
        refused = self._foreign(request)
        if refused is not None:
            self.counters.unauthorized += 1
            return _error(403, refused, _SECURITY_HEADERS)
        if self._token is not None and request.path not in PUBLIC:
            auth = request.headers.get("Authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    given.strip().encode(), self._token.encode()):
                self.counters.unauthorized += 1
                return _error(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                              {"WWW-Authenticate": 'Bearer realm="edge-pose"',
                               **_SECURITY_HEADERS})
        try:
            resp = await handler(request)
        except web.HTTPException as e:  # aiohttp's 404/405/413 as JSON
            resp = _error(e.status, e.reason, {k: v for k, v in e.headers.items()
                                               if k.lower() in ("allow", "retry-after")})
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("HTTP %s %s failed", request.method, request.path[:200])
            resp = _error(500, "internal error (see the device's log)")
        if not resp.prepared:
            resp.headers.update(_SECURITY_HEADERS)
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def _foreign(self, request: web.Request) -> str | None:
        """Why a request that a browser sent on behalf of another site is refused, or None.

        A web page elsewhere can make the browser POST to 127.0.0.1 (a form or ``fetch`` with
        a simple content type needs no CORS preflight), and a DNS name re-pointed at 127.0.0.1
        can read the answers. So: a POST whose ``Origin`` is not this server is refused, and a
        loopback-bound server answers only requests addressed to a loopback name.
        """
        if self._loopback:
            host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
            if host and not is_loopback(host):
                return (f"Host {host[:60]!r} is not this loopback server (DNS rebinding?); "
                        "address it as 127.0.0.1 or localhost, or bind another address "
                        "with a token")
        origin = request.headers.get("Origin")
        if (request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None
                and urlsplit(origin).netloc.lower() != (request.host or "").lower()):
            return f"cross-site request from Origin {origin[:80]!r} refused"
        return None

    # ------------------------------------------------------------------ handlers

    async def _static_file(self, request: web.Request) -> web.Response:
        body, ctype = self._static[request.path]
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, reason = await self._in_thread(self._ready)
        return web.json_response({"ready": ok, "reason": reason}, status=200 if ok else 503)

    async def _info(self, request: web.Request) -> web.Response:
        c = self.config
        return web.json_response({
            "device_id": self.device_id, "version": __version__, "budgets_fps": self.budgets,
            "limits": {"max_body_bytes": c.max_body_bytes, "max_pixels": c.max_pixels,
                       "mjpeg_max_fps": c.mjpeg_max_fps, "pose_rate_per_s": c.pose_rate_per_s},
            "commands": list(COMMANDS), "bones": _BONE_NAMES})

    async def _annotation(self, request: web.Request) -> web.Response:
        if self._latest is None:
            return _error(503, "no frame processed yet", {"Retry-After": "1"})
        return web.Response(text=self._latest[2], content_type="application/json")

    async def _stats(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self._in_thread(self._stats_snapshot))
        except RuntimeError as e:  # the runtime has no stats yet (models loading)
            return _error(503, f"no stats yet: {e}", {"Retry-After": "1"})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._in_thread(lambda: generate_latest(self._registry))
        return web.Response(body=body, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._work_pool, fn)

    # --- streams

    def _admit(self) -> web.Response | None:
        if self._n_streaming >= self.config.max_clients:
            self.counters.clients_refused += 1
            return _error(503, f"more than {self.config.max_clients} streaming clients "
                          "(http.max_clients)", {"Retry-After": "5"})
        return None

    async def _sse_response(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no", **_SECURITY_HEADERS})
        await resp.prepare(request)
        return resp

    async def _send(self, resp: web.StreamResponse, data: bytes) -> bool:
        try:
            await asyncio.wait_for(resp.write(data), self.config.write_timeout_s)
            return True
        except TimeoutError:
            self.counters.clients_disconnected += 1
            return False
        except (ConnectionError, RuntimeError):
            return False

    async def _pump(self, resp: web.StreamResponse, client: _Client) -> None:
        """Sends ``client``'s queue until it closes, with keep-alive comments."""
        assert self._stop is not None
        while not client.closed and not self._stop.is_set():
            try:
                await asyncio.wait_for(client.wake.wait(), _KEEPALIVE_S)
            except TimeoutError:
                if not await self._send(resp, b": keep-alive\n\n"):
                    return
                continue
            client.wake.clear()
            if not client.items:
                continue
            data = "".join(client.items).encode()
            client.items.clear()
            if not await self._send(resp, data):
                return

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        refused = self._admit()
        if refused is not None:
            return refused
        client = _Client(self.config.client_queue)
        client.push("retry: 2000\n\n")
        if self._latest is not None:
            client.push(_sse("annotation", self._latest[2], self._latest[1].frame_id))
        if self._latest_stats is not None:
            client.push(_sse("stats", self._latest_stats))
        self._n_streaming += 1
        self._stream_clients.add(client)
        try:
            resp = await self._sse_response(request)
            await self._pump(resp, client)
            return resp
        finally:
            self._stream_clients.discard(client)
            self._n_streaming -= 1

    async def _events(self, request: web.Request) -> web.StreamResponse:
        after_text = request.headers.get("Last-Event-ID") or request.query.get("after", "")
        after: int | None = None
        if after_text:
            try:
                after = int(after_text)
            except ValueError:
                return _error(400, f"Last-Event-ID/after must be an integer, got "
                              f"{after_text[:40]!r}")
        refused = self._admit()
        if refused is not None:
            return refused
        client = _Client(self.config.events_kept)
        client.push("retry: 2000\n\n")
        if after is not None:
            for seq, msg in self._events_kept:
                if seq > after:
                    client.push(msg)
        self._n_streaming += 1
        self._event_clients.add(client)
        try:
            resp = await self._sse_response(request)
            await self._pump(resp, client)
            return resp
        finally:
            self._event_clients.discard(client)
            self._n_streaming -= 1

    async def _jpeg_of_latest(self, overlay: bool, width: int) -> tuple[int, bytes] | None:
        """The newest frame as JPEG, encoded once per frame and view in the JPEG worker."""
        latest = self._latest
        if latest is None:
            return None
        frame, annotation, _ = latest
        key = (annotation.frame_id, overlay, width)
        fut = self._jpeg.get(key)
        if fut is None:
            quality = self.config.jpeg_quality

            def encode() -> bytes:
                return encode_jpeg(frame.image, annotation if overlay else None,
                                   max_width=width, quality=quality)

            fut = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
                self._jpeg_pool, encode))
            self._jpeg[key] = fut
            self.counters.jpeg_encoded += 1
        return annotation.frame_id, await asyncio.shield(fut)

    def _view(self, request: web.Request) -> tuple[bool, int] | web.Response:
        """``?overlay=0`` (no skeletons) and ``?width=`` (px, in steps of 64) of a frame."""
        overlay = request.query.get("overlay", "1") not in ("0", "false", "no")
        top = self.config.jpeg_max_width
        text = request.query.get("width")
        if text is None:
            return overlay, top
        if not is_ascii_number(text) or not 64 <= int(text) <= 8192:
            return _error(400, f"width must be an integer in [64, {top}] px")
        # Steps of 64 px bound the number of encodings per frame whatever clients ask.
        return overlay, max(64, min(top, int(text)) // 64 * 64)

    async def _frame_jpg(self, request: web.Request) -> web.Response:
        view = self._view(request)
        if isinstance(view, web.Response):
            return view
        got = await self._jpeg_of_latest(*view)
        if got is None:
            return _error(503, "no frame processed yet", {"Retry-After": "1"})
        frame_id, body = got
        return web.Response(body=body, headers={"Content-Type": "image/jpeg",
                                                "X-Frame-Id": str(frame_id)})

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        fps = self.config.mjpeg_max_fps
        if "fps" in request.query:
            try:
                asked = float(request.query["fps"])
            except ValueError:
                asked = float("nan")
            if not 0 < asked <= fps:
                return _error(400, f"fps must be in (0, {fps:g}] (http.mjpeg_max_fps)")
            fps = asked
        view = self._view(request)
        if isinstance(view, web.Response):
            return view
        refused = self._admit()
        if refused is not None:
            return refused
        self._n_streaming += 1
        try:
            resp = web.StreamResponse(headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
                "Cache-Control": "no-store", **_SECURITY_HEADERS})
            await resp.prepare(request)
            assert self._stop is not None
            sent = -1
            next_t = time.monotonic()
            while not self._stop.is_set():
                delay = next_t - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._latest is None or self._latest[1].frame_id == sent:
                    assert self._new_frame is not None
                    try:
                        await asyncio.wait_for(self._new_frame.wait(), _KEEPALIVE_S)
                    except TimeoutError:
                        continue
                    if self._stop.is_set():
                        break
                got = await self._jpeg_of_latest(*view)
                if got is None:
                    continue
                sent, body = got
                head = (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(body)}\r\nX-Frame-Id: {sent}\r\n\r\n").encode()
                if not await self._send(resp, head + body + b"\r\n"):
                    break
                next_t = max(next_t + 1.0 / fps, time.monotonic())
            return resp
        finally:
            self._n_streaming -= 1

    # --- commands and still images

    async def _set(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in COMMANDS:
            return _error(404, f"unknown setting {name[:40]!r}; settable: {', '.join(COMMANDS)}")
        if request.content_length is not None and request.content_length > 65536:
            self.counters.commands_rejected += 1
            return _error(413, "command payload over 64 KiB")
        try:
            async with asyncio.timeout(self.config.read_timeout_s):
                payload = await request.read()
        except TimeoutError:
            self.counters.commands_rejected += 1
            return self._body_too_slow(request)
        try:
            result = await self._in_thread(lambda: self._command(name, payload))
        except CommandError as e:
            self.counters.commands_rejected += 1
            return _error(400, str(e))
        self.counters.commands_accepted += 1
        logger.info("HTTP command %s from %s applied", name, request.remote)
        return web.json_response(result)

    async def _pose(self, request: web.Request) -> web.Response:
        resp = await self._pose_checked(request)
        if resp.status == 200:
            self.counters.pose_ok += 1
        else:
            self.counters.pose_rejected += 1
        return resp

    def _rate_limit(self, client: str) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) > 4096:  # forget clients that are full again
                cut = time.monotonic() - self.config.pose_burst / self.config.pose_rate_per_s
                self._buckets = {k: b for k, b in self._buckets.items() if b.t > cut}
            bucket = self._buckets[client] = _Bucket(self.config.pose_rate_per_s,
                                                     self.config.pose_burst)
        return bucket.take()

    async def _pose_checked(self, request: web.Request) -> web.Response:
        c = self.config
        wait = self._rate_limit(request.remote or "?")
        if wait > 0:
            self.counters.pose_rate_limited += 1
            return _error(429, f"over {c.pose_rate_per_s:g} images per second "
                          "(http.pose_rate_per_s)", {"Retry-After": str(max(1, round(wait)))})
        if request.content_length is not None and request.content_length > c.max_body_bytes:
            return _error(413, f"body of {request.content_length} bytes is over "
                          f"{c.max_body_bytes} (http.max_body_bytes)", {"Connection": "close"})
        ctype = request.content_type.lower()
        try:
            async with asyncio.timeout(c.read_timeout_s):
                if ctype in IMAGE_TYPES:
                    body = await request.read()  # aiohttp enforces client_max_size (413)
                elif ctype == "multipart/form-data":
                    got = await self._multipart_image(request)
                    if isinstance(got, web.Response):
                        return got
                    body = got
                else:
                    return _error(415, f"content type {ctype or '(none)'!r} is not accepted: "
                                  "send image/jpeg or image/png, or multipart/form-data with "
                                  "one image")
        except TimeoutError:
            return self._body_too_slow(request)
        kind = sniff(body)
        if kind is None:
            return _error(400, "the body is not a JPEG or PNG image")
        size = image_size(body)
        if size is None:
            return _error(400, f"the {kind.upper()} header is damaged: no image size")
        w, h = size
        if w * h > c.max_pixels:
            return _error(413, f"image of {w}x{h} pixels is over {c.max_pixels} "
                          "(http.max_pixels)")
        if self._pose_waiting >= c.pose_pending:
            return _error(503, f"{self._pose_waiting} images are waiting already "
                          "(http.pose_pending)", {"Retry-After": "1"})
        self._pose_waiting += 1
        try:
            payload = await asyncio.get_running_loop().run_in_executor(
                self._pose_pool, self._pose_image, body)
        except ValueError as e:
            return _error(400, f"the image cannot be decoded: {e}")
        finally:
            self._pose_waiting -= 1
        return web.json_response(payload)

    def _body_too_slow(self, request: web.Request) -> web.Response:
        """408 for a body that did not arrive within ``read_timeout_s``; the connection closes.

        aiohttp bounds a body's size, not its time: a client announcing a length and sending
        less (or trickling it) held its connection and handler for as long as it liked.
        """
        logger.info("HTTP %s %s from %s: body not in within %g s (http.read_timeout_s)",
                    request.method, request.path, request.remote, self.config.read_timeout_s)
        return _error(408, f"the request body did not arrive within "
                      f"{self.config.read_timeout_s:g} s (http.read_timeout_s)",
                      {"Connection": "close"})

    async def _multipart_image(self, request: web.Request) -> bytes | web.Response:
        """The first image part of a multipart body, read up to the body limit."""
        try:
            return await self._multipart_image_unchecked(request)
        except (ValueError, HttpProcessingError) as e:  # no boundary, a part's broken headers
            reason = str(e).strip().splitlines()
            return _error(400, "the multipart body is malformed: "
                          f"{' '.join(x.strip() for x in reason)[:200]}")

    async def _multipart_image_unchecked(self, request: web.Request) -> bytes | web.Response:
        limit = self.config.max_body_bytes
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return _error(400, "the multipart body has no image part")
            if not isinstance(part, BodyPartReader):
                continue
            ptype = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ptype not in IMAGE_TYPES and part.filename is None:
                await part.release()
                continue
            if ptype and ptype not in IMAGE_TYPES and ptype != "application/octet-stream":
                return _error(415, f"multipart part of type {ptype!r} is not accepted: "
                              "send image/jpeg or image/png")
            chunks: list[bytes] = []
            total = 0
            while chunk := await part.read_chunk(65536):
                total += len(chunk)
                if total > limit:
                    return _error(413, f"image part over {limit} bytes (http.max_body_bytes)",
                                  {"Connection": "close"})
                chunks.append(chunk)
            return b"".join(chunks)


class _ClientFaults(logging.Filter):
    """Turns aiohttp's tracebacks for a client's fault into one line of the log.

    aiohttp logs a request it cannot parse (a header over 8 KiB, a broken chunk, a stray byte)
    and a client that hangs up mid-upload with ``logger.exception``: ten lines of traceback at
    ERROR for what is the client's doing, one per request, so a hostile or broken client could
    fill the journal. Those become a WARNING (bad request) or INFO (connection lost) line
    naming the client and the fault; any other exception keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrites a client's fault in place; keeps it only when its new level is enabled."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | ConnectionError):
            return True
        bad = isinstance(exc, HttpProcessingError)
        what = (" ".join(line.strip() for line in str(exc).splitlines())[:200] if bad
                else "the client closed the connection mid-request")
        record.msg = f"{record.getMessage()}: {what}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING if bad else logging.INFO
        record.levelname = logging.getLevelName(record.levelno)
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


#: The logger aiohttp's server writes its request errors to (see :class:`_ClientFaults`).
SERVER_LOGGER = logging.getLogger(__name__ + ".server")
SERVER_LOGGER.addFilter(_ClientFaults())


class _MetricsCollector(Collector):
    """The stats snapshot and the transport's counters as Prometheus metrics (per scrape)."""

    def __init__(self, transport: HttpTransport) -> None:
        self.transport = transport

    def collect(self) -> Iterator[Metric]:
        """Yields every metric family, read now."""
        t = self.transport
        try:
            s = t._stats_snapshot()
        except RuntimeError:  # no stats yet (models loading): the HTTP counters only
            s = {}
        yield GaugeMetricFamily("edgepose_up", "1 once the runtime has stats", value=int(bool(s)))
        info = GaugeMetricFamily("edgepose_info", "device and version", labels=["device_id",
                                                                               "version"])
        info.add_metric([str(s.get("device_id", t.device_id)), str(s.get("version", ""))], 1)
        yield info
        if s.get("fps") is not None:
            yield GaugeMetricFamily("edgepose_fps", "frames processed per second",
                                    value=s["fps"])
        yield GaugeMetricFamily("edgepose_people", "people in the latest frame",
                                value=s.get("people", 0))
        frames = CounterMetricFamily("edgepose_frames", "frames by outcome", labels=["kind"])
        for kind, v in (s.get("frames") or {}).items():
            frames.add_metric([kind], v)
        yield frames
        runs = CounterMetricFamily("edgepose_stage_runs", "stage runs", labels=["stage"])
        fps = GaugeMetricFamily("edgepose_stage_fps", "1000 / mean ms: how often the stage "
                                "could run", labels=["stage"])
        ms = GaugeMetricFamily("edgepose_stage_ms", "stage duration, ms",
                               labels=["stage", "stat"])
        budget = GaugeMetricFamily("edgepose_stage_budget_fps", "the design's runs per second "
                                   "for the stage", labels=["stage"])
        for stage, st in (s.get("stages") or {}).items():
            runs.add_metric([stage], st.get("runs", 0))
            if st.get("fps") is not None:
                fps.add_metric([stage], st["fps"])
            for stat in ("mean_ms", "p50_ms", "p90_ms"):
                if st.get(stat) is not None:
                    ms.add_metric([stage, stat.removesuffix("_ms")], st[stat])
        for stage, b in t.budgets.items():
            budget.add_metric([stage], b)
        yield from (runs, fps, ms, budget)
        mqtt = s.get("mqtt") or {}
        if mqtt:
            yield GaugeMetricFamily("edgepose_mqtt_connected", "1 while connected to the broker",
                                    value=int(mqtt.get("connects", 0) > mqtt.get("disconnects",
                                                                                 0)))
            for k, v in mqtt.items():
                if k == "events_queued":
                    yield GaugeMetricFamily("edgepose_mqtt_events_queued",
                                            "events not yet acknowledged", value=v)
                else:
                    yield CounterMetricFamily(f"edgepose_mqtt_{k}", f"MQTT {k}", value=v)
        for k, v in (s.get("settings") or {}).items():
            yield GaugeMetricFamily(f"edgepose_setting_{k}", f"setting {k}", value=float(v))
        system = s.get("system") or {}
        for k, help_ in (("rss_bytes", "resident memory, bytes"),
                         ("cpu_percent", "process CPU, 100 = one core"),
                         ("cpu_temp_c", "CPU temperature, Celsius")):
            if system.get(k) is not None:
                yield GaugeMetricFamily(f"edgepose_{k}", help_, value=system[k])
        for k, v in t.counters_snapshot().items():
            if k == "clients":
                yield GaugeMetricFamily("edgepose_http_clients", "streaming clients now",
                                        value=v)
            else:
                yield CounterMetricFamily(f"edgepose_http_{k}", f"HTTP {k}", value=v)
