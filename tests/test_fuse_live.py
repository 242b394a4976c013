"""The live fuse worker end to end, with a real Mosquitto on a loopback port.

* Real devices: ``edge-pose daemon`` on three Pose2Sim demo views (the pinned
  ``pose2sim==0.10.49`` wheel), the worker ``edge-pose fuse --config`` as a subprocess: the
  fused topic carries people; one daemon killed mid-run, fusion goes on with the other two and
  the stats say the device is missing; SIGTERM ends the worker cleanly (``stopped``).
* Replayed devices: the four views' real annotations (``bench.fuse_data``, edge-pose run on
  each view) published on the broker at 30 Hz: every frame fused with its four views, the JSONL
  sink holds the same frames, and the stats carry the latency fusion adds (p50/p99).
* Bad input, each through the broker into a running worker: a device whose image size does not
  match its camera, an unknown device id, a device whose clock is 10 s off, malformed payloads:
  warned, counted, nothing fused from them, the worker keeps fusing the others. A broker that
  goes away and comes back: the worker reconnects and fuses again.
* A view with nobody in it for 30 s and a device that stops: on a synthetic clock (the core
  takes ``now``), so no test waits 30 s.
* Scale: two workers, two scenes (scene key in the topic root), one broker: each worker gets
  its whole scene and nothing of the other.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from conftest import require
from paho.mqtt.enums import CallbackAPIVersion
from test_service import (
    MOSQUITTO,
    REPO,
    Broker,
    Daemon,
    NotifySocket,
    Subscriber,
    free_port,
    wait_until,
    write_config,
)

from bench.fuse_data import Scene, scene
from edge.config import Secrets
from edge.fuse.config import parse_fuse_config
from edge.fuse.service import NO_PEOPLE_WARN_S, FuseCore, FuseService

CAMS = ("cam01", "cam02", "cam03", "cam04")
FUSED_SCHEMA = REPO / "edge" / "fused.schema.json"
STATS_SCHEMA = REPO / "edge" / "fuse" / "stats.schema.json"


def validate_stats(stats: list[dict[str, Any]]) -> None:
    schema = json.loads(STATS_SCHEMA.read_text(encoding="utf-8"))
    for st in stats:
        jsonschema.validate(st, schema)


@pytest.fixture(autouse=True)
def _mosquitto_installed() -> None:
    """Every test here needs a real Mosquitto: it fails without one."""
    require(MOSQUITTO, "apt-get install mosquitto")


@pytest.fixture(scope="session")
def single() -> Scene:
    """Demo_SinglePerson: four views' annotations (edge-pose on each view, cached)."""
    return scene("single")


@pytest.fixture(scope="session")
def views(single: Scene) -> dict[str, list[dict[str, Any]]]:
    """Each view's annotations, in frame order, by device id (cam01..cam04)."""
    return {cam: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for cam, path in zip(CAMS, single.jsonl, strict=True)}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # set_tcp_nodelay: what deploy/fuse.example.toml asks of the broker (no Nagle delays)
    b = Broker(tmp_path_factory.mktemp("fusebroker"), free_port(), extra="set_tcp_nodelay true")
    b.start()
    yield b
    b.stop()


