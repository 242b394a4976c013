"""``python -m edge.transports.http_demo``: today's building blocks behind the HTTP transport.

A stand-in for ``edge-pose serve`` until the Runtime exists: it wires
:func:`edge.pipeline.build_pipeline`, the daemon's :class:`~edge.service.ControlledCore` and
:class:`~edge.service.DetectorGate` (so commands act), :func:`edge.scheduler.run_realtime` and
one :class:`~edge.transports.http.HttpTransport` as the only sink. The Runtime will replace
this wiring; the transport does not change.

Order: the server starts first (a bad bind fails at once, exit 2, and ``/healthz`` answers while
the models load), then the models load, then the source opens; ``/readyz`` turns 200 with the
first processed frame. SIGINT/SIGTERM stop it (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.comms.commands import Controls
from edge.comms.events import EventQueue
from edge.config import Config, ConfigError, load_config
from edge.pipeline import StepResult, build_pipeline
from edge.runtime import ModelError
from edge.scheduler import RunStats, run_realtime
from edge.service import ControlledCore, DetectorGate, StatsReporter
from edge.sources import SourceError, open_source
from edge.transports.http import HttpTransport, PoseImage
from edge.transports.http_config import HttpConfig, load_http_token
from edge.types import Frame

logger = logging.getLogger(__name__)

_MQTT_KEYS = ("connects", "disconnects", "pose_published", "pose_dropped", "events_published",
              "events_queued", "events_dropped", "commands_accepted", "commands_rejected")


def still_image_pose(config: Config) -> PoseImage:
    """``POST /v1/pose`` for now: a fresh pipeline per image, detector run on it, one step.

    New tracks are shown at once (``confirm_ticks = 0``) and nothing is smoothed, since there
    is no second frame. The still-image mode of the issue "See everyone the camera sees" will
    replace this.

    Args:
        config: The validated config (models, detector, annotation).

    Returns:
        A function: encoded JPEG/PNG bytes -> annotation payload; it raises ValueError when
        OpenCV cannot decode the bytes.
    """
    data = config.model_dump()
    data["tracking"]["confirm_ticks"] = 0
    data["smoothing"]["enabled"] = False
    still = Config.model_validate(data)

    def pose(body: bytes) -> dict[str, Any]:
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("OpenCV cannot decode it (truncated or damaged)")
        pipeline = build_pipeline(still, timings=True)
        frame = Frame(np.ascontiguousarray(image, np.uint8), 0, time.monotonic_ns(), time.time())
        result = pipeline.core.step(frame, pipeline.detect(frame))
        return result.annotation.payload

    return pose


def serve_demo(config: Config, http: HttpConfig, *, environ: Mapping[str, str] | None = None,
               stop: threading.Event | None = None,
               on_started: Callable[[HttpTransport], None] | None = None) -> RunStats:
    """Serves the HTTP transport on the realtime loop over ``config.source`` until ``stop``.

    Args:
        config: The validated config (source, models, scheduler, tracking...).
        http: The ``[http]`` section.
        environ: Where the token is read (``os.environ`` when None).
        stop: Set to end the run.
        on_started: Called with the transport once it listens.

    Returns:
        The run's stats.

    Raises:
        ConfigError: A non-loopback bind without a token, or an address that cannot be bound.
        edge.runtime.ModelError: A model is missing or damaged.
        edge.sources.SourceError: The source cannot be opened.
    """
    stop = stop if stop is not None else threading.Event()
    sc = config.scheduler
    dev = config.annotation.device_id
    controls = Controls(enabled=True, max_persons=config.tracking.max_persons,
                        detector_hz=min(sc.detector_hz, sc.rate_hz), detector_hz_max=sc.rate_hz)
    run_stats = RunStats.with_budgets(sc.budget_detector_fps, sc.budget_pose2d_fps,
                                      sc.budget_pose3d_fps)
    state: dict[str, Any] = {"phase": "loading models", "last": None}
    reporter: list[StatsReporter] = []

    def snapshot() -> dict[str, Any]:
        if not reporter:
            raise RuntimeError("no stats before the models are loaded")
        s = reporter[0]()
        s["mqtt"] = {k: s["mqtt"].get(k, 0) for k in _MQTT_KEYS}  # no MQTT in this demo
        return s

    def command(name: str, payload: bytes) -> dict[str, Any]:
        return {"name": name, "value": controls.apply(name, payload)}

    def ready() -> tuple[bool, str]:
        last = state["last"]
        if last is None:
            return False, str(state["phase"])
        age = time.monotonic() - last
        if age > http.ready_max_frame_age_s:
            return False, f"newest frame is {age:.1f} s old"
        return True, f"running, newest frame {age:.2f} s old"

    transport = HttpTransport(
        http, stats_snapshot=snapshot, command=command, pose_image=still_image_pose(config),
        ready=ready, token=load_http_token(http, environ), device_id=dev,
        budgets={"detect": sc.budget_detector_fps, "pose2d": sc.budget_pose2d_fps,
                 "pose3d": sc.budget_pose3d_fps})
    transport.start()
    source = None
    ticker: threading.Thread | None = None
    try:
        if on_started is not None:
            on_started(transport)
        pipeline = build_pipeline(config)
        events = EventQueue(None, 10_000)

        def forward_events() -> None:
            batch = events.after(0, 1000)
            for ev in batch:
                events.ack(int(ev["seq"]))
            transport.events(batch)

        core = ControlledCore(pipeline.core, controls, events, dev, on_events=forward_events)
        reporter.append(StatsReporter(config, run_stats, core, controls))
        state["phase"] = "opening the source"
        src = config.source
        source = open_source(src.uri, width=src.width, height=src.height, fps=src.fps,
                             loop=src.loop, reconnect_initial_s=src.reconnect_initial_s,
                             reconnect_max_s=src.reconnect_max_s)
        reporter[0].source_dropped = lambda: source.dropped if source is not None else 0
        gate = DetectorGate(pipeline, controls, stop)

        def on_step(frame: Frame, result: StepResult) -> None:
            gate.newest = frame
            state["last"] = time.monotonic()

        def tick_stats() -> None:
            while not stop.wait(2.0):
                transport.stats(snapshot())

        ticker = threading.Thread(target=tick_stats, name="stats", daemon=True)
        ticker.start()
        state["phase"] = "running"
        run_realtime(source, core, gate, [transport], run_stats, rate_hz=sc.rate_hz,
                     detector_hz=sc.rate_hz, stop=stop, on_step=on_step)
        return run_stats
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(timeout=5)
        transport.close()
        if source is not None:
            source.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2: config or models, 1: source)."""
    p = argparse.ArgumentParser(prog="python -m edge.transports.http_demo",
                                description="serve the HTTP API and viewer over a source")
    p.add_argument("--config", type=Path, help="TOML config (default: built-in defaults)")
    p.add_argument("--source", help="source URI (default: the config's; `demo`: the clip)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080; 0: any free port)")
    p.add_argument("--no-loop", action="store_true", help="stop at the end of a file")
    p.add_argument("--threads", type=int, help="interpreter threads per model")
    p.add_argument("--http", action="append", default=[], metavar="KEY=VALUE",
                   help="set an [http] key (repeatable), e.g. --http pose_rate_per_s=10")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    try:
        config = load_config(args.config) if args.config else Config()
        data = config.model_dump()
        if args.source:
            data["source"]["uri"] = args.source
        data["source"]["loop"] = not args.no_loop
        if args.threads:
            data["models"]["threads"] = args.threads
        config = Config.model_validate(data)
        http_data: dict[str, Any] = {"enabled": True}
        for item in args.http:
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"--http {item!r}: expected KEY=VALUE")
            http_data[key.strip()] = value.strip()
        if args.host:
            http_data["host"] = args.host
        if args.port is not None:
            http_data["port"] = args.port
        http = HttpConfig.model_validate(http_data)
    except (ConfigError, ValueError) as e:  # pydantic's ValidationError names the key
        print(f"edge-pose: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    try:
        serve_demo(config, http, stop=stop)
    except (ConfigError, ModelError) as e:
        print(f"edge-pose: {e}", file=sys.stderr)
        return 2
    except SourceError as e:
        print(f"edge-pose: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
