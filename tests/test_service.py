"""The daemon end to end: a real Mosquitto on a loopback port, the daemon as a subprocess with the
real models on a clip of the real demo video, a paho subscriber checking what arrives.

Covers: availability / pose / events / stats valid against their schemas and one pose frame per
processed frame; a broker outage mid-run (every event once and in order, pose frames dropped only
as documented); SIGKILL (the last will ``offline``); a daemon started before its broker; events
saved over a restart; malformed, oversized and retained commands; Home Assistant discovery; TLS
with a password (and an anonymous client refused); SIGTERM (``stopped``); READY and WATCHDOG on
a notify socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from conftest import require
from paho.mqtt.enums import CallbackAPIVersion
from testdata import demo_segment

from edge import annotation
from edge.runtime import load_manifest

REPO = Path(__file__).resolve().parent.parent
EDGE = REPO / "edge"
DEMO = EDGE / "assets" / "sports2d_demo.mp4"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

@pytest.fixture(autouse=True)
def _mosquitto_installed() -> None:
    """Every test here needs a real Mosquitto: it fails without one."""
    require(MOSQUITTO, "apt-get install mosquitto")


# ------------------------------------------------------------------------------------ helpers

def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EDGE / name).read_text(encoding="utf-8"))
    return loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Broker:
    """A Mosquitto started by the test with its own config, on 127.0.0.1 only."""

    def __init__(self, folder: Path, port: int, extra: str = "",
                 anonymous: bool = True, persistent: bool = False) -> None:
        self.folder, self.port = folder, port
        self.conf = folder / f"mosquitto-{port}.conf"
        self.log = folder / f"mosquitto-{port}.log"
        # persistent: sessions (and messages queued for them) survive a restart of the broker.
        persistence = (f"persistence true\npersistence_location {folder}/" if persistent
                       else "persistence false")
        lines = [f"listener {port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}",
                 persistence, "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice", extra]
        if os.geteuid() == 0:  # else it drops to user mosquitto, who cannot read tmp_path
            lines.insert(0, "user root")
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)

        def accepting() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(accepting, 10, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    t: float

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A paho client recording every message under the given topics."""

    port: int
    topics: tuple[str, ...] = ("edgepose/#", "homeassistant/#")
    tls: dict[str, Any] | None = None
    auth: tuple[str, str] | None = None
    persistent_session: bool = False
    msgs: list[Msg] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.refused: list[str] = []
        # A persistent session (clean_session False, QoS 1 subscriptions) is how a consumer
        # that must not miss events subscribes: the broker queues them while it is away.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-sub-{os.getpid()}-{id(self)}",
                                  clean_session=not self.persistent_session)
        if self.tls:
            self.client.tls_set(**self.tls)
        if self.auth:
            self.client.username_pw_set(*self.auth)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        if rc.is_failure:
            self.refused.append(str(rc))
            return
        client.subscribe([(t, 1) for t in self.topics])
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.msgs.append(Msg(msg.topic, bytes(msg.payload), bool(msg.retain),
                                 time.monotonic()))

    def start(self, wait: bool = True) -> Subscriber:
        self.client.connect_async("127.0.0.1", self.port)
        self.client.loop_start()
        if wait:
            assert self.connected.wait(10), "test subscriber could not connect"
            time.sleep(0.2)  # subscription acknowledged
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, suffix: str) -> list[Msg]:
        with self.lock:
            return [m for m in self.msgs if m.topic.endswith("/" + suffix)
                    or m.topic == suffix]

    def on_prefix(self, prefix: str) -> list[Msg]:
        with self.lock:
            return [m for m in self.msgs if m.topic.startswith(prefix)]

    def payloads(self, suffix: str) -> list[str]:
        return [m.payload.decode() for m in self.on(suffix)]

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


