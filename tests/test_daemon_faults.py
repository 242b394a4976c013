"""The daemon under injected faults, with a real Mosquitto and the real models on the real clip.

* The broker goes away for ``EDGE_POSE_BROKER_DOWN_S`` (default 8 s; the issue's figure, 65 s, is
  run by setting it) and comes back: the daemon is connected again within 5 s, logs the loss
  once with host, port and reason, and never logs paho's "Client is not connected".
* Power cuts: the daemon is SIGKILLed at random moments, for ``EDGE_POSE_POWERCUT_S`` (default
  45 s; ``EDGE_POSE_POWERCUT_SYNC_MS`` sets ``service.journal_sync_ms``) while the broker
  flaps; every event it acknowledged as journalled (its log says so once the commit returned;
  and every event seen in its journal at any moment) is delivered, and no ``(stream, seq)``
  ever names two different events.
* A run that fails publishes ``availability = failed`` with the reason in the retained
  ``status``; a requested stop publishes ``stopped``.
* A damaged journal: the daemon starts, warns, and delivers what could still be read.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
from test_service import (  # the shared Mosquitto / daemon / subscriber helpers
    Broker,
    Daemon,
    Subscriber,
    clip,  # noqa: F401 - a fixture
    free_port,
    journal_events,
    wait_until,
)

BROKER_DOWN_S = float(os.environ.get("EDGE_POSE_BROKER_DOWN_S", "8"))
POWERCUT_S = float(os.environ.get("EDGE_POSE_POWERCUT_S", "45"))
POWERCUT_SYNC_MS = int(os.environ.get("EDGE_POSE_POWERCUT_SYNC_MS", "0"))
FIGURES = Path(os.environ.get("EDGE_POSE_FIGURES", "/tmp")) / "edge-pose-fault-figures.jsonl"


def _figure(**kv: Any) -> None:
    """Appends a measured figure for the notes (speed is reported, never asserted)."""
    with open(FIGURES, "a", encoding="utf-8") as f:
        f.write(json.dumps({"t": round(time.time(), 1), **kv}) + "\n")


def _status(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.on("status")]


def test_broker_away_then_back_reconnects_within_5_s_and_logs_once(
        tmp_path: Path, clip: Path) -> None:  # noqa: F811 - the fixture
    broker = Broker(tmp_path, free_port())
    broker.start()
    d = Daemon(tmp_path, broker.port, clip, device="flap", loop=True,
               mqtt={"reconnect_min_s": 0.5, "reconnect_max_s": 3.0})
    sub = Subscriber(broker.port).start()
    try:
        d.start()
        wait_until(lambda: any(s["state"] == "online" for s in _status(sub)), 60, "online")
        broker.stop()
        time.sleep(BROKER_DOWN_S)
        broker.start()
        t_up = time.time()
        watcher = Subscriber(broker.port, topics=("edgepose/flap/status",)).start()

        def back() -> bool:
            return any(s["state"] == "online" and s["since"] >= t_up - 0.5
                       for s in _status(watcher))

        wait_until(back, 30, "the daemon connected again")
        since = max(s["since"] for s in _status(watcher))
        reconnect_s = since - t_up
        _figure(kind="broker_return", down_s=BROKER_DOWN_S, reconnect_s=round(reconnect_s, 2))
        assert reconnect_s <= 5.0, f"reconnected {reconnect_s:.1f} s after the broker returned"
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        wait_until(lambda: any(s["state"] == "stopped" for s in _status(watcher)), 10,
                   "status stopped")
        watcher.stop()
    finally:
        d.kill()
        sub.stop()
        broker.stop()
    log = d.output() if len(d.output()) < 3900 else d.log.read_text(errors="replace")
    assert "Client is not connected" not in log
    lost = [ln for ln in log.splitlines() if f"127.0.0.1:{broker.port} lost" in ln]
    unreachable = [ln for ln in log.splitlines() if "unreachable" in ln]
    assert len(lost) == 1, log[-3000:]
    assert "reconnecting" in lost[0]
    # Once per change of reason (connection refused while it is down), not once per attempt.
    assert len(unreachable) <= 2, unreachable
    assert any("after" in ln and "away" in ln for ln in log.splitlines()
               if "MQTT connected" in ln)


def test_a_failed_run_says_failed_with_its_reason_and_a_stop_says_stopped(
        tmp_path: Path, clip: Path) -> None:  # noqa: F811 - the fixture
    broker = Broker(tmp_path, free_port())
    broker.start()
    not_video = tmp_path / "broken.mp4"
    not_video.write_bytes(os.urandom(20_000))  # exists and is readable; not a video
    sub = Subscriber(broker.port).start()
    d = Daemon(tmp_path, broker.port, not_video, device="broken")
    try:
        d.start()
        code = d.wait(60)
        assert code != 0, d.output()
        assert "Traceback" not in d.output()
        wait_until(lambda: sub.payloads("availability")[-1:] == ["failed"], 10, "failed")
        failed = _status(sub)[-1]
        assert failed["state"] == "failed" and "broken.mp4" in failed["reason"]
        retained = Subscriber(broker.port, topics=("edgepose/broken/#",)).start()
        wait_until(lambda: bool(retained.on("status")), 5, "the retained status")
        assert retained.on("status")[-1].retain and retained.on("status")[-1].json() == failed
        assert retained.payloads("availability") == ["failed"]
        retained.stop()
        d2 = Daemon(tmp_path, broker.port, clip, device="fine", loop=True)
        d2.start()
        wait_until(lambda: "online" in sub.payloads("availability")[1:], 60, "online")
        d2.signal(signal.SIGTERM)
        assert d2.wait(30) == 0, d2.output()
        wait_until(lambda: sub.payloads("availability")[-1:] == ["stopped"], 10, "stopped")
        stopped = _status(sub)[-1]
        assert stopped["state"] == "stopped" and stopped["reason"] is None
        assert stopped["journal"]["pending"] == 0 and stopped["journal"]["write_errors"] == 0
        schema = json.loads((Path(__file__).parent.parent / "edge" / "status_schema.json")
                            .read_text(encoding="utf-8"))
        assert len(_status(sub)) >= 4  # online, failed, online, stopped
        for st in _status(sub):
            jsonschema.validate(st, schema)
    finally:
        d.kill()
        sub.stop()
        broker.stop()


def test_the_daemon_starts_on_a_damaged_journal_and_delivers_what_it_can_read(
        tmp_path: Path, clip: Path) -> None:  # noqa: F811 - the fixture
    broker = Broker(tmp_path, free_port())
    d = Daemon(tmp_path, broker.port, clip, device="damaged", loop=True)
    d.state.mkdir()
    # A previous-format journal cut in half in the middle, with a non-finite seq and bad bytes.
    ev = {"v": 1, "device_id": "damaged", "kind": "entered", "track_id": 1, "other_id": None,
          "ts": 1.0, "t_source": 1.0, "frame_id": 1, "stream": "old0stream"}
    lines = [json.dumps({"meta": {"stream": "old0stream", "next_seq": 1}}),
             json.dumps({"event": {**ev, "seq": 1}}), '{"event": {"seq": 2, "ki',
             '{"event": {"seq": Infinity}}', json.dumps({"event": {**ev, "seq": 5}})]
    (d.state / "events.jsonl").write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")
    broker.start()
    sub = Subscriber(broker.port).start()
    try:
        d.start()
        def keys() -> set[tuple[str, int]]:
            return {(e["stream"], e["seq"]) for e in (m.json() for m in sub.on("events"))}

        wait_until(lambda: keys() >= {("old0stream", 1), ("old0stream", 5)}, 60,
                   "the readable old events")
        wait_until(lambda: any(k[0] != "old0stream" for k in keys()), 60, "a new event")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
    finally:
        d.kill()
        sub.stop()
        broker.stop()
    log = d.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert "3 damaged line(s) skipped" in log and "new stream" in log
    status = [m.json() for m in sub.on("status")]
    assert status[0]["journal"]["damaged_at_start"] == 3
    assert "damaged" in status[0]["journal"]["new_stream_because"]
    new = [m.json() for m in sub.on("events") if m.json()["stream"] != "old0stream"]
    assert new and all(e["seq"] >= 6 for e in new)  # numbering goes on, under a new stream


# -------------------------------------------------------------------------------- power cuts


def test_sigkill_at_random_moments_with_a_flapping_broker_loses_no_event(
        tmp_path: Path, clip: Path) -> None:  # noqa: F811 - the fixture
    seed = int(os.environ.get("EDGE_POSE_POWERCUT_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    broker = Broker(tmp_path, free_port(), persistent=True)
    broker.start()
    sub = Subscriber(broker.port, persistent_session=True).start()
    journalled: dict[tuple[str, int], dict[str, Any]] = {}
    stop = threading.Event()
    flaps = [0]

    def flap() -> None:  # the broker goes away for 0.5-3 s every 2-8 s
        while not stop.wait(rng.uniform(2, 8)):
            broker.stop()
            flaps[0] += 1
            if stop.wait(rng.uniform(0.5, 3)):
                break
            broker.start()

    flapper = threading.Thread(target=flap, daemon=True)
    kills = 0
    end = time.monotonic() + POWERCUT_S
    d = Daemon(tmp_path, broker.port, clip, device="cut", loop=True,
               mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
               service={"journal_sync_ms": POWERCUT_SYNC_MS}, logging={"level": "DEBUG"})
    try:
        flapper.start()
        while time.monotonic() < end:
            d.start()
            die_at = time.monotonic() + rng.uniform(1.0, 8.0)
            while time.monotonic() < die_at:
                for e in journal_events(d.state):
                    journalled[(e["stream"], e["seq"])] = e
                time.sleep(rng.uniform(0.05, 0.3))
            d.kill()  # SIGKILL: the process has no say
            kills += 1
            for e in journal_events(d.state):  # what survived the kill
                journalled[(e["stream"], e["seq"])] = e
        stop.set()
        flapper.join(10)
        if broker.proc is None:
            broker.start()
        # A last run with the broker up delivers what the killed ones left in the journal.
        ready_before = d.log.read_text(errors="replace").count("INFO edge.service: ready")
        n_stats = len(sub.on("stats"))
        d.start()
        wait_until(lambda: d.log.read_text(errors="replace").count("INFO edge.service: ready")
                   > ready_before and len(sub.on("stats")) > n_stats, 90, "the last run")
        wait_until(lambda: not journal_events(d.state), 90, "the journal drained")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
        delivered: dict[tuple[str, int], dict[str, Any]] = {}
        conflicts = []

        def all_there() -> bool:
            for m in sub.on("events"):
                e = m.json()
                key = (e["stream"], e["seq"])
                if key in delivered and delivered[key] != e:
                    conflicts.append((delivered[key], e))
                delivered.setdefault(key, e)
            return set(journalled) <= set(delivered)

        wait_until(all_there, 30, "every journalled event delivered")
    finally:
        stop.set()
        d.kill()
        sub.stop()
        broker.stop()
    # The daemon's own word: "journalled stream S seq A-B" is logged once the commit returned.
    said = re.findall(r"journalled stream (\w+) seq (\d+)-(\d+)",
                      d.log.read_text(errors="replace"))
    acknowledged = {(st, n) for st, a, b in said for n in range(int(a), int(b) + 1)}
    lost_said = acknowledged - set(delivered)
    lost = set(journalled) - set(delivered)
    dup_msgs = len(sub.on("events")) - len(delivered)
    streams = sorted({k[0] for k in delivered})
    _figure(kind="powercut", seconds=POWERCUT_S, sync_ms=POWERCUT_SYNC_MS, seed=seed,
            kills=kills, broker_flaps=flaps[0],
            journalled=len(journalled), acknowledged=len(acknowledged),
            delivered=len(delivered), redelivered=dup_msgs, lost_acknowledged=len(lost_said),
            lost=len(lost), conflicts=len(conflicts), streams=len(streams))
    assert kills >= 3 and journalled, (kills, len(journalled))
    # (A kill between a commit and its log line leaves an event delivered but not "said".)
    assert acknowledged and len(acknowledged) >= len(delivered) - kills
    assert not lost_said, (sorted(lost_said)[:10], seed)
    assert not lost, (sorted(lost)[:10], seed)
    assert not conflicts, (conflicts[:3], seed)  # (stream, seq) never names two events
    for s in streams:  # no gap inside a stream: nothing numbered was lost either
        seqs = sorted(k[1] for k in delivered if k[0] == s)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), (s, seqs, seed)


def test_another_client_with_the_daemons_client_id_is_named(tmp_path: Path,
                                                            clip: Path) -> None:  # noqa: F811
    """A second client with the daemon's client id (a second device with the same
    annotation.device_id): Mosquitto closes the older connection without a word, each takes
    it back from the other, and the log said only 'lost: Unspecified error' each time."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    broker = Broker(tmp_path, free_port())
    broker.start()
    d = Daemon(tmp_path, broker.port, clip, device="twin", loop=True,
               mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 0.5})
    sub = Subscriber(broker.port).start()
    try:
        d.start()
        wait_until(lambda: any(s["state"] == "online" for s in _status(sub)), 60, "online")
        for _ in range(4):  # the twin connects, the daemon takes the id back, and again
            twin = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgepose-twin",
                               protocol=mqtt.MQTTv5)
            twin.connect("127.0.0.1", broker.port)
            twin.loop_start()
            time.sleep(1.0)
            twin.loop_stop()
            twin.disconnect()
        wait_until(lambda: "is another client using the client id 'edgepose-twin'"
                   in d.output(), 10, "the hint in the log")
        d.signal(signal.SIGTERM)
        assert d.wait(30) == 0, d.output()
    finally:
        d.kill()
        sub.stop()
        broker.stop()
    assert d.output().count("is another client using") == 1