def fuse_config(single: Scene, port: int, *, name: str = "lab", root: str = "edgepose",
                devices: tuple[str, ...] = CAMS, jsonl: Path | None = None,
                **sections: dict[str, Any]) -> dict[str, Any]:
    """A worker config (as a mapping) for the single-person scene on ``port``."""
    cfg: dict[str, Any] = {
        "scene": {"name": name, "calibration": str(single.calib),
                  "devices": {d: d for d in devices}},
        "sync": {"fps": 60.0, "device_timeout_s": 3.0},
        "fuse": {"max_wait_s": 0.5},
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_root": root,
                 "stats_interval_s": 0.5, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
        "output": {} if jsonl is None else {"jsonl": str(jsonl)},
        "logging": {"level": "INFO"},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


@dataclass
class Worker:
    """A :class:`FuseService` running in a thread of the test process."""

    service: FuseService
    thread: threading.Thread
    codes: list[int]

    def stop(self) -> int:
        self.service.stop_event.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "worker did not stop"
        return self.codes[0]

    @property
    def core(self) -> FuseCore:
        return self.service.core


def start_worker(cfg: dict[str, Any]) -> Worker:
    config, calib = parse_fuse_config(cfg, "test")
    service = FuseService(config, calib, Secrets())
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(service.run()), daemon=True)
    thread.start()
    wait_until(lambda: service.mqtt.connected, 10, "the worker to connect")
    time.sleep(0.2)  # subscription acknowledged
    return Worker(service, thread, codes)


