"""The live fuse service (``edge-pose fuse --config fuse.toml``): pose topics in, fused 3D out.

One worker fuses one scene (see :mod:`edge.fuse.config`). Pieces, in the order a payload meets them:

* **MQTT ingest** (:class:`FuseMqtt`): a paho-mqtt 2.x client subscribed to
  ``<topic_root>/+/pose``, its network loop on our own thread with the device's jittered
  backoff (:func:`edge.comms.mqtt.backoff_s`), so a broker that goes away is retried for ever
  and logged once per change of state. The message callback only appends ``(topic, payload,
  arrival)`` to a bounded deque (the oldest is dropped and counted when the fusion thread falls
  behind) and wakes the fusion thread.
* **The core** (:class:`FuseCore`, no I/O, time passed in): checks each payload (size, JSON,
  :func:`edge.fuse.views.parse_annotation`, the topic's device id against the payload's), drops
  what does not belong (an unknown device: warned once; a device whose image size does not
  match its camera's calibration: an error, nothing of it is fused until its size matches), pushes
  the rest to the :class:`~edge.fuse.sync.Synchroniser` and fuses each group it emits with the
  :class:`~edge.fuse.fuser.Fuser`. It keeps the stats: per device last seen, fps, skew, clock state
  against the other devices, time without people; devices missing; malformed payloads; the
  latency the service adds (p50/p99 from a group's first frame arriving to its fused frame
  being ready, sync wait included) and the fusion time alone.
* **Outputs**: ``<fused_root>/<scene>/pose3d`` (QoS ``mqtt.output_qos``), the JSONL file
  (:class:`JsonlAppender`), ``<fused_root>/<scene>/stats`` every ``mqtt.stats_interval_s``
  (schema ``edge/fuse/stats.schema.json``),
  ``<fused_root>/<scene>/availability`` retained (``online``; ``stopped`` or ``failed`` at the
  end; ``offline`` as the last will).
* **systemd**: ``READY=1`` once the config and calibration are loaded and the client started
  (a broker not yet up is a reported state, not a failure), ``WATCHDOG=1`` from the fusion
  loop, ``STATUS=`` with devices seen and missing; SIGTERM/SIGINT stop it cleanly (the groups
  still waiting are fused, the last stats and ``stopped`` are published).

Exit status: 0 after a clean stop, 1 on a run-time failure (systemd restarts it), 2 for a bad
config or calibration (``RestartPreventExitStatus=2``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.comms.mqtt import Link, loop_once, make_client
from edge.config import ConfigError, Secrets
from edge.fuse.calib import Calibration
from edge.fuse.config import FuseConfig, load_fuse_config, load_fuse_secrets
from edge.fuse.fuser import Fuser
from edge.fuse.sync import Synchroniser
from edge.fuse.views import PayloadError, ViewFrame, parse_annotation
from edge.sdnotify import Notifier

logger = logging.getLogger(__name__)

STATS_SCHEMA_VERSION = 1
#: A view without anybody for this long (s) is warned about (an occluded or turned camera).
NO_PEOPLE_WARN_S = 30.0
#: Samples kept for the latency percentiles (the newest ones).
LATENCY_SAMPLES = 2048
#: Malformed payloads logged one by one before the log is thinned to every 100th.
MALFORMED_LOGGED = 10


def _pct(values: deque[float], q: float) -> float | None:
    return round(float(np.percentile(np.fromiter(values, float), q)), 3) if values else None


@dataclass
class DeviceState:
    """What the core knows of one configured device (times on the service clock, s)."""

    camera: str
    frames: int = 0
    fused_in: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    last_people: float | None = None
    size: tuple[int, int] | None = None
    size_problems: list[str] = field(default_factory=list)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    rejected: int = 0
    no_people_warned: bool = False
    missing_logged: bool = False


@dataclass
class Output:
    """One fused frame ready to go out: its JSON and when its first view arrived (s)."""

    payload: dict[str, Any]
    first_arrival: float


class FuseCore:
    """Payloads in, fused frames out, for one scene; no I/O, the clock is passed in.

    Args:
        config: The validated fuse config.
        calib: Its calibration.
    """

    def __init__(self, config: FuseConfig, calib: Calibration) -> None:
        self.config = config
        self.calib = calib
        self.scene = config.scene.name
        self.devices = {d: DeviceState(cam) for d, cam in config.scene.devices.items()}
        fs = config.fuse
        self.sync = Synchroniser(list(config.scene.devices), config.tolerance_s, fs.max_wait_s,
                                 inactive_after_s=config.sync.device_timeout_s,
                                 max_clock_offset_s=fs.max_clock_offset_s,
                                 offsets_s=config.scene.offsets_s)
        self.fuser = Fuser(calib, dict(config.scene.devices), config.fuse)
        self.prefix = config.mqtt.topic_root + "/"
        self.malformed = 0
        self.unknown: dict[str, int] = {}
        self.groups = 0
        self.fused = 0
        self.fuse_errors = 0
        self.persons_last = 0
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.fuse_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.ingest_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.wait_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._arrivals: dict[tuple[str, int], float] = {}
        self._fused_times: deque[float] = deque(maxlen=256)
        self.started: float | None = None

    # ------------------------------------------------------------------------------ input

    def _bad(self, topic: str, why: str) -> None:
        self.malformed += 1
        if self.malformed <= MALFORMED_LOGGED or self.malformed % 100 == 0:
            logger.warning("malformed pose payload on %s (%d so far): %s", topic[:200],
                           self.malformed, why)

    def handle(self, topic: str, payload: bytes, now: float) -> list[Output]:
        """Takes one pose payload received at ``now`` (s, the service clock).

        Returns:
            The fused frames that became ready (none, usually one).
        """
        if self.started is None:
            self.started = now
        if not (topic.startswith(self.prefix) and topic.endswith("/pose")):
            self._bad(topic, "not a pose topic under mqtt.topic_root")
            return []
        topic_device = topic[len(self.prefix):-len("/pose")]
        try:
            frame = parse_annotation(payload)
        except RecursionError:
            self._bad(topic, "JSON nested too deeply")
            return []
        except PayloadError as e:
            self._bad(topic, str(e))
            return []
        if frame.device != topic_device:
            self._bad(topic, f"device_id {frame.device!r} published on {topic_device!r}'s topic")
            return []
        state = self.devices.get(frame.device)
        if state is None:
            n = self.unknown.get(frame.device, 0)
            self.unknown[frame.device] = n + 1
            if n == 0:
                logger.warning("device %r is not in scene %r (scene.devices has %s): its frames "
                               "are ignored", frame.device, self.scene,
                               ", ".join(sorted(self.devices)))
            return []
        return self._accept(state, frame, now)

    def _accept(self, state: DeviceState, frame: ViewFrame, now: float) -> list[Output]:
        state.frames += 1
        if state.first_seen is None:
            state.first_seen = now
            logger.info("device %s (camera %s) seen", frame.device, state.camera)
        state.last_seen = now
        state.arrivals.append(now)
        state.missing_logged = False
        size = (int(frame.size[0]), int(frame.size[1]))
        if size != state.size:
            state.size = size
            state.size_problems = list(self.calib.check_sizes({state.camera: size}))
            if state.size_problems:
                logger.error("device %s announces %dx%d images, which do not match camera %s "
                             "of %s: %s; nothing from it is fused until they match (fix the "
                             "calibration or the device's capture size)", frame.device, *size,
                             state.camera, self.config.scene.calibration,
                             "; ".join(state.size_problems))
            elif state.frames > 1:
                logger.info("device %s: image size %dx%d matches camera %s again",
                            frame.device, *size, state.camera)
        if state.size_problems:
            state.rejected += 1
            return []
        if len(frame.persons) > 0 or state.last_people is None:
            state.last_people = now
        self._arrivals[(frame.device, int(frame.frame_id))] = now
        return self._fuse_all(self.sync.push(frame, now), now)

    # ------------------------------------------------------------------------------ fusion

    def _fuse_all(self, groups: list[Any], now: float) -> list[Output]:
        out = []
        for group in groups:
            self.groups += 1
            views = group_views(group)
            arrivals = [self._arrivals.pop((f.device, int(f.frame_id)), now) for f in views]
            if arrivals:  # from its first view's arrival to the group leaving the synchroniser
                self.wait_ms.append((now - min(arrivals)) * 1000.0)
            t0 = time.perf_counter()
            try:
                fused = self.fuser.fuse(group)
            except Exception:  # one bad group must not stop the service
                self.fuse_errors += 1
                logger.exception("fusing a group of %d views failed", len(views))
                continue
            self.fuse_ms.append((time.perf_counter() - t0) * 1000.0)
            payload = fused.to_json()
            self.fused += 1
            self.persons_last = len(payload.get("persons", ()))
            self._fused_times.append(now)
            for f in views:
                st = self.devices.get(f.device)
                if st is not None:
                    st.fused_in += 1
            out.append(Output(payload, min(arrivals) if arrivals else now))
        if len(self._arrivals) > 4096:  # frames the synchroniser dropped: forget the oldest
            for key in list(self._arrivals)[:2048]:
                del self._arrivals[key]
        return out

    def tick(self, now: float) -> list[Output]:
        """Emits the groups whose wait is over and updates the missing/no-people warnings."""
        outputs = self._fuse_all(self.sync.poll(now), now)
        timeout = self.config.sync.device_timeout_s
        for dev, st in self.devices.items():
            if st.last_seen is not None and now - st.last_seen > timeout and not st.missing_logged:
                st.missing_logged = True
                logger.warning("device %s: no frame for %.1f s; fusing the other devices",
                               dev, now - st.last_seen)
            if (st.last_people is not None and st.last_seen is not None
                    and now - st.last_people >= NO_PEOPLE_WARN_S and not st.no_people_warned
                    and not st.missing_logged):
                st.no_people_warned = True
                logger.warning("device %s (camera %s) has seen nobody for %.0f s: is it "
                               "occluded or turned away?", dev, st.camera, now - st.last_people)
            elif st.no_people_warned and st.last_people is not None \
                    and now - st.last_people < NO_PEOPLE_WARN_S:
                st.no_people_warned = False
        return outputs

    def flush(self, now: float) -> list[Output]:
        """Fuses every group still waiting (at a stop)."""
        return self._fuse_all(self.sync.flush(), now)

    def note_latency(self, output: Output, done: float) -> None:
        """Records the latency of ``output``, ready (or published) at ``done`` (s)."""
        self.latency_ms.append((done - output.first_arrival) * 1000.0)

    # ------------------------------------------------------------------------------ stats

    def missing(self, now: float) -> list[str]:
        """Devices never seen or silent for over ``sync.device_timeout_s`` (sorted)."""
        timeout = self.config.sync.device_timeout_s
        return sorted(d for d, s in self.devices.items()
                      if s.last_seen is None or now - s.last_seen > timeout)

    def stats(self, now: float) -> dict[str, Any]:
        """The ``stats`` payload (``now`` on the service clock, s)."""
        up = 0.0 if self.started is None else now - self.started
        others: dict[str, Any] = {}
        sync = self.sync.stats()
        missing = self.missing(now)
        for dev, s in self.devices.items():
            sd = sync["devices"][dev]
            seen = s.last_seen is not None
            state = ("never_seen" if not seen else "size_mismatch" if s.size_problems
                     else "missing" if dev in missing
                     else "clock_off" if sd["clock_out_of_step"] else "ok")
            others[dev] = {
                "camera": s.camera, "state": state, "frames": s.frames, "fused_in": s.fused_in,
                "rejected": s.rejected,
                "fps": _rate(s.arrivals, now),
                "last_seen_s": None if s.last_seen is None else round(now - s.last_seen, 3),
                "no_people_s": None if s.last_people is None
                else round(now - s.last_people, 3),
                "skew_ms": {k: None if v is None else round(1000 * v, 3)
                            for k, v in sd["skew_s"].items()},
                "late": sd["late"], "clock_rejected": sd["clock_rejected"],
                "image": None if s.size is None else {"width": s.size[0], "height": s.size[1]},
                "problems": s.size_problems,
            }
        fps = _rate(self._fused_times, now)
        return {
            "v": STATS_SCHEMA_VERSION, "scene": self.scene, "ts": round(time.time(), 3),
            "uptime_s": round(up, 3), "version": __version__,
            "devices": others, "missing": missing,
            "unknown_devices": dict(sorted(self.unknown.items())),
            "malformed": self.malformed, "groups": self.groups, "fused": self.fused,
            "fuse_errors": self.fuse_errors, "fused_fps": fps,
            "persons": self.persons_last,
            "latency_ms": {"p50": _pct(self.latency_ms, 50), "p99": _pct(self.latency_ms, 99),
                           "n": len(self.latency_ms)},
            "fuse_ms": {"p50": _pct(self.fuse_ms, 50), "p99": _pct(self.fuse_ms, 99)},
            "ingest_wait_ms": {"p50": _pct(self.ingest_ms, 50),
                               "p99": _pct(self.ingest_ms, 99)},
            "sync_wait_ms": {"p50": _pct(self.wait_ms, 50), "p99": _pct(self.wait_ms, 99)},
            "sync": {"groups": sync["groups"], "group_sizes": sync["group_sizes"]},
            "fuser": _jsonable(self.fuser.stats()),
        }


def _rate(times: deque[float], now: float, window_s: float = 5.0) -> float | None:
    """Events per second over the last ``window_s`` (None: fewer than two events in it)."""
    recent = [t for t in times if now - t <= window_s]
    if len(recent) < 2 or recent[-1] <= recent[0]:
        return None
    return round((len(recent) - 1) / (recent[-1] - recent[0]), 2)


def group_views(group: Any) -> list[ViewFrame]:
    """The view frames of a synchroniser group."""
    frames = group.frames
    return list(frames.values()) if isinstance(frames, Mapping) else list(frames)


def _jsonable(x: Any) -> Any:
    """``x`` as plain JSON values (dataclasses, numpy scalars and arrays included)."""
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


class JsonlAppender:
    """Appends one JSON document per line to a file, safe against a crash mid-line.

    Each line goes out in one ``write`` on an ``O_APPEND`` descriptor, so lines never interleave
    and a crash can only leave the *last* line torn; at the next open a torn tail (no final
    newline) is cut off and logged, so every line of the file is whole JSON. Written by hand:
    the run's :class:`edge.sinks.files.JsonlSink` takes frames and annotations, not fused
    frames, and neither repairs a torn tail.

    Args:
        path: The file (created with its folder if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o644)
        self.lines = 0

    def _repair(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            back = min(size, 1 << 20)
            f.seek(size - back)
            tail = f.read(back)
            cut = tail.rfind(b"\n")
            keep = size - back + cut + 1 if cut >= 0 else (0 if back == size else size)
            f.truncate(keep)
        logger.warning("%s: cut a torn last line (%d bytes) left by an earlier crash",
                       self.path, size - keep)

    def write(self, payload: dict[str, Any]) -> None:
        """Appends ``payload`` as one line."""
        data = (json.dumps(payload, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # a regular file takes it whole; loop for the pathological partial write
            n = os.write(self._fd, view)
            view = view[n:]
        self.lines += 1

    def close(self) -> None:
        """Syncs and closes the file; safe to call twice."""
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1


@dataclass
class MqttCounters:
    """What the client did (in ``stats``)."""

    connects: int = 0
    disconnects: int = 0
    received: int = 0
    ingest_dropped: int = 0
    published: int = 0
    publish_dropped: int = 0


def _no_delay(client: mqtt.Client) -> None:
    """Turns Nagle's algorithm off on the client's socket (paho leaves it on).

    With it on, a small write waits for the ACK of the previous one, which the broker's kernel
    may delay by up to 40 ms: fused frames would leave in bursts. (The broker's side is its own
    setting: Mosquitto's ``set_tcp_nodelay true``, see deploy/fuse.example.toml.)
    """
    sock = client.socket()
    if not isinstance(sock, socket.socket) or sock.family not in (socket.AF_INET,
                                                                  socket.AF_INET6):
        return  # not connected, or not TCP
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:  # closed meanwhile
        logger.debug("TCP_NODELAY not set: %s", e)


class FuseMqtt:
    """The fuse service's MQTT client: subscribes to the pose topics, publishes the outputs.

    Args:
        config: The validated fuse config.
        secrets: The broker password, if any.
        on_message: Called on the network thread with ``(topic, payload)``; must be quick.
    """

    def __init__(self, config: FuseConfig, secrets: Secrets,
                 on_message: Callable[[str, bytes], None]) -> None:
        mc = config.mqtt
        self.config = mc
        self.root = f"{mc.fused_root}/{config.scene.name}"
        self.input = f"{mc.topic_root}/+/pose"
        self.counters = MqttCounters()
        self._deliver = on_message
        self.client = make_client(mc, mc.client_id or f"edgepose-fuse-{config.scene.name}",
                                  self.topic("availability"), secrets)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._connected = False
        self._stop = threading.Event()
        self._closing = threading.Event()  # no reconnect once the clean DISCONNECT is asked
        self._net = threading.Thread(target=self._net_loop, name="fuse-mqtt", daemon=True)
        self._link = Link(mc.host, mc.port, mc.reconnect_min_s, mc.reconnect_max_s,
                          client_id=mc.client_id or f"edgepose-fuse-{config.scene.name}")
        self._reason = ""

    def topic(self, name: str) -> str:
        """``<fused_root>/<scene>/<name>``."""
        return f"{self.root}/{name}"

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self._connected

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        mc = self.config
        if reason_code.is_failure:
            self._reason = self._link.refused(reason_code)
            return
        logger.info("MQTT connected to %s:%d; fusing %s", mc.host, mc.port, self.input)
        _no_delay(client)
        self._link.up()
        self.counters.connects += 1
        client.subscribe(self.input, qos=mc.input_qos)
        client.publish(self.topic("availability"), "online", qos=1, retain=True)
        self._connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        if self._connected and not self._closing.is_set():
            self.counters.disconnects += 1
        self._reason = str(reason_code)
        self._connected = False

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.counters.received += 1
        self._deliver(msg.topic, bytes(msg.payload))

    def _net_loop(self) -> None:
        """Connects, runs paho's loop, reconnects with jittered backoff until stopped.

        As :class:`edge.comms.mqtt.MqttPublisher` does, for the same reasons.
        """
        client = self.client
        while not self._stop.is_set():
            if client.socket() is None:
                if self._closing.is_set():
                    break
                if not self._link.reconnect(client, self._stop):
                    continue
                self._reason = ""
            rc = loop_once(client)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                continue
            self._connected = False
            if self._stop.is_set() or self._closing.is_set():
                break
            self._link.down(self._reason or mqtt.error_string(rc))
            self._link.wait(self._stop)

    def start(self) -> None:
        """Starts connecting in the background (no broker yet is fine)."""
        mc = self.config
        self.client.connect_async(mc.host, mc.port, keepalive=mc.keepalive_s, clean_start=True)
        self._net.start()

    def publish(self, name: str, payload: str, *, qos: int = 0, retain: bool = False) -> bool:
        """Publishes on ``<root>/<name>`` when connected; counts what could not go out."""
        if not self._connected:
            self.counters.publish_dropped += 1
            return False
        info = self.client.publish(self.topic(name), payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and qos == 0:
            self.counters.publish_dropped += 1
            return False
        self.counters.published += 1
        return True

    def close(self, state: str, timeout_s: float) -> None:
        """Publishes ``state`` on ``availability`` (when connected), disconnects, stops."""
        self._closing.set()
        if self._connected:
            info = self.client.publish(self.topic("availability"), state, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.5, timeout_s))
            except (RuntimeError, ValueError) as e:
                logger.warning("could not publish %r: %s", state, e)
            self.client.disconnect()
            end = time.monotonic() + 2.0
            while self.client.socket() is not None and time.monotonic() < end:
                time.sleep(0.02)
        else:
            logger.warning("MQTT broker away at exit: availability stays as the last will "
                           "says (offline)")
        self._stop.set()
        if self._net.is_alive():
            self._net.join(10.0)


class FuseService:
    """The live service: :class:`FuseMqtt` in, :class:`FuseCore` in the middle, outputs out.

    Args:
        config: The validated fuse config.
        calib: Its calibration.
        secrets: The broker password, if any.
        notifier: systemd notification (a no-op outside systemd).
        clock: The service clock, s (monotonic).
    """

    def __init__(self, config: FuseConfig, calib: Calibration, secrets: Secrets,
                 notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.core = FuseCore(config, calib)
        self.clock = clock
        self.notifier = notifier if notifier is not None else Notifier({})
        self._queue: deque[tuple[str, bytes, float]] = deque()
        self._max = config.ingest.queue
        self._wake = threading.Event()
        self.stop_event = threading.Event()
        self.mqtt = FuseMqtt(config, secrets, self._enqueue)
        self.jsonl = (JsonlAppender(config.output.jsonl) if config.output.jsonl is not None
                      else None)
        self._next_stats = 0.0

    def _enqueue(self, topic: str, payload: bytes) -> None:
        # Network thread. deque append/popleft are atomic; the length check races only with
        # the consumer shrinking it, so at worst one more than the bound is kept for a moment.
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.mqtt.counters.ingest_dropped += 1
        self._queue.append((topic, payload, self.clock()))
        self._wake.set()

    def _emit(self, outputs: list[Any]) -> None:
        qos = self.config.mqtt.output_qos
        for out in outputs:
            self.mqtt.publish("pose3d", json.dumps(out.payload, separators=(",", ":")), qos=qos)
            if self.jsonl is not None:
                self.jsonl.write(out.payload)
            self.core.note_latency(out, self.clock())

    def stats(self) -> dict[str, Any]:
        """The ``stats`` payload: the core's and the client's."""
        st = self.core.stats(self.clock())
        c = self.mqtt.counters
        st["mqtt"] = {"connected": self.mqtt.connected, "connects": c.connects,
                      "disconnects": c.disconnects, "received": c.received,
                      "ingest_dropped": c.ingest_dropped, "published": c.published,
                      "publish_dropped": c.publish_dropped}
        return st

    def _publish_stats(self) -> None:
        st = self.stats()
        self.mqtt.publish("stats", json.dumps(st, separators=(",", ":")))
        seen = sum(1 for d in st["devices"].values() if d["state"] == "ok")
        self.notifier.status(f"scene {self.core.scene}: {seen}/{len(st['devices'])} devices ok"
                             f"{', missing ' + ','.join(st['missing']) if st['missing'] else ''}"
                             f"; {st['fused']} frames fused")

    def step(self) -> None:
        """One turn of the fusion loop: drain the queue, emit ready groups, stats, watchdog."""
        while self._queue:
            topic, payload, arrived = self._queue.popleft()
            self.core.ingest_ms.append((self.clock() - arrived) * 1000.0)
            self._emit(self.core.handle(topic, payload, arrived))
        now = self.clock()
        self._emit(self.core.tick(now))
        if now >= self._next_stats:
            self._next_stats = now + self.config.mqtt.stats_interval_s
            self._publish_stats()
        if self.config.service.watchdog:
            self.notifier.watchdog()

    def run(self) -> int:
        """Runs until :attr:`stop_event` is set; returns the exit status."""
        failure: str | None = None
        self.mqtt.start()
        self.notifier.ready(f"scene {self.core.scene}: listening on {self.mqtt.input}")
        logger.info("fusing scene %s from %s (%d devices) to %s", self.core.scene,
                    self.mqtt.input, len(self.core.devices), self.mqtt.topic("pose3d"))
        try:
            while not self.stop_event.is_set():
                self._wake.wait(0.02)
                self._wake.clear()
                self.step()
        except Exception as e:  # logged with its traceback; systemd restarts the service
            logger.exception("the fusion loop failed")
            failure = f"{type(e).__name__}: {e}"
        self.notifier.stopping("stopping")
        try:
            if failure is None:
                self.step()
                self._emit(self.core.flush(self.clock()))
                self._publish_stats()
        finally:
            if self.jsonl is not None:
                self.jsonl.close()
            self.mqtt.close("stopped" if failure is None else "failed",
                            self.config.service.shutdown_timeout_s)
            self.notifier.close()
        return 0 if failure is None else 1


def _setup_logging(config: FuseConfig, environ: Mapping[str, str]) -> None:
    fmt = ("%(levelname)s %(name)s: %(message)s" if environ.get("JOURNAL_STREAM")
           else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=config.logging.level, format=fmt, force=True)
    logging.getLogger("paho.mqtt").setLevel(max(logging.WARNING,
                                                logging.getLevelName(config.logging.level)))


def run_live(config_path: Path, *, validate: bool = False) -> int:
    """``edge-pose fuse --config FILE [--validate]``.

    Args:
        config_path: The TOML config.
        validate: Only check the config and its calibration (prints ``ok`` and any geometry
            warning).

    Returns:
        The exit status (see the module docstring).

    Raises:
        edge.config.ConfigError: The config or its calibration cannot be used (exit 2).
    """
    if not validate:
        return run_fuse_service(config_path)
    config, calib = load_fuse_config(config_path)
    load_fuse_secrets(config)
    for problem in calib.check_geometry():
        print(f"warning: {problem}")
    print(f"{config_path}: ok (scene {config.scene.name}, {len(config.scene.devices)} devices, "
          f"calibration {config.scene.calibration})")
    return 0


def run_fuse_service(config_path: Path, environ: Mapping[str, str] | None = None) -> int:
    """``edge-pose fuse --config FILE``: the live service until SIGTERM/SIGINT.

    Returns:
        The exit status (see the module docstring).

    Raises:
        edge.config.ConfigError: The config or its calibration cannot be used (exit 2).
    """
    env = os.environ if environ is None else environ
    config, calib = load_fuse_config(config_path)
    secrets = load_fuse_secrets(config, env)
    _setup_logging(config, env)
    for problem in calib.check_geometry():
        logger.warning("%s", problem)
    try:
        service = FuseService(config, calib, secrets, Notifier(env))
    except OSError as e:  # the JSONL file: a folder that cannot be made, no permission
        raise ConfigError(str(config_path), [("output.jsonl", f"{config.output.jsonl}: "
                                              f"cannot be opened for appending: {e}")]
                          ) from None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        service.stop_event.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return service.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
