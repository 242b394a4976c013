"""The device daemon (``edge-pose daemon``): config -> MQTT -> models -> source -> frame loop.

Start, in order: load and validate the config and read its secrets; open the event journal and
start the MQTT client (connecting in the background, so a broker that is not up yet is fine);
load the models; open the source; tell systemd ``READY=1``; run the realtime loop, pinging the
watchdog from it. Stop, in reverse, on SIGTERM/SIGINT (or when a file source ends): the current
frame finishes, the source and sinks close, queued events are delivered while the broker is
there (up to ``service.shutdown_timeout_s``) and the rest stay in the journal, the last
``stats`` and ``stopped`` are published, and the client disconnects cleanly.

Run-time settings (``set/<name>``, see :mod:`edge.comms.commands`) reach the frame loop through
:class:`~edge.comms.commands.Controls`: :class:`ControlledCore` applies ``max_persons`` and
``enabled`` between frames on the core's thread, and :class:`DetectorGate` paces the detector
at ``detector_hz`` (the scheduler's detector thread runs at the tick rate, the gate holds it
back), so the scheduler itself needs no hooks.

Exit status: 0 after a clean stop, 1 when the run failed (a dead camera: systemd restarts the
service), 2 for a bad config or missing models (``RestartPreventExitStatus=2``: a restart
would not help).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from edge import __version__
from edge.annotation import Annotation
from edge.comms.commands import Controls
from edge.comms.events import EventFilter, EventQueue
from edge.comms.mqtt import MqttPublisher
from edge.comms.system import SystemProbe
from edge.config import Config, load_config
from edge.pipeline import Pipeline, PoseCore, StepResult, build_pipeline
from edge.preflight import preflight, resolve_state_dir
from edge.scheduler import RunStats, run_every_frame, run_realtime
from edge.sdnotify import Notifier
from edge.sinks import JsonlSink, Sink, SinkError, StdoutSink, VideoSink
from edge.sources import SourceError, open_source
from edge.types import Detections, DetectorResult, Frame

logger = logging.getLogger(__name__)

STATS_SCHEMA_VERSION = 1


def state_dir(config: Config, environ: Mapping[str, str] | None = None) -> Path:
    """Where the event journal lives.

    Returns:
        ``service.state_dir``, else ``$STATE_DIRECTORY`` (its first entry), else
        ``/var/lib/edge-pose``.
    """
    return resolve_state_dir(config, environ)


class ControlledCore:
    """The pipeline's core with run-time controls and event publishing around it.

    Called only from the scheduler's core thread. Before each step it applies a changed
    ``max_persons`` (a new frozen ``TrackerConfig``; tracks above the new limit are kept until
    they leave, no new ones are opened) and ``enabled`` (disabling announces every shown track
    as ``left`` and resets the core; while disabled, the core runs with no tracks, which is
    cheap, and nothing is published on ``pose``). After each step it turns the tracker's events
    into published events (:class:`~edge.comms.events.EventFilter`) and queues them.

    Args:
        core: The pipeline's core.
        controls: The shared settings.
        events: Where published events go (None: dropped, MQTT disabled).
        device_id: For the event payloads.
        on_events: Called after events were queued (wakes the publisher).
    """

    def __init__(self, core: PoseCore, controls: Controls, events: EventQueue | None,
                 device_id: str, on_events: Callable[[], None] | None = None) -> None:
        self.core = core
        self.controls = controls
        self.events = events
        self.filter = EventFilter(device_id)
        self.on_events = on_events
        self._enabled = True
        self.people = 0

    def _queue(self, payloads: list[dict[str, Any]]) -> None:
        if self.events is None or not payloads:
            return
        self.events.add_many(payloads)  # one journal commit (one disk sync) per tick
        if self.on_events is not None:
            self.on_events()

    def step(self, frame: Frame, detected: DetectorResult | None) -> StepResult:
        """Applies the controls, runs the core on ``frame``, queues the events."""
        c = self.controls.snapshot()
        tracker = self.core.tracker
        if c["max_persons"] != tracker.config.max_persons:
            tracker.config = dataclasses.replace(tracker.config, max_persons=c["max_persons"])
            logger.info("max_persons is now %d", c["max_persons"])
        if c["enabled"] != self._enabled:
            self._enabled = c["enabled"]
            logger.info("processing %s", "enabled" if self._enabled else "disabled")
            if not self._enabled:
                self._queue(self.filter.leave_all(frame))
                self.core.reset()
        if not self._enabled:
            detected = None
        result = self.core.step(frame, detected)
        self.people = result.annotation.n_persons
        if self._enabled:
            self._queue(self.filter.update(frame, result.annotation, result.events))
        return result


class DetectorGate:
    """The detector as the scheduler's detector thread sees it, paced by ``detector_hz``.

    The scheduler runs its detector thread at the tick rate; each call waits here until
    ``1 / detector_hz`` has passed since the previous run (re-read while waiting, so a command
    takes effect at once), then runs the detector on the newest frame the core has seen or the
    one it was given, whichever is newer. While disabled it returns no detections.

    Args:
        pipeline: Runs the detector.
        controls: ``enabled`` and ``detector_hz``.
        stop: Ends the waiting.
    """

    def __init__(self, pipeline: Pipeline, controls: Controls, stop: threading.Event) -> None:
        self.pipeline = pipeline
        self.controls = controls
        self.stop = stop
        self.newest: Frame | None = None
        self._last = -float("inf")

    def __call__(self, frame: Frame) -> DetectorResult:
        """Runs the detector when its period has passed (see the class docstring)."""
        while not self.stop.is_set():
            if not self.controls.get("enabled"):
                self.stop.wait(0.2)
                return DetectorResult(Detections.empty(), frame.frame_id,
                                      frame.t_capture_ns / 1e9, 0.0)
            wait = self._last + 1.0 / self.controls.get("detector_hz") - time.monotonic()
            if wait <= 0:
                break
            self.stop.wait(min(wait, 0.1))
        newest = self.newest
        if newest is not None and newest.frame_id > frame.frame_id:
            frame = newest
        self._last = time.monotonic()
        return self.pipeline.detect(frame)


class MqttPoseSink:
    """A sink publishing each annotation on ``pose`` (nothing while disabled)."""

    def __init__(self, publisher: MqttPublisher, controls: Controls) -> None:
        self.publisher = publisher
        self.controls = controls

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Publishes (or queues) the annotation."""
        if self.controls.get("enabled"):
            self.publisher.publish_pose(annotation.to_json())

    def close(self) -> None:
        """Nothing to release (the publisher is closed by the daemon)."""