class Publisher:
    """A paho client publishing devices' pose payloads."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"test-pub-{id(self)}")
        self.client.connect("127.0.0.1", port)
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        # One client stands for several devices: no Nagle delay between their messages.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1) -> None:
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(topic, body, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def replay(pub: Publisher, views: dict[str, list[dict[str, Any]]], frames: range, *,
           root: str = "edgepose", hz: float | None = None,
           edit: dict[str, Any] | None = None, qos: int = 1) -> None:
    """Publishes ``frames`` of each view as its device would (``hz``: paced, else at once).

    ``edit`` maps a device id to a function changing its payload (or returning None to skip).
    """
    t0 = time.monotonic()
    for k, i in enumerate(frames):
        for dev, anns in views.items():
            payload = dict(anns[i % len(anns)])
            # past the end, go round again with the clock going on (60 fps views)
            payload["frame_id"] = i
            payload["ts"] = round(payload["ts"] + (i // len(anns)) * len(anns) / 60, 6)
            if edit and dev in edit:
                payload = edit[dev](payload)
                if payload is None:
                    continue
            pub.send(f"{root}/{payload['device_id']}/pose", payload, qos)
        if hz:
            delay = t0 + (k + 1) / hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def views_used(fused: dict[str, Any]) -> set[str]:
    """The devices a fused frame was made from."""
    return set(fused["frames"])


# ------------------------------------------------------------------------------- replayed


def test_replay_at_30hz_fuses_every_frame_with_four_views(
        broker: Broker, single: Scene, views: dict[str, list[dict[str, Any]]],
        tmp_path: Path) -> None:
    """100 frames x 4 views at 30 Hz: each frame fused once from its four views, on the topic
    and in the JSONL file alike, valid against the schema; the stats carry the latency."""
    sink = tmp_path / "fused.jsonl"
    worker = start_worker(fuse_config(single, broker.port, jsonl=sink))
    sub = Subscriber(broker.port, topics=("edgepose/fused/#",)).start()
    pub = Publisher(broker.port)
    try:
        replay(pub, views, range(100), hz=30.0, qos=0)  # as the devices publish
        wait_until(lambda: len(sub.on("pose3d")) >= 100, 10, "100 fused frames")
        time.sleep(0.8)
        stats = worker.service.stats()
    finally:
        pub.close()
        code = worker.stop()
        sub.stop()
    assert code == 0
    fused = [m.json() for m in sub.on("pose3d")]
    assert len(fused) == 100
    schema = json.loads(FUSED_SCHEMA.read_text(encoding="utf-8"))
    for f in fused:
        jsonschema.validate(f, schema)
        assert views_used(f) == set(CAMS)
    with_people = [f for f in fused if f["persons"]]
    assert len(with_people) >= 90, len(with_people)
    lines = [json.loads(x) for x in sink.read_text(encoding="utf-8").splitlines()]
    assert lines == fused
    assert stats["fused"] == 100 and stats["malformed"] == 0 and stats["missing"] == []
    lat = stats["latency_ms"]
    assert lat["n"] == 100 and 0 <= lat["p50"] <= lat["p99"]
    print(f"\nfusion latency at 30 Hz, 4 views: p50 {lat['p50']:.1f} ms, p99 "
          f"{lat['p99']:.1f} ms; fuse() alone p50 {stats['fuse_ms']['p50']:.1f} ms, p99 "
          f"{stats['fuse_ms']['p99']:.1f} ms")
    avail = sub.payloads("availability")
    assert avail[0] == "online" and avail[-1] == "stopped", avail
    validate_stats([stats, *(m.json() for m in sub.on("stats"))])


def _resize(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "image": {"width": 720, "height": 1280}}


def _clock_10s(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "ts": p["ts"] + 10.0}


@pytest.mark.parametrize(("case", "dev", "edit", "state", "message"), [
    ("size", "cam04", _resize, "size_mismatch", "do not match camera cam04"),
    ("clock", "cam03", _clock_10s, "clock_off", "cam03: its clock is"),
])
def test_inconsistent_device_is_warned_and_never_fused(
        broker: Broker, single: Scene, views: dict[str, list[dict[str, Any]]],
        caplog: pytest.LogCaptureFixture, case: str, dev: str, edit: Any, state: str,
        message: str) -> None:
    caplog.set_level(logging.INFO, logger="edge.fuse")
    # device_timeout_s well over the wait below: the device is inconsistent, not missing
    worker = start_worker(fuse_config(single, broker.port, sync={"device_timeout_s": 5.0}))
    sub = Subscriber(broker.port, topics=("edgepose/fused/#",)).start()
    pub = Publisher(broker.port)
    try:
        replay(pub, views, range(40), edit={dev: edit})
        wait_until(lambda: len(sub.on("pose3d")) >= 40, 10, "40 fused frames")
        stats = worker.service.stats()
        fused = [m.json() for m in sub.on("pose3d")]
    finally:
        pub.close()
        sub.stop()
        assert worker.stop() == 0
    validate_stats([stats])
    assert stats["devices"][dev]["state"] == state, stats["devices"][dev]
    others = set(CAMS) - {dev}
    assert stats["fused"] == 40 and len(fused) == 40
    assert all(views_used(f) <= others for f in fused)
    assert all(views_used(f) == others for f in fused[-20:])
    warned = [r for r in caplog.records if message in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]


def test_unknown_device_and_malformed_payloads_are_counted_and_ignored(
        broker: Broker, single: Scene, views: dict[str, list[dict[str, Any]]],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.fuse")
    worker = start_worker(fuse_config(single, broker.port))
    pub = Publisher(broker.port)
    bad: list[tuple[str, bytes | str | dict[str, Any]]] = [
        ("edgepose/cam01/pose", b"\xff\xfe not json"),
        ("edgepose/cam01/pose", "[1, 2, 3]"),
        ("edgepose/cam01/pose", {**views["cam01"][5], "v": 9}),
        ("edgepose/cam01/pose", {**views["cam01"][5], "ts": "yesterday"}),
        ("edgepose/cam02/pose", {**views["cam01"][5]}),  # cam01's frame on cam02's topic
        ("edgepose/cam01/pose", "[" * 100_000),
        ("edgepose/cam01/pose", b"x" * 300_000),
    ]
    try:
        for topic, payload in bad:
            pub.send(topic, payload)
        stray = dict(views["cam01"][5], device_id="cam99")
        for _ in range(3):
            pub.send("edgepose/cam99/pose", stray)
        replay(pub, views, range(30))
        time.sleep(1.0)
        stats = worker.service.stats()
    finally:
        pub.close()
        assert worker.stop() == 0
    assert stats["malformed"] == len(bad), stats
    assert stats["unknown_devices"] == {"cam99": 3}
    assert stats["fused"] >= 25
    unknown = [r for r in caplog.records if "'cam99' is not in scene" in r.getMessage()]
    assert len(unknown) == 1
    assert sum("malformed pose payload" in r.getMessage() for r in caplog.records) == len(bad)


def test_broker_away_and_back_reconnects_and_fuses_again(
        tmp_path: Path, single: Scene, views: dict[str, list[dict[str, Any]]]) -> None:
    b = Broker(tmp_path, free_port())
    b.start()
    worker = start_worker(fuse_config(single, b.port))
    try:
        pub = Publisher(b.port)
        replay(pub, views, range(10))
        wait_until(lambda: worker.core.fused >= 9, 10, "fusion before the outage")
        pub.close()
        b.stop()
        wait_until(lambda: not worker.service.mqtt.connected, 10, "the outage to be seen")
        time.sleep(1.0)
        b.start()
        wait_until(lambda: worker.service.mqtt.connected, 15, "the worker to reconnect")
        time.sleep(0.3)
        before = worker.core.fused
        pub = Publisher(b.port)
        replay(pub, views, range(10, 30))
        wait_until(lambda: worker.core.fused >= before + 19, 10, "fusion after the outage")
        pub.close()
        stats = worker.service.stats()
    finally:
        code = worker.stop()
        b.stop()
    assert code == 0
    assert stats["mqtt"]["connects"] == 2 and stats["mqtt"]["disconnects"] == 1


def test_two_workers_two_scenes_one_broker_each_scene_whole(
        broker: Broker, single: Scene, views: dict[str, list[dict[str, Any]]]) -> None:
    """Scene key in the topic root: worker "hall" gets every frame of its devices (each
    group has all four views) and nothing of "lab"'s, and the other way round."""
    hall_views = {f"h{d}": [dict(p, device_id=f"h{d}") for p in v] for d, v in views.items()}
    lab = start_worker(fuse_config(single, broker.port, name="lab", root="edgepose/lab"))
    hall_cfg = fuse_config(single, broker.port, name="hall", root="edgepose/hall")
    hall_cfg["scene"]["devices"] = {f"h{d}": d for d in CAMS}
    hall = start_worker(hall_cfg)
    sub = Subscriber(broker.port, topics=("edgepose/fused/#",)).start()
    pubs = [Publisher(broker.port), Publisher(broker.port)]
    try:
        threads = [threading.Thread(target=replay, args=(pubs[0], views, range(30)),
                                    kwargs={"root": "edgepose/lab"}),
                   threading.Thread(target=replay, args=(pubs[1], hall_views, range(30)),
                                    kwargs={"root": "edgepose/hall"})]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wait_until(lambda: len(sub.on_prefix("edgepose/fused/lab/pose3d")) >= 30
                   and len(sub.on_prefix("edgepose/fused/hall/pose3d")) >= 30, 10,
                   "both scenes fused")
        time.sleep(0.5)
        lab_stats, hall_stats = lab.service.stats(), hall.service.stats()
    finally:
        for p in pubs:
            p.close()
        assert lab.stop() == 0 and hall.stop() == 0
        sub.stop()
    for name, stats, devices in (("lab", lab_stats, set(CAMS)),
                                 ("hall", hall_stats, {f"h{d}" for d in CAMS})):
        fused = [m.json() for m in sub.on_prefix(f"edgepose/fused/{name}/pose3d")]
        assert len(fused) == 30 and all(views_used(f) == devices for f in fused), name
        assert stats["unknown_devices"] == {} and stats["malformed"] == 0
        assert {d["frames"] for d in stats["devices"].values()} == {30}