class NotifySocket:
    """A listening sd_notify socket (``$NOTIFY_SOCKET``) that keeps every message it gets.

    Args:
        path: Where to bind the datagram socket.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        while not self._done.is_set():
            try:
                self.notes.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        """Stops listening."""
        self._done.set()
        self._sock.close()


@cache
def model_settings() -> tuple[dict[str, str], dict[str, Any]]:
    """Environment and ``[models]`` for the daemon: the shipped models, or (while they are
    being built) the original float models in ``cache/orig``; the fastest landmark model."""
    env: dict[str, str] = {}
    if "EDGE_POSE_MODELS" in os.environ:
        folder = Path(os.environ["EDGE_POSE_MODELS"])
    elif (REPO / "models" / "manifest.json").is_file():
        folder = REPO / "models"
    else:
        folder = REPO / "cache" / "orig"
        env["EDGE_POSE_MODELS"] = str(folder)
    manifest = load_manifest(folder)
    landmarks = [e for e in manifest.models.values() if e.role == "landmark"]
    precision = "int8" if any(e.precision == "int8" for e in landmarks) else "float"
    variants = {e.variant for e in landmarks if e.precision == precision}
    landmark = next(v for v in ("lite", "full", "heavy") if v in variants)
    return env, {"precision": precision, "landmark": landmark, "threads": 1}


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames 100-189 of the demo video at half size (3 s; the woman walks in at ~120)."""
    return demo_segment(tmp_path_factory.mktemp("clip") / "clip.mp4", 100, 190, half=True)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def journal_events(state: Path) -> list[dict[str, Any]]:
    """The events in a daemon's journal right now, not yet acknowledged by the broker
    (committed = journalled; read-only; [] while it is being created)."""
    path = state / "events.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM events")]
    except sqlite3.Error:  # created, no table yet
        return []
    finally:
        db.close()


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for sub, sv in tables.items():
            lines.append(f"[{name}.{sub}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in sv.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Daemon:
    """``edge-pose daemon`` as a subprocess.

    ``[http]`` is on, on a free loopback port (``http_port``), unless a test passes
    ``http={"enabled": False}``: every MQTT test then also runs the HTTP transport beside it
    (issue #10: the daemon with ``[http]`` on passes every MQTT test), and the TLS test covers
    the daemon with HTTP off.
    """

    def __init__(self, folder: Path, port: int, clip: Path, *, device: str,
                 loop: bool = False, env: dict[str, str] | None = None,
                 **sections: dict[str, Any]) -> None:
        model_env, models = model_settings()
        self.state = folder / f"state-{device}"
        cfg: dict[str, dict[str, Any]] = {
            "source": {"uri": str(clip), "loop": loop},
            "models": dict(models),
            "scheduler": {"rate_hz": 10.0, "detector_hz": 5.0},
            "annotation": {"device_id": device},
            "mqtt": {"host": "127.0.0.1", "port": port, "stats_interval_s": 1.0,
                     "reconnect_min_s": 1, "reconnect_max_s": 1},
            "service": {"state_dir": str(self.state), "shutdown_timeout_s": 5.0},
            "logging": {"level": "INFO"},
            "http": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        }
        for k, v in sections.items():
            cfg.setdefault(k, {}).update(v)
        self.http_port: int | None = cfg["http"]["port"] if cfg["http"]["enabled"] else None
        self.config = write_config(folder / f"config-{device}.toml", cfg)
        self.log = folder / f"daemon-{device}.log"
        inherited = {k: v for k, v in os.environ.items() if k not in (
            "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY",
            "STATE_DIRECTORY", "EDGE_POSE_MQTT_PASSWORD")}
        self.env = {**inherited, **model_env, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "daemon", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"daemon did not exit; log:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def http_get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` from the daemon's HTTP transport: (status, body)."""
        import http.client

        assert self.http_port is not None, "this daemon runs with [http] off"
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            conn.request("GET", path)
            res = conn.getresponse()
            return res.status, res.read()
        finally:
            conn.close()

    def journal(self) -> list[dict[str, Any]]:
        """The journal (``events.db``) as records: its numbering, then each pending event."""
        db = sqlite3.connect(self.state / "events.db", timeout=5)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            rows = [json.loads(b) for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]
        finally:
            db.close()
        return [{"meta": {"stream": meta["stream"], "next_seq": int(meta["next_seq"])}},
                *({"event": e} for e in rows)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path, free_port())
    b.start()
    yield b
    b.stop()


def first_occurrences(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events de-duplicated by (stream, seq) the way a subscriber would, in arrival order."""
    seen: set[tuple[str, int]] = set()
    out = []
    for ev in events:
        key = (ev["stream"], ev["seq"])
        if key not in seen:
            seen.add(key)
            out.append(ev)
    return out


def validate_all(sub: Subscriber) -> None:
    ev_schema, st_schema = _schema("events_schema.json"), _schema("stats_schema.json")
    for m in sub.on("events"):
        jsonschema.validate(m.json(), ev_schema)
    for m in sub.on("stats"):
        jsonschema.validate(m.json(), st_schema)
    for m in sub.on("pose"):
        jsonschema.validate(m.json(), annotation.schema())


# --------------------------------------------------------------- one run of a clip, checked


@dataclass
class ClipRun:
    sub: Subscriber
    code: int
    notify: list[str]
    log: str


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Iterator[ClipRun]:
    """The daemon on the clip to its end, with a subscriber and a notify socket."""
    folder = tmp_path_factory.mktemp("cliprun")
    b = Broker(folder, free_port())
    b.start()
    notify = NotifySocket(folder / "notify.sock")
    sub = Subscriber(b.port).start()
    d = Daemon(folder, b.port, clip, device="clip",
               env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"},
               scheduler={"rate_hz": 8.0})
    try:
        d.start()
        code = d.wait(90)
        wait_until(lambda: "stopped" in sub.payloads("availability"), 10, "stopped")
        time.sleep(0.3)
        yield ClipRun(sub, code, notify.notes, d.output())
    finally:
        notify.close()
        d.kill()
        sub.stop()
        b.stop()


def test_clip_run_ends_cleanly_with_online_then_stopped(clip_run: ClipRun) -> None:
    assert clip_run.code == 0, clip_run.log
    assert "HTTP API and viewer on http://127.0.0.1:" in clip_run.log  # [http] on beside MQTT
    avail = clip_run.sub.payloads("availability")
    assert avail[0] == "online" and avail[-1] == "stopped", avail
    assert all(m.retain is False for m in clip_run.sub.on("availability"))  # live deliveries


def test_every_payload_is_valid_against_its_schema(clip_run: ClipRun) -> None:
    sub = clip_run.sub
    assert sub.on("pose") and sub.on("events") and sub.on("stats")
    validate_all(sub)


def test_one_pose_frame_per_processed_frame(clip_run: ClipRun) -> None:
    final = clip_run.sub.on("stats")[-1].json()
    poses = [m.json() for m in clip_run.sub.on("pose")]
    assert final["frames"]["processed"] == len(poses) == final["mqtt"]["pose_published"]
    assert final["mqtt"]["pose_dropped"] == 0
    ids = [p["frame_id"] for p in poses]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert max(p["persons"].__len__() for p in poses) >= 1


def test_events_announce_exactly_the_published_tracks(clip_run: ClipRun) -> None:
    events = [m.json() for m in clip_run.sub.on("events")]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    shown: set[int] = set()
    for e in events:
        if e["kind"] in ("entered", "reassigned"):
            assert e["track_id"] not in shown
            shown.add(e["track_id"])
        else:
            assert e["track_id"] in shown
            shown.discard(e["track_id"])
    announced = {e["track_id"] for e in events if e["kind"] in ("entered", "reassigned")}
    published = {p["id"] for m in clip_run.sub.on("pose") for p in m.json()["persons"]}
    assert published <= announced


def test_stats_report_stages_people_and_system(clip_run: ClipRun) -> None:
    stats = [m.json() for m in clip_run.sub.on("stats")]
    assert len(stats) >= 2
    final = stats[-1]
    assert final["stages"]["pose2d"]["runs"] == final["frames"]["processed"]
    assert final["stages"]["detect"]["runs"] >= 1
    assert final["mqtt"]["events_queued"] == 0
    assert final["mqtt"]["events_published"] == len(clip_run.sub.on("events"))
    assert final["system"]["rss_bytes"] > 50e6
    assert any(s["people"] >= 1 for s in stats)


def test_notify_socket_gets_ready_then_watchdog(clip_run: ClipRun) -> None:
    notes = clip_run.notify
    ready = [i for i, n in enumerate(notes) if "READY=1" in n.split("\n")]
    pings = [i for i, n in enumerate(notes) if n == "WATCHDOG=1"]
    assert len(ready) == 1, notes
    assert len([i for i in pings if i > ready[0]]) >= 2, notes
    assert any("STOPPING=1" in n for n in notes[ready[0]:]), notes


# ----------------------------------------------------------------------------- broker outage


def test_broker_outage_loses_no_event_and_drops_only_old_pose_frames(
        tmp_path: Path, clip: Path) -> None:
    broker = Broker(tmp_path, free_port(), persistent=True)
    broker.start()
    sub = Subscriber(broker.port, persistent_session=True).start()
    d = Daemon(tmp_path, broker.port, clip, device="outage", loop=True,
               mqtt={"pose_qos": 1, "pose_queue": 3})
    try:
        d.start()
        wait_until(lambda: len(sub.on("events")) >= 2, 60, "the first events")
        broker.stop()
        sub.connected.clear()
        t_down = time.time()
        time.sleep(5.0)
        # The outage lasts until an event has happened in it, kept in the daemon's journal (a
        # loaded host ticks slowly: the clip's 3-s loop once gave no event in 5 s).
        wait_until(lambda: any(ev["ts"] >= t_down for ev in journal_events(d.state)), 60,
                   "an event during the outage")
        broker.start()
        t_up = time.time()
        assert sub.connected.wait(15)
        wait_until(lambda: "online" in sub.payloads("availability")[1:], 15, "online again")
        time.sleep(2.0)
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        wait_until(lambda: "stopped" in sub.payloads("availability"), 10, "stopped")
    finally:
        d.kill()
        sub.stop()
        broker.stop()
    validate_all(sub)
    events = [m.json() for m in sub.on("events")]
    unique = first_occurrences(events)
    # Every event exactly once (after de-duplication by seq), in order, none missing.
    assert [e["seq"] for e in unique] == list(range(1, len(unique) + 1)), \
        ([e["seq"] for e in events], d.output())
    assert any(t_down <= e["ts"] <= t_up for e in unique), "no event during the outage"
    final = sub.on("stats")[-1].json()
    assert final["mqtt"]["events_queued"] == 0 and final["mqtt"]["events_dropped"] == 0
    assert final["mqtt"]["events_published"] == len(unique)
    assert final["mqtt"]["disconnects"] >= 1 and final["mqtt"]["connects"] >= 2
    # Pose frames: every processed frame arrived except the counted drops (the oldest ones
    # while the broker was away); pose_queue = 3 newest survive.
    frames = {m.json()["frame_id"] for m in sub.on("pose")}
    processed, dropped = final["frames"]["processed"], final["mqtt"]["pose_dropped"]
    assert dropped > 0
    assert len(frames) == processed - dropped


# ------------------------------------------------- start before the broker; SIGKILL; restart


def test_daemon_started_before_broker_connects_and_its_will_says_offline(
        tmp_path: Path, clip: Path) -> None:
    b = Broker(tmp_path, free_port())
    d = Daemon(tmp_path, b.port, clip, device="early", loop=True)
    sub = Subscriber(b.port)
    try:
        d.start()
        time.sleep(4.0)  # no broker: the daemon keeps retrying
        assert d.proc is not None and d.proc.poll() is None, d.output()
        b.start()
        sub.start()
        wait_until(lambda: "online" in sub.payloads("availability"), 20, "online")
        wait_until(lambda: len(sub.on("pose")) >= 3, 30, "pose frames")
        d.kill()  # SIGKILL: no chance to say goodbye
        wait_until(lambda: sub.payloads("availability")[-1:] == ["offline"], 15,
                   "the last will")
        retained = Subscriber(b.port, topics=("edgepose/early/availability",)).start()
        wait_until(lambda: bool(retained.on("availability")), 5, "retained availability")
        assert retained.on("availability")[0].payload == b"offline"
        assert retained.on("availability")[0].retain
        retained.stop()
    finally:
        d.kill()
        sub.stop()
        b.stop()


def test_sigterm_with_broker_away_saves_events_and_a_restart_delivers_them(
        tmp_path: Path, broker: Broker, clip: Path) -> None:
    sub = Subscriber(broker.port).start()
    d = Daemon(tmp_path, broker.port, clip, device="saver", loop=True)
    try:
        d.start()
        wait_until(lambda: len(sub.on("events")) >= 1, 60, "the first event")
        broker.stop()
        sub.connected.clear()

        def pending() -> list[int]:
            acked = {r["ack"] for r in d.journal() if "ack" in r}
            return [r["event"]["seq"] for r in d.journal()
                    if "event" in r and r["event"]["seq"] not in acked]

        wait_until(lambda: len(pending()) >= 2, 60, "events queued while the broker is away")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        saved = pending()
        assert len(saved) >= 2
        # The broker comes back, the daemon restarts: the saved events go out first, in order.
        broker.start()
        assert sub.connected.wait(10)
        d2 = Daemon(tmp_path, broker.port, clip, device="saver", loop=True)
        d2.start()
        wait_until(lambda: "online" in sub.payloads("availability"), 30, "online")
        wait_until(lambda: {e["seq"] for e in map(Msg.json, sub.on("events"))} >= set(saved),
                   30, "the saved events")
        d2.signal(signal.SIGTERM)
        assert d2.wait(30) == 0, d2.output()
        wait_until(lambda: sub.payloads("availability")[-1:] == ["stopped"], 10, "stopped")
    finally:
        d.kill()
        sub.stop()
    unique = first_occurrences([m.json() for m in sub.on("events")])
    seqs = [e["seq"] for e in unique]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert len({e["stream"] for e in unique}) == 1  # one numbering across the restart
    assert d.journal()[0]["meta"]["next_seq"] == seqs[-1] + 1
    assert [r for r in d.journal() if "event" in r] == []  # all delivered: journal compacted


# ----------------------------------------------------------------------------------- commands


def test_commands_valid_malformed_oversized_retained_and_home_assistant(
        tmp_path: Path, broker: Broker, clip: Path) -> None:
    sub = Subscriber(broker.port).start()
    root = "edgepose/cmd"
    # A retained command waiting on the broker before the daemon starts: must be ignored.
    sub.publish(f"{root}/set/max_persons", "2", retain=True)
    d = Daemon(tmp_path, broker.port, clip, device="cmd", loop=True,
               mqtt={"home_assistant": {"enabled": True}}, tracking={"max_persons": 4})
    try:
        d.start()
        wait_until(lambda: len(sub.on("stats")) >= 2, 60, "stats")

        def states(name: str) -> list[str]:
            return sub.payloads(f"state/{name}")

        assert states("max_persons") == ["4"] and states("enabled") == ["true"]
        bad: list[tuple[str, bytes]] = [
            ("max_persons", b"abc"), ("max_persons", b"0"), ("max_persons", b"99"),
            ("max_persons", b"2.5"), ("max_persons", b"true"), ("max_persons", b"[3]"),
            ("max_persons", b""), ("max_persons", b"\xff\xfe"),
            ("max_persons", b"3" + b" " * 5000),  # oversized (valid JSON once stripped)
            ("enabled", b"maybe"), ("enabled", b"1"), ("detector_hz", b"1000"),
            ("detector_hz", b"NaN"), ("detector_hz", b"-1"), ("detector_hz", b"\"2\""),
            ("detector_hz", b"1e-320"), ("detector_hz", b"0.05"),
            ("nonexistent", b"1"),
        ]
        for name, payload in bad:
            sub.publish(f"{root}/set/{name}", payload)
        sub.publish(f"{root}/set/max_persons/extra", b"3")  # not a command topic: not seen
        sub.publish(f"{root}/set/detector_hz", b"2", retain=True)  # retained, while connected
        time.sleep(1.0)
        # Nothing changed, and no state was echoed for the bad ones.
        assert states("max_persons") == ["4"]
        assert states("enabled") == ["true"]
        # MQTT 5 retain-as-published: the live retained command keeps its flag and is refused
        # too (MQTT 3.1.1 would have cleared the flag and applied it).
        assert states("detector_hz") == ["5.0"]
        sub.publish(f"{root}/set/detector_hz", b"2")
        wait_until(lambda: states("detector_hz")[-1:] == ["2.0"], 5, "detector_hz = 2")
        sub.publish(f"{root}/set/detector_hz", b"", retain=True)  # clear the retained one
        sub.publish(f"{root}/set/max_persons", b"", retain=True)
        sub.publish(f"{root}/set/max_persons", b"3")
        wait_until(lambda: states("max_persons")[-1:] == ["3"], 5, "max_persons = 3")
        sub.publish(f"{root}/set/enabled", b"OFF")
        wait_until(lambda: states("enabled")[-1:] == ["false"], 5, "enabled = false")
        time.sleep(1.0)
        n_pose = len(sub.on("pose"))
        time.sleep(1.5)
        assert len(sub.on("pose")) == n_pose  # disabled: no pose frames
        sub.publish(f"{root}/set/enabled", b"true")
        wait_until(lambda: len(sub.on("pose")) > n_pose, 10, "pose frames again")
        # Home Assistant: discovery on connect, again when Home Assistant announces itself.

        def disc() -> list[Msg]:
            return sub.on_prefix("homeassistant/sensor/")

        assert len(disc()) == 2
        sub.publish("homeassistant/status", b"online")
        wait_until(lambda: len(disc()) == 4, 5, "discovery again")
        # One runtime: the HTTP transport beside MQTT reports the settings MQTT changed.
        status, body = d.http_get("/v1/stats")
        assert status == 200, body
        assert json.loads(body)["settings"] == {"enabled": True, "max_persons": 3,
                                                "detector_hz": 2.0}
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        wait_until(lambda: sub.payloads("availability")[-1:] == ["stopped"], 10, "stopped")
    finally:
        d.kill()
        sub.stop()
    final = sub.on("stats")[-1].json()
    assert final["settings"] == {"enabled": True, "max_persons": 3, "detector_hz": 2.0}
    # both retained ones + each bad one (the oversized one too) + the cleared retained ones
    # (empty payloads) are rejected.
    assert final["mqtt"]["commands_rejected"] == 2 + len(bad) + 2
    assert final["mqtt"]["commands_accepted"] == 4
    for m in disc():
        cfg = m.json()
        assert cfg["state_topic"] == f"{root}/stats"
        assert cfg["availability"][0]["topic"] == f"{root}/availability"
        assert cfg["device"]["identifiers"] == ["edgepose_cmd"]
    log = d.output()
    assert "rejected command" in log and "ignored retained command" in log


# ------------------------------------------------------------------------ TLS and a password


def _make_certs(folder: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, crt = (folder / n for n in
                                 ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))

    def run(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=edge-pose test CA", "-keyout", str(ca_key), "-out", str(ca))
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
    return ca, crt, key


def test_tls_with_password_works_and_anonymous_is_refused(tmp_path: Path, clip: Path) -> None:
    require("openssl", "apt-get install openssl")
    require("mosquitto_passwd", "apt-get install mosquitto-clients")
    ca, crt, key = _make_certs(tmp_path)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "edge", "s3cret pass"],
                   check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "watcher", "w4tch"], check=True,
                   capture_output=True)
    b = Broker(tmp_path, free_port(), anonymous=False,
               extra=f"password_file {pw}\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\n")
    b.start()
    tls = {"ca_certs": str(ca)}
    anon = Subscriber(b.port, tls=tls).start(wait=False)
    sub = Subscriber(b.port, tls=tls, auth=("watcher", "w4tch")).start()
    # The password comes from the credentials directory (systemd LoadCredential=).
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret pass\n")
    d = Daemon(tmp_path, b.port, clip, device="tls", loop=True,
               env={"CREDENTIALS_DIRECTORY": str(creds)}, http={"enabled": False},
               mqtt={"username": "edge", "tls": {"enabled": True, "ca_file": str(ca)}})
    try:
        d.start()
        wait_until(lambda: len(sub.on("pose")) >= 2, 60, "pose frames over TLS")
        assert "HTTP API" not in d.output()  # the daemon with [http] off (the others have it on)
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        wait_until(lambda: sub.payloads("availability")[-1:] == ["stopped"], 10, "stopped")
        wait_until(lambda: bool(anon.refused), 5, "the anonymous client refused")
        assert not anon.connected.is_set() and not anon.msgs
        assert "Not authorized" in anon.refused[0] or "authori" in anon.refused[0].lower()
    finally:
        d.kill()
        anon.stop()
        sub.stop()
        b.stop()


def test_wrong_password_is_refused_and_logged(tmp_path: Path, clip: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "edge", "right"], check=True,
                   capture_output=True)
    b = Broker(tmp_path, free_port(), anonymous=False, extra=f"password_file {pw}\n")
    b.start()
    d = Daemon(tmp_path, b.port, clip, device="wrongpw",
               env={"EDGE_POSE_MQTT_PASSWORD": "wrong"}, mqtt={"username": "edge"})
    try:
        d.start()
        wait_until(lambda: "refused the connection" in d.output(), 60, "the refusal logged")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
    finally:
        d.kill()
        b.stop()


# ------------------------------------------------- a live camera that goes away; HTTP beside MQTT


def test_camera_outage_is_reported_and_survived_with_http_beside_mqtt(
        tmp_path: Path, broker: Broker) -> None:
    """A live MJPEG camera stopped mid-run (``EDGE_POSE_OUTAGE_S``, 12 s by default: longer than
    the 10 s that used to end the daemon): the daemon stays up, publishes ``camera_lost`` and
    ``camera_back`` events and the source state in ``stats``, and pose frames resume when the
    camera returns. ``[http]`` is on beside MQTT: ``/readyz`` says not ready while the camera is
    away and ready again after."""
    import http.client

    from mjpeg_camera import MjpegCamera

    outage = float(os.environ.get("EDGE_POSE_OUTAGE_S", "12"))
    cam = MjpegCamera()
    cam.start()
    http_port = free_port()
    sub = Subscriber(broker.port).start()
    d = Daemon(tmp_path, broker.port, Path(cam.url), device="camera",
               source={"uri": cam.url, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
               http={"enabled": True, "port": http_port})

    def readyz() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status
        except OSError:
            return 0
        finally:
            conn.close()

    try:
        d.start()
        wait_until(lambda: len(sub.on("pose")) >= 10, 120, "pose frames from the camera")
        wait_until(lambda: readyz() == 200, 30, "/readyz 200")
        cam.stop()
        t_off = time.time()
        wait_until(lambda: any(m.json()["kind"] == "camera_lost" for m in sub.on("events")),
                   30, "camera_lost")
        wait_until(lambda: readyz() == 503, 10, "/readyz 503 while the camera is away")
        time.sleep(max(0.0, outage - (time.time() - t_off)))
        assert d.proc is not None and d.proc.poll() is None, d.output()
        lost_stats = [m.json() for m in sub.on("stats") if m.json()["source"]["state"] == "lost"]
        assert lost_stats, "stats never said the camera was lost"
        n_pose = len(sub.on("pose"))
        cam.start()
        t_on = time.time()
        wait_until(lambda: len(sub.on("pose")) > n_pose + 5, 30, "pose frames again")
        resumed_s = time.time() - t_on
        wait_until(lambda: any(m.json()["kind"] == "camera_back" for m in sub.on("events")),
                   10, "camera_back")
        wait_until(lambda: readyz() == 200, 15, "/readyz 200 again")
        print(f"camera off {outage:.0f} s; pose frames again {resumed_s:.2f} s after it returned")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
    finally:
        d.kill()
        cam.stop()
        sub.stop()
    validate_all(sub)
    kinds = [m.json()["kind"] for m in sub.on("events")]
    assert kinds.count("camera_lost") == 1 and kinds.count("camera_back") == 1
    assert kinds.index("camera_lost") < kinds.index("camera_back")
    assert sub.payloads("availability")[-1] == "stopped"
