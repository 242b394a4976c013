"""The device service (``edge-pose daemon``) and the HTTP server (``edge-pose serve``).

Both are the one :class:`~edge.app.Runtime` with transports attached: MQTT (``[mqtt]``), HTTP
(``[http]``; always on for ``serve``) and the file outputs (``output.dir``).

Start, in order: load and validate the config and run every check the daemon would fail on
(:func:`edge.preflight.preflight`, exit 2 naming the key); open the event journal and start the
MQTT client (connecting in the background, so a broker that is not up yet is fine) and the HTTP
server (``/healthz`` answers while the models load); open the source and load the models; tell
systemd ``READY=1``; run the loop, pinging the watchdog from it on every tick, with or without
a frame. Stop, in reverse, on SIGTERM/SIGINT (or when a file source ends): the current frame
finishes, the outputs and the source close, queued events are delivered while the broker is
there (up to ``service.shutdown_timeout_s``) and the rest stay in the journal, the last
``stats`` and ``stopped`` (or ``failed`` with the reason) are published, and the client
disconnects cleanly.

A live source never ends the service: a camera that goes away is reported (``source.state``
``lost`` in ``stats``, a ``camera_lost`` event, ``camera_back`` when it delivers again) while
the source reconnects and the loop keeps the watchdog fed. A *file* source ending is a normal
end (exit 0; ``Restart=on-failure`` leaves it stopped), unless nothing at all could be read
from it (exit 1).

Run-time settings (``set/<name>`` on MQTT, ``POST /v1/set/<name>`` on HTTP, one validation:
:mod:`edge.comms.commands`) reach the frame loop through the runtime's
:class:`~edge.comms.commands.Controls`.

Exit status: 0 after a clean stop, 1 when the run failed (a broken file, a failing output:
systemd restarts the service), 2 for a bad config or missing models
(``RestartPreventExitStatus=2``: a restart would not help).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets as _secrets
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge import __version__
from edge.annotation import Annotation
from edge.app import Runtime, StillImages
from edge.comms.commands import Controls
from edge.comms.events import EVENTS_SCHEMA_VERSION, EventQueue
from edge.comms.mqtt import MqttPublisher
from edge.comms.system import SystemProbe
from edge.config import Config, ConfigError, load_config
from edge.preflight import preflight, resolve_state_dir
from edge.sdnotify import Notifier
from edge.sources.live import quiet_video_backends
from edge.sources.open import names_stills
from edge.types import Frame

if TYPE_CHECKING:
    from edge.transports.http import HttpTransport

logger = logging.getLogger(__name__)

STATS_SCHEMA_VERSION = 1


def state_dir(config: Config, environ: Mapping[str, str] | None = None) -> Path:
    """Where the event journal lives.

    Returns:
        ``service.state_dir``, else ``$STATE_DIRECTORY`` (its first entry), else
        ``/var/lib/edge-pose``.
    """
    return resolve_state_dir(config, environ)


class MqttPoseSink:
    """A transport publishing each annotation on ``pose`` (nothing while disabled).

    Never blocks: paho queues the message, and the publisher keeps only the newest
    ``mqtt.pose_queue`` frames while the broker is away.
    """

    def __init__(self, publisher: MqttPublisher, controls: Controls) -> None:
        self.publisher = publisher
        self.controls = controls

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Publishes (or queues) the annotation."""
        if self.controls.get("enabled"):
            self.publisher.publish_pose(annotation.to_json())

    def close(self) -> None:
        """Nothing to release (the publisher is closed by the service)."""


_MQTT_ZERO = {"connects": 0, "disconnects": 0, "pose_published": 0, "pose_dropped": 0,
              "events_published": 0, "events_queued": 0, "events_dropped": 0,
              "commands_accepted": 0, "commands_rejected": 0}