# ------------------------------------------------------------------------- synthetic clock


def _core(single: Scene, fuse: dict[str, Any] | None = None, **sync: Any) -> FuseCore:
    config, calib = parse_fuse_config(fuse_config(single, 1883, sync=sync, fuse=fuse or {}),
                                      "test")
    return FuseCore(config, calib)


def test_a_full_ingest_queue_drops_the_oldest_and_counts_them(
        single: Scene, views: dict[str, list[dict[str, Any]]]) -> None:
    """The fusion thread fell behind: 20 payloads into a queue of 8 keep the newest 8."""
    config, calib = parse_fuse_config(fuse_config(single, 1883, ingest={"queue": 8}), "test")
    service = FuseService(config, calib, Secrets(), clock=lambda: 5.0)
    for k in range(5):
        for dev, anns in views.items():
            service._enqueue(f"edgepose/{dev}/pose", json.dumps(anns[k]).encode())
    assert service.mqtt.counters.ingest_dropped == 12 and len(service._queue) == 8
    service.step()
    stats = service.stats()
    assert stats["mqtt"]["ingest_dropped"] == 12
    assert {d: v["frames"] for d, v in stats["devices"].items()} == dict.fromkeys(CAMS, 2)
    assert stats["fused"] == 2  # frames 3 and 4, with all four views