class StatsReporter:
    """Builds the ``stats`` payload (``stats_schema.json``) from the run's counters.

    Args:
        config: For the device id.
        run_stats: The scheduler's live counters.
        core: For the people count.
        controls: The current settings.
        source_dropped: Returns the source's dropped-frame count.
    """

    def __init__(self, config: Config, run_stats: RunStats, core: ControlledCore,
                 controls: Controls, source_dropped: Callable[[], int] | None = None) -> None:
        self.device_id = config.annotation.device_id
        self.run_stats = run_stats
        self.core = core
        self.controls = controls
        self.publisher: MqttPublisher | None = None
        self.events: EventQueue | None = None
        self.source_dropped = source_dropped
        self.finished = False
        self._probe = SystemProbe()
        self._t0 = time.monotonic()
        self._last = (self._t0, 0)

    def _stages(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, st in list(self.run_stats.stages.items()):
            for _ in range(5):  # the core thread may append meanwhile
                try:
                    s = st.summary()
                    break
                except RuntimeError:
                    continue
            else:
                continue
            out[name] = {k: s[k] for k in ("runs", "mean_ms", "p50_ms", "p90_ms", "fps")}
        return out

    def __call__(self) -> dict[str, Any]:
        """The payload, now."""
        rs = self.run_stats
        now = time.monotonic()
        t_last, n_last = self._last
        processed = rs.frames_processed
        fps = (processed - n_last) / (now - t_last) if now - t_last > 0.05 else None
        self._last = (now, processed)
        if self.finished:
            dropped = rs.frames_dropped
        else:
            src = int(self.source_dropped()) if self.source_dropped is not None else 0
            dropped = max(0, rs.frames_read - processed - 1) + src
        pub = self.publisher
        counters = dataclasses.asdict(pub.counters) if pub is not None else {}
        mqtt = {**counters,
                "events_queued": len(self.events) if self.events is not None else 0,
                "events_dropped": self.events.dropped if self.events is not None else 0}
        return {
            "v": STATS_SCHEMA_VERSION,
            "device_id": self.device_id,
            "ts": round(time.time(), 3),
            "version": __version__,
            "uptime_s": round(now - self._t0, 1),
            "fps": None if fps is None else round(fps, 2),
            "people": self.core.people,
            "frames": {"read": rs.frames_read, "processed": processed, "dropped": dropped,
                       "overrun": rs.ticks_overrun},
            "stages": self._stages(),
            "settings": self.controls.snapshot(),
            "mqtt": mqtt,
            "system": self._probe.sample(),
        }


def _setup_logging(config: Config, environ: Mapping[str, str]) -> None:
    # Under systemd (JOURNAL_STREAM set) the journal adds timestamps itself.
    fmt = ("%(levelname)s %(name)s: %(message)s" if environ.get("JOURNAL_STREAM")
           else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=config.logging.level, format=fmt, force=True)
    logging.getLogger("paho.mqtt").setLevel(max(logging.WARNING,
                                                logging.getLevelName(config.logging.level)))


def run_daemon(config_path: Path, environ: Mapping[str, str] | None = None) -> int:
    """Runs the service until SIGTERM/SIGINT or the end of a file source.

    Args:
        config_path: The TOML config.
        environ: The environment (``os.environ`` when None): secrets, ``$STATE_DIRECTORY``,
            ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``.

    Returns:
        The exit status (see the module docstring).

    Raises:
        edge.config.ConfigError: The config is invalid (the CLI prints it, exit status 2).
        edge.runtime.ModelError: A model is missing or damaged (exit status 2).
    """
    env = os.environ if environ is None else environ
    config = load_config(config_path)
    secrets = preflight(config, env, origin=str(config_path))
    _setup_logging(config, env)
    notifier = Notifier(env)
    stop = threading.Event()
    signalled = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.set()
        logger.info("%s: stopping after the current frame", signal.Signals(signum).name)
        notifier.stopping("stopping")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    dev = config.annotation.device_id
    controls = Controls(enabled=True, max_persons=config.tracking.max_persons,
                        detector_hz=min(config.scheduler.detector_hz, config.scheduler.rate_hz),
                        detector_hz_max=config.scheduler.rate_hz)
    sc = config.scheduler
    run_stats = RunStats.with_budgets(sc.budget_detector_fps, sc.budget_pose2d_fps,
                                      sc.budget_pose3d_fps)
    publisher: MqttPublisher | None = None
    events: EventQueue | None = None
    sinks: list[Sink] = []
    source = None
    code = 0
    failure: str | None = None  # why the run failed: availability "failed", not "stopped"
    try:
        logger.info("edge-pose %s daemon, device %s, config %s", __version__, dev, config_path)
        if config.mqtt.enabled:
            sdir = state_dir(config, env)
            events = EventQueue(sdir, config.mqtt.events_queue,
                                config.service.journal_sync_ms)
            logger.info("event journal %s (%d pending, next seq %d)", events.path, len(events),
                        events.next_seq)
            if config.mqtt.username and secrets.mqtt_password is None:
                logger.warning("mqtt.username is set but no password was found in "
                               "$CREDENTIALS_DIRECTORY/%s or $%s",
                               config.mqtt.password_credential, config.mqtt.password_env)
        notifier.status("loading models")
        pipeline = build_pipeline(config)
        core = ControlledCore(pipeline.core, controls, events, dev)
        reporter = StatsReporter(config, run_stats, core, controls)
        if config.mqtt.enabled:
            assert events is not None
            publisher = MqttPublisher(config, secrets, events, controls, reporter)
            reporter.publisher, reporter.events = publisher, events
            core.on_events = publisher.wake
            publisher.start()
            sinks.append(MqttPoseSink(publisher, controls))
        else:
            logger.warning("mqtt.enabled = false: nothing is published")
        if stop.is_set():
            return 0
        src = config.source
        source = open_source(src.uri, width=src.width, height=src.height, fps=src.fps,
                             loop=src.loop, reconnect_initial_s=src.reconnect_initial_s,
                             reconnect_max_s=src.reconnect_max_s)
        reporter.source_dropped = lambda: source.dropped if source is not None else 0
        out = config.output
        if out.dir is not None and out.jsonl:
            sinks.append(JsonlSink(out.dir / "annotations.jsonl"))
        if out.dir is not None and out.video:
            sinks.append(VideoSink(out.dir / "annotated.mp4", source.fps or sc.rate_hz))
        if out.stdout:
            sinks.append(StdoutSink())
        gate = DetectorGate(pipeline, controls, stop)
        watchdog = notifier.watchdog if config.service.watchdog else (lambda: False)
        frames_seen = [0]

        def on_step(frame: Frame, result: StepResult) -> None:
            gate.newest = frame
            watchdog()
            frames_seen[0] += 1
            if frames_seen[0] == 1:
                notifier.status(f"running: {source.name if source else ''}")

        watchdog()
        notifier.ready(f"models loaded, source {source.name} open")
        logger.info("ready: source %s, %s mode at %.1f Hz", source.name, sc.mode, sc.rate_hz)
        try:
            if sc.mode == "every-frame":
                run_every_frame(source, core, pipeline.detect, sinks, run_stats,
                                detector_every=sc.detector_every, stop=stop, on_step=on_step)
            else:
                run_realtime(source, core, gate, sinks, run_stats, rate_hz=sc.rate_hz,
                             detector_hz=sc.rate_hz, stop=stop, on_step=on_step)
        except (SourceError, SinkError) as e:
            logger.error("run failed: %s", e)
            run_stats.error = str(e)
            code = 1
        reporter.finished = True
        logger.info("stopped after %d frames (%s)", run_stats.frames_processed,
                    "signal" if signalled.is_set() else (run_stats.error or "end of source"))
        if code != 0:
            failure = run_stats.error or f"exit status {code}"
    except Exception as e:
        failure = f"{type(e).__name__}: {e}"
        raise
    finally:
        notifier.stopping("stopping: flushing queues")
        for sink in sinks:
            try:
                sink.close()
            except SinkError as e:
                logger.error("closing a sink failed: %s", e)
        if source is not None:
            source.close()
        if publisher is not None:
            publisher.close(config.service.shutdown_timeout_s, failure=failure)
        elif events is not None:
            events.close()
        notifier.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return code
