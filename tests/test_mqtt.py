"""The pure parts of the daemon's MQTT side: command validation, the event filter, the durable
event queue, sd_notify, throttling flags and Home Assistant discovery payloads."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from test_journal import killed

from edge.annotation import Annotation
from edge.comms.commands import CommandError, Controls, parse_command
from edge.comms.events import EventFilter, EventQueue
from edge.comms.homeassistant import discovery_messages, node_id
from edge.comms.mqtt import backoff_s
from edge.comms.system import decode_throttled
from edge.sdnotify import Notifier
from edge.track import TrackEvent
from edge.types import Frame

EDGE = Path(__file__).resolve().parent.parent / "edge"


# ------------------------------------------------------------------------------- commands

@pytest.mark.parametrize(("name", "payload", "value"), [
    ("enabled", b"true", True), ("enabled", b"false", False), ("enabled", b"ON", True),
    ("enabled", b" off\n", False), ("max_persons", b"1", 1), ("max_persons", b"32", 32),
    ("max_persons", b"3.0", 3), ("detector_hz", b"2", 2.0), ("detector_hz", b"0.5", 0.5),
    ("detector_hz", b"15", 15.0), ("detector_hz", b"0.1", 0.1),
])
def test_valid_commands(name: str, payload: bytes, value: Any) -> None:
    got = parse_command(name, payload, detector_hz_max=15.0)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("name", "payload", "why"), [
    ("nope", b"1", "unknown setting"),
    ("max_persons", b"3" + b" " * 300, "over the limit"),
    ("max_persons", b"\xff", "not UTF-8"),
    ("max_persons", b"three", "not a JSON value"),
    ("max_persons", b"", "not a JSON value"),
    ("max_persons", b"0", "must be in"),
    ("max_persons", b"33", "must be in"),
    ("max_persons", b"2.5", "integer"),
    ("max_persons", b"true", "takes a number"),
    ("max_persons", b"\"3\"", "takes a number"),
    ("max_persons", b"{\"v\": 3}", "takes a number"),
    ("enabled", b"1", "true/false"),
    ("enabled", b"\"yes\"", "true/false"),
    ("detector_hz", b"0", "must be in"),
    ("detector_hz", b"16", "must be in"),
    ("detector_hz", b"NaN", "must be in"),
    ("detector_hz", b"Infinity", "must be in"),
    ("detector_hz", b"1e999", "must be in"),
    ("detector_hz", b"1e-320", "must be in"),
    ("detector_hz", b"0.09", "must be in"),
])
def test_invalid_commands_are_refused_with_a_reason(name: str, payload: bytes,
                                                    why: str) -> None:
    with pytest.raises(CommandError, match=why):
        parse_command(name, payload, max_bytes=256, detector_hz_max=15.0)


def test_detector_hz_is_capped_at_60_hz_whatever_the_tick_rate() -> None:
    assert parse_command("detector_hz", b"60", detector_hz_max=240.0) == 60.0
    with pytest.raises(CommandError, match=r"\[0.1, 60\]"):
        parse_command("detector_hz", b"61", detector_hz_max=240.0)


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    waits = [backoff_s(a, 0.5, 3.0, rng) for a in range(40)]
    assert 0.25 <= waits[0] <= 0.5 and all(w <= 3.0 for w in waits)
    assert all(w >= 1.5 for w in waits[3:])  # 0.5 * 2**3 = 4 > 3: capped, jittered to >= half
    assert len({round(w, 6) for w in waits[3:]}) > 30  # not in step with other devices


def test_controls_change_only_on_valid_commands() -> None:
    c = Controls(enabled=True, max_persons=4, detector_hz=5.0, detector_hz_max=10.0)
    with pytest.raises(CommandError):
        c.apply("max_persons", b"99")
    assert c.snapshot() == {"enabled": True, "max_persons": 4, "detector_hz": 5.0}
    assert c.apply("max_persons", b"2") == 2
    assert c.apply("enabled", b"OFF") is False
    assert c.snapshot() == {"enabled": False, "max_persons": 2, "detector_hz": 5.0}


# ---------------------------------------------------------------------------- event filter

def _frame(i: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), i, int(i * 1e8), i * 0.1)


def _ann(i: int, ids: list[int]) -> Annotation:
    return Annotation(i, i * 0.1, len(ids), {"persons": [{"id": t} for t in ids]})


def test_filter_announces_tracks_when_first_published_and_hides_unshown_twins() -> None:
    f = EventFilter("dev", wall_clock=lambda: 1000.0)
    # Tick 0: tracks 1 and 2 open; neither is published yet (confirmation).
    out = f.update(_frame(0), _ann(0, []), [TrackEvent("entered", 1, 0.0),
                                            TrackEvent("entered", 2, 0.0)])
    assert out == []
    # Tick 1: 2 was a twin of 1 and is merged away; 1 is published.
    out = f.update(_frame(1), _ann(1, [1]), [TrackEvent("merged", 2, 0.1, other_id=1)])
    assert [(e["kind"], e["track_id"]) for e in out] == [("entered", 1)]
    assert out[0]["t_source"] == 0.0 and out[0]["frame_id"] == 1
    assert out[0]["ts"] == pytest.approx(1000.0 - 0.1)
    # Tick 2: 1 leaves, 3 re-uses a lost id and is shown at once.
    out = f.update(_frame(2), _ann(2, [3]), [TrackEvent("left", 1, 0.2),
                                             TrackEvent("reassigned", 3, 0.2)])
    assert [(e["kind"], e["track_id"]) for e in out] == [("left", 1), ("reassigned", 3)]
    # Disabling: every shown track leaves.
    out = f.leave_all(_frame(3))
    assert [(e["kind"], e["track_id"]) for e in out] == [("left", 3)]
    assert f.shown == frozenset()


def test_filter_announces_a_track_it_never_saw_open() -> None:
    f = EventFilter("dev")
    out = f.update(_frame(5), _ann(5, [7]), [])
    assert [(e["kind"], e["track_id"]) for e in out] == [("entered", 7)]


# ------------------------------------------------------------------------ durable event queue

def _ev(n: int) -> dict[str, Any]:
    return {"v": 1, "device_id": "dev", "kind": "entered", "track_id": n, "other_id": None,
            "ts": 1.0, "t_source": 1.0, "frame_id": n}


def test_queue_numbers_acks_and_survives_a_restart(tmp_path: Path) -> None:
    q = EventQueue(tmp_path, maxlen=100)
    evs = [q.add(_ev(i)) for i in range(5)]
    assert [e["seq"] for e in evs] == [1, 2, 3, 4, 5]
    schema = json.loads((EDGE / "events_schema.json").read_text())
    for e in evs:
        jsonschema.validate(e, schema)
    assert q.ack(1) and q.ack(3) and not q.ack(3)
    # As after SIGKILL (no close): only what was committed remains; with sync_ms = 0 nothing
    # is in doubt, so the numbering goes on under the same stream.
    killed(q)
    q2 = EventQueue(tmp_path, maxlen=100)
    assert q2.seqs() == [2, 4, 5] and q2.stream == q.stream and not q2.report.new_stream
    assert q2.add(_ev(9))["seq"] == 6
    assert [e["seq"] for e in q2.after(2, 10)] == [4, 5, 6]
    assert [e["seq"] for e in q2.after(0, 2)] == [2, 4]
    assert q2.ack_many([2, 4, 5, 6, 99]) == 4
    q2.close()
    q3 = EventQueue(tmp_path)
    assert q3.stream == q.stream and q3.seqs() == []
    assert q3.add(_ev(0))["seq"] == 7  # numbers never repeat
    q3.close()


def test_queue_drops_the_oldest_when_full_and_counts_it(tmp_path: Path) -> None:
    q = EventQueue(tmp_path, maxlen=3)
    for i in range(5):
        q.add(_ev(i))
    assert q.seqs() == [3, 4, 5] and q.dropped == 2
    q.close()
    q2 = EventQueue(tmp_path, maxlen=3)
    assert q2.seqs() == [3, 4, 5]
    q2.close()
    smaller = EventQueue(tmp_path, maxlen=2)  # a smaller limit after a restart
    assert smaller.seqs() == [4, 5] and smaller.dropped == 1
    smaller.close()


def test_queue_in_memory_without_a_state_dir() -> None:
    q = EventQueue(None, maxlen=2)
    q.add(_ev(0))
    assert len(q) == 1 and q.path is None
    q.close()


# -------------------------------------------------------------------------------- sd_notify

@pytest.mark.parametrize("abstract", [False, True])
def test_notify_reaches_path_and_abstract_sockets(tmp_path: Path, abstract: bool) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"edge-pose-test-{tmp_path.name}"
        sock.bind("\0" + name)
        addr = "@" + name
    else:
        addr = str(tmp_path / "notify")
        sock.bind(addr)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "4000000"})
        assert n.ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
        assert n.watchdog() and not n.watchdog()  # rate-limited to 4 per interval
        assert sock.recv(100) == b"WATCHDOG=1"
        n.close()
    finally:
        sock.close()


def test_notify_is_a_no_op_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()
    other_pid = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000",
                          "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_s is None  # the watchdog is meant for another process
    odd = Notifier({"WATCHDOG_USEC": "\u00b2"})  # isdigit() but not int(): was a ValueError
    assert odd.watchdog_s is None


# ------------------------------------------------------------------- throttling, discovery

def test_throttled_word_is_decoded() -> None:
    flags = decode_throttled(0x50005)
    assert flags["raw"] == "0x50005"
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    assert not any(v for k, v in decode_throttled(0).items() if k != "raw")


def test_home_assistant_discovery_payloads() -> None:
    msgs = discovery_messages("homeassistant", "edgepose/pi.door", "pi.door")
    assert node_id("pi.door") == "edgepose_pi_door"
    topics = [t for t, _ in msgs]
    assert topics == ["homeassistant/sensor/edgepose_pi_door/people/config",
                      "homeassistant/sensor/edgepose_pi_door/fps/config"]
    for _, p in msgs:
        assert p["state_topic"] == "edgepose/pi.door/stats"
        assert p["availability"][0]["topic"] == "edgepose/pi.door/availability"
        assert p["device"]["identifiers"] == ["edgepose_pi_door"]
        assert p["unique_id"].startswith("edgepose_pi_door_")