def test_a_view_with_nobody_for_30s_is_warned_and_fusion_goes_on(
        single: Scene, views: dict[str, list[dict[str, Any]]],
        caplog: pytest.LogCaptureFixture) -> None:
    """cam02 sees nobody for 31 s of a synthetic clock at 10 Hz: one warning at 30 s, its
    ``no_people_s`` in the stats, the other three keep being fused with the person."""
    caplog.set_level(logging.INFO, logger="edge.fuse")
    core = _core(single)
    now, fused = 1000.0, []
    for k in range(320):
        for dev, anns in views.items():
            p = dict(anns[k % 50 + 20], frame_id=k, ts=k / 10)
            if dev == "cam02":
                p["persons"] = []
            fused += [o.payload for o in core.handle(f"edgepose/{dev}/pose",
                                                     json.dumps(p).encode(), now)]
        now += 0.1
        fused += [o.payload for o in core.tick(now)]
    stats = core.stats(now)
    assert stats["devices"]["cam02"]["no_people_s"] >= NO_PEOPLE_WARN_S
    assert stats["devices"]["cam01"]["no_people_s"] < 1
    warned = [r for r in caplog.records if "cam02 (camera cam02) has seen nobody" in
              r.getMessage()]
    assert len(warned) == 1
    assert len(fused) >= 310 and sum(bool(f["persons"]) for f in fused) >= 300


def test_a_device_that_stops_is_never_waited_on_and_is_reported_missing(
        single: Scene, views: dict[str, list[dict[str, Any]]]) -> None:
    """cam04 stops after 20 frames: each later group leaves after max_wait_s at most, with three
    views, and cam04 is "missing" once device_timeout_s has passed; skew is reported."""
    core = _core(single, {"max_wait_s": 0.1}, device_timeout_s=0.5)
    now, out = 0.0, []
    for k in range(60):
        for dev, anns in views.items():
            if dev == "cam04" and k >= 20:
                continue
            p = dict(anns[k], frame_id=k)
            out += [(o, now) for o in core.handle(f"edgepose/{dev}/pose",
                                                  json.dumps(p).encode(), now + 0.003)]
        now += 1 / 60
        out += [(o, now) for o in core.tick(now)]
    for _ in range(8):  # 0.4 s: cam04 is gone for over device_timeout_s, the others not
        now += 0.05
        out += [(o, now) for o in core.tick(now)]
    assert len(out) == 60
    late = [(o, t) for o, t in out if o.payload["frames"]["cam01"] >= 21]
    assert all(views_used(o.payload) == {"cam01", "cam02", "cam03"} for o, _ in late)
    assert max(t - o.first_arrival for o, t in late) <= 0.1 + 1 / 60 + 1e-6
    stats = core.stats(now)
    assert stats["missing"] == ["cam04"]
    assert stats["devices"]["cam04"]["state"] == "missing"
    assert stats["sync"]["group_sizes"] == {"3": 40, "4": 20}
    skew = stats["devices"]["cam01"]["skew_ms"]
    assert skew["p50"] is not None and 0 <= skew["p50"] <= skew["max"]