class StatsReporter:
    """Builds the ``stats`` payload (``stats_schema.json``) from the runtime's snapshot.

    Args:
        config: For the device id.
        runtime: The runtime whose snapshot is reported.
    """

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.device_id = config.annotation.device_id
        self.runtime = runtime
        self.publisher: MqttPublisher | None = None
        self.events: EventQueue | None = None
        self.finished = False
        self._probe = SystemProbe()
        self._t0 = time.monotonic()

    def __call__(self) -> dict[str, Any]:
        """The payload, now (any thread)."""
        snap = self.runtime.snapshot()
        processed = snap["frames_processed"]
        if self.finished:
            dropped = snap["frames_dropped"]
        else:  # the newest frame read may still be on its way to the core
            dropped = max(0, snap["frames_read"] - processed - 1) + snap["source_dropped"]
        fps = self.runtime.stats.current_fps()
        pub = self.publisher
        mqtt = dict(_MQTT_ZERO)
        if pub is not None:
            mqtt.update(dataclasses.asdict(pub.counters))
        if self.events is not None:
            mqtt.update(events_queued=len(self.events), events_dropped=self.events.dropped)
        stages = {name: {k: st[k] for k in ("runs", "mean_ms", "p50_ms", "p90_ms", "fps")}
                  for name, st in snap["stages"].items()}
        return {
            "v": STATS_SCHEMA_VERSION,
            "device_id": self.device_id,
            "ts": round(time.time(), 3),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._t0, 1),
            "fps": None if fps is None else round(fps, 2),
            "people": snap["people"],
            "frames": {"read": snap["frames_read"], "processed": processed,
                       "dropped": dropped, "overrun": snap["ticks_overrun"]},
            "source": snap["source"],
            "stages": stages,
            "settings": snap["settings"],
            "mqtt": mqtt,
            "system": self._probe.sample(),
        }