# ------------------------------------------------------------------------------ real daemons


def test_live_daemons_fused_then_one_killed_fusion_goes_on(
        tmp_path: Path, single: Scene) -> None:
    """Three ``edge-pose daemon`` processes on cam01-03 (every frame of each view, looped), the
    worker as ``edge-pose fuse --config``: fused people arrive; cam03's daemon is killed and
    fusion goes on from cam01-02 with cam03 "missing" in the stats; SIGTERM: ``stopped``."""
    b = Broker(tmp_path, free_port())
    b.start()
    notify = NotifySocket(tmp_path / "notify.sock")
    cams = CAMS[:3]
    cfg = fuse_config(single, b.port, devices=cams, jsonl=tmp_path / "fused.jsonl",
                      sync={"fps": 60.0, "device_timeout_s": 3.5},
                      fuse={"max_wait_s": 3.0, "max_clock_offset_s": 10.0},
                      service={"shutdown_timeout_s": 2.0})
    toml = write_config(tmp_path / "fuse.toml", {k: v for k, v in cfg.items()
                                                 if k != "scene"})
    scene_lines = [f'[scene]\nname = "lab"\ncalibration = "{single.calib}"\n[scene.devices]']
    scene_lines += [f'{c} = "{c}"' for c in cams]
    toml.write_text("\n".join(scene_lines) + "\n" + toml.read_text())
    log = tmp_path / "fuse.log"
    sub = Subscriber(b.port, topics=("edgepose/fused/#",)).start()
    daemons = [Daemon(tmp_path, b.port, video, device=cam, loop=True,
                      scheduler={"mode": "every-frame", "detector_every": 3},
                      detector={"tiles": False}, mqtt={"pose_queue": 200})
               for cam, video in zip(cams, single.videos, strict=False)]
    with open(log, "ab") as out:
        fuse = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "fuse", "--config", str(toml)], stdout=out,
            stderr=subprocess.STDOUT, cwd=REPO,
            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
                 "PATH": "/usr/bin:/bin"})
    try:
        for d in daemons:
            d.start()

        def people() -> list[dict[str, Any]]:
            return [f for f in (m.json() for m in sub.on("pose3d")) if f["persons"]]

        wait_until(lambda: len(people()) >= 10, 90, "fused people from three daemons")
        assert any(views_used(f) == set(cams) for f in people())
        daemons[2].kill()
        killed_at, stats_at = len(sub.on("pose3d")), len(sub.on("stats"))
        wait_until(lambda: any(m.json()["missing"] == ["cam03"]
                               and m.json()["devices"]["cam03"]["state"] == "missing"
                               for m in sub.on("stats")[stats_at:]), 20,
                   "stats saying cam03 is missing")
        n = len(people())
        wait_until(lambda: len(people()) >= n + 10, 30, "fusion to go on without cam03")
        after = [m.json() for m in sub.on("pose3d")[killed_at:]]
        assert any(views_used(f) == {"cam01", "cam02"} and f["persons"] for f in after)
        fuse.send_signal(signal.SIGTERM)
        assert fuse.wait(20) == 0, log.read_text()
        wait_until(lambda: "stopped" in sub.payloads("availability"), 5, "stopped")
    finally:
        notify.close()
        for d in daemons:
            d.kill()
        if fuse.poll() is None:
            fuse.kill()
            fuse.wait(10)
        sub.stop()
        b.stop()
    notes = notify.notes
    assert any("READY=1" in n for n in notes) and any("WATCHDOG=1" in n for n in notes), notes
    stats = [m.json() for m in sub.on("stats")]
    validate_stats(stats)
    assert stats[-1]["devices"]["cam03"]["state"] == "missing"
    assert stats[-1]["devices"]["cam01"]["state"] == "ok"
    assert "Traceback" not in log.read_text()