class EventNumbers:
    """Numbers events for transports when there is no MQTT journal to do it (``serve``).

    ``seq`` counts from 1 under a random ``stream`` id for this process only (no journal, so
    a restart starts a new stream: ``(stream, seq)`` stays unique).
    """

    def __init__(self) -> None:
        self.stream = _secrets.token_hex(8)
        self.next_seq = 1
        self._lock = threading.Lock()

    def add_many(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The payloads with ``seq`` and ``stream``."""
        with self._lock:
            out = [{**p, "seq": self.next_seq + i, "stream": self.stream}
                   for i, p in enumerate(payloads)]
            self.next_seq += len(payloads)
            return out


def source_event(kind: str, device_id: str, frame_id: int, reason: str | None
                 ) -> dict[str, Any]:
    """A ``camera_lost`` / ``camera_back`` event payload (no track; without seq/stream).

    Args:
        kind: ``camera_lost`` or ``camera_back``.
        device_id: The device.
        frame_id: The last frame processed before it (0 if none).
        reason: Why the source was lost (``camera_lost``), else None.
    """
    payload: dict[str, Any] = {
        "v": EVENTS_SCHEMA_VERSION, "device_id": device_id, "kind": kind, "track_id": None,
        "other_id": None, "ts": round(time.time(), 6),
        "t_source": round(time.monotonic(), 6), "frame_id": int(frame_id)}
    if reason is not None:
        payload["reason"] = reason[:300]
    return payload


def _setup_logging(config: Config, environ: Mapping[str, str]) -> None:
    # Under systemd (JOURNAL_STREAM set) the journal adds timestamps itself.
    fmt = ("%(levelname)s %(name)s: %(message)s" if environ.get("JOURNAL_STREAM")
           else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=config.logging.level, format=fmt, force=True)
    quiet_video_backends(debug=config.logging.level == "DEBUG")
    logging.getLogger("paho.mqtt").setLevel(max(logging.WARNING,
                                                logging.getLevelName(config.logging.level)))


def _refuse_stills(config: Config, origin: str) -> None:
    """The service streams a camera or a video: photos are refused, with where they go.

    ``serve --source zidane.jpg`` posed the photo, ended its one-frame run and took the viewer
    down with it after 1.5 s.

    Raises:
        ConfigError: ``source.uri`` is an image file or a folder (exit status 2).
    """
    uri = config.source.uri
    if names_stills(uri):
        raise ConfigError(origin, [("source.uri", (
            f"{uri!r} is a photo or a folder: the service streams a camera or a video; pose "
            "photos with `edge-pose run --source PHOTO` (image mode), or on a running "
            "service with POST /v1/pose and the viewer's \"Find people in a photo\""))])


def _decode_image(body: bytes) -> Any:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("OpenCV cannot decode it (truncated or damaged)")
    return np.ascontiguousarray(image, np.uint8)


def run_service(config: Config, environ: Mapping[str, str] | None = None, *,
                origin: str = "<config>", http: bool | None = None) -> int:
    """Runs the runtime with its transports until SIGTERM/SIGINT or a file source's end.

    Args:
        config: The validated config.
        environ: The environment (``os.environ`` when None): secrets, ``$STATE_DIRECTORY``,
            ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``, ``$CREDENTIALS_DIRECTORY``.
        origin: The config's file name, for errors.
        http: Serve HTTP whatever ``http.enabled`` says (``serve``); None: as it says.

    Returns:
        The exit status (see the module docstring).

    Raises:
        edge.config.ConfigError: The config cannot work (the CLI prints it, exit status 2).
        edge.runtime.ModelError: A model is missing or damaged (exit status 2).
    """
    # aiohttp and prometheus-client only when HTTP is served: a daemon without [http] does
    # not carry their ~13 MiB.
    from edge.transports.http_config import check_bind, load_http_token

    env = os.environ if environ is None else environ
    secrets = preflight(config, env, origin=origin)
    _refuse_stills(config, origin)
    serve_http = config.http.enabled if http is None else http
    token = load_http_token(config.http, env) if serve_http else None
    if serve_http:
        check_bind(config.http, token, origin)
    _setup_logging(config, env)
    notifier = Notifier(env)
    rt = Runtime(config)
    signalled = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.set()
        logger.info("%s: stopping after the current frame", signal.Signals(signum).name)
        notifier.stopping("stopping")
        rt.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    dev = config.annotation.device_id
    reporter = StatsReporter(config, rt)
    publisher: MqttPublisher | None = None
    journal: EventQueue | None = None
    numbers = EventNumbers()
    server: HttpTransport | None = None
    code = 0
    failure: str | None = None  # why the run failed: availability "failed", not "stopped"
    last_id = [0]  # the newest processed frame's id
    last_frame = [-1.0]  # and its monotonic time
    try:
        logger.info("edge-pose %s, device %s, config %s", __version__, dev, origin)
        if config.mqtt.enabled:
            journal = EventQueue(state_dir(config, env), config.mqtt.events_queue,
                                 config.service.journal_sync_ms)
            logger.info("event journal %s (%d pending, next seq %d)", journal.path,
                        len(journal), journal.next_seq)
            if config.mqtt.username and secrets.mqtt_password is None:
                logger.warning("mqtt.username is set but no password was found in "
                               "$CREDENTIALS_DIRECTORY/%s or $%s",
                               config.mqtt.password_credential, config.mqtt.password_env)
            publisher = MqttPublisher(config, secrets, journal, rt.controls, reporter)
            reporter.publisher, reporter.events = publisher, journal
            publisher.start()
        elif not serve_http:
            logger.warning("mqtt.enabled = false and no [http]: nothing is published")
        if serve_http:
            still: list[StillImages] = []
            still_lock = threading.Lock()

            def pose_image(body: bytes) -> dict[str, Any]:
                image = _decode_image(body)
                with still_lock:  # loaded on the first request, kept for the next ones
                    if not still:
                        still.append(StillImages(config))
                return still[0](image).payload

            def command(name: str, payload: bytes) -> dict[str, Any]:
                return {"name": name, "value": rt.controls.apply(name, payload)}

            def stats_snapshot() -> dict[str, Any]:
                if rt.core is None:
                    raise RuntimeError("no stats before the models are loaded")
                return reporter()

            def ready() -> tuple[bool, str]:
                if rt.core is None:
                    return False, "loading models"
                state = rt.stats.summary()["source"]["state"]
                if state != "ok":
                    return False, f"source {state}"
                if last_frame[0] < 0:
                    return False, "no frame yet"
                age = time.monotonic() - last_frame[0]
                if age > config.http.ready_max_frame_age_s:
                    return False, f"newest frame is {age:.1f} s old"
                return True, f"running, newest frame {age:.2f} s old"

            sc = config.scheduler
            from edge.transports.http import HttpTransport

            server = HttpTransport(
                config.http, stats_snapshot=stats_snapshot, command=command,
                pose_image=pose_image, ready=ready, token=token, device_id=dev,
                budgets={"detect": sc.budget_detector_fps, "pose2d": sc.budget_pose2d_fps,
                         "pose3d": sc.budget_pose3d_fps})
            server.start()
            logger.info("HTTP API and viewer on %s", server.url)

        def publish_events(payloads: list[dict[str, Any]]) -> None:
            numbered = (journal.add_many(payloads) if journal is not None
                        else numbers.add_many(payloads))
            if publisher is not None:
                publisher.wake()
            if server is not None:
                server.events(numbered)

        notifier.status("loading models")
        rt.open()
        assert rt.core is not None and rt.source is not None
        source = rt.source
        rt.core.listeners.append(publish_events)
        if publisher is not None:
            rt.add_output(MqttPoseSink(publisher, rt.controls), name="mqtt", queued=False)
        if server is not None:
            rt.add_output(server, name="http", queued=False)
        if config.output.dir is not None:
            rt.add_file_outputs(config.output.dir)
        def watchdog() -> None:
            if config.service.watchdog:
                notifier.watchdog()

        rt.on_tick.append(watchdog)

        def on_source(state: str, why: str | None) -> None:
            kind = "camera_lost" if state == "lost" else "camera_back"
            notifier.status(f"source {source.name}: {state}")
            publish_events([source_event(kind, dev, last_id[0], why)])

        rt.on_source.append(on_source)
        stats_stop = threading.Event()
        stats_thread: threading.Thread | None = None
        if server is not None:
            def push_stats() -> None:
                while not stats_stop.wait(2.0):
                    if server is not None:
                        server.stats(reporter())

            stats_thread = threading.Thread(target=push_stats, name="http-stats", daemon=True)
            stats_thread.start()

        def on_step(frame: Frame, result: Any) -> None:
            first = last_frame[0] < 0
            last_id[0], last_frame[0] = frame.frame_id, time.monotonic()
            if first:
                notifier.status(f"running: {source.name}")

        if rt.stop_event.is_set():
            return 0
        watchdog()
        notifier.ready(f"models loaded, source {source.name} open")
        logger.info("ready: source %s, %s mode at %.1f Hz", source.name, rt.mode,
                    config.scheduler.rate_hz)
        try:
            code = rt.run(on_step=on_step)
        finally:
            stats_stop.set()
            if stats_thread is not None:
                stats_thread.join(timeout=5)
        skipped = getattr(source, "skipped", [])
        if rt.stats.frames_processed == 0 and skipped and code == 0:
            rt.stats.error = f"none of the {len(skipped)} images could be read"
            logger.error("%s", rt.stats.error)
            code = 1
        reporter.finished = True
        logger.info("stopped after %d frames (%s)", rt.stats.frames_processed,
                    "signal" if signalled.is_set() else (rt.stats.error or "end of source"))
        if code != 0:
            failure = rt.stats.error or f"exit status {code}"
    except Exception as e:
        failure = f"{type(e).__name__}: {e}"
        raise
    finally:
        notifier.stopping("stopping: flushing queues")
        if rt.close() != 0 and failure is None:
            failure = rt.stats.error
            code = max(code, 1)
        if publisher is not None:
            publisher.close(config.service.shutdown_timeout_s, failure=failure)
        elif journal is not None:
            journal.close()
        if server is not None:
            server.close()  # also closed as an output; safe twice (when never added)
        notifier.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return code


def run_daemon(config_path: Path, environ: Mapping[str, str] | None = None) -> int:
    """``edge-pose daemon``: :func:`run_service` on the config file.

    Args:
        config_path: The TOML config.
        environ: The environment (``os.environ`` when None).

    Returns:
        The exit status (see the module docstring).

    Raises:
        edge.config.ConfigError: The config is invalid (exit status 2).
        edge.runtime.ModelError: A model is missing or damaged (exit status 2).
    """
    return run_service(load_config(config_path), environ, origin=str(config_path))
