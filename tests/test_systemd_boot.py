"""The unit under a real systemd: a Debian container booted with systemd as PID 1
(``systemd-nspawn``, see deploy/ci/container.py), edge-pose installed in it by
``deploy/install.sh`` on a file source, with a Mosquitto in the container.

Shown, in order: ``READY=1`` reaches systemd (``is-active`` after a ``Type=notify`` start); under
``DynamicUser``, the seccomp filter, ``ProtectProc=invisible`` and the ``video`` group the daemon
publishes over MQTT, writes its state folder and may open ``/dev/video*`` (a dummy node: no
v4l2loopback here), while a unit without the group may not; ``WatchdogSec`` restarts a frozen
(SIGSTOPped) daemon; ``install.sh`` again after a version change keeps the config and the event
journal, whose events then reach the broker; ``systemctl stop`` publishes ``stopped``.

Marked ``system``: deselected by default (root, ~3-5 min). CI runs it wherever
``deploy/ci/container.py probe`` says a systemd container can boot, and there it must pass.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_service import Subscriber, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "ci"))
from container import Container, capability  # noqa: E402

pytestmark = pytest.mark.system

DEVICE = "ci-box"
STATE = "/var/lib/private/edge-pose"
CLIP = "/srv/edge-pose/demo.mp4"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def box(port: int) -> Iterator[Container]:
    reason = capability()
    if reason is not None:
        pytest.fail(f"this machine cannot boot a systemd container: {reason}")
    with Container() as c:
        c.write("/etc/mosquitto/conf.d/ci.conf", f"listener {port} 127.0.0.1\n"
                "allow_anonymous true\n")
        c.run("systemctl", "restart", "mosquitto")
        (c.root / CLIP.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (c.root / CLIP.lstrip("/")).write_bytes(
            (REPO / "edge" / "assets" / "sports2d_demo.mp4").read_bytes())
        (c.root / CLIP.lstrip("/")).chmod(0o644)
        c.write("/root/config.toml", f"""
[source]
uri = "{CLIP}"
loop = true
[models]
landmark = "lite"
threads = 1
[scheduler]
mode = "realtime"
rate_hz = 6.0
detector_hz = 2.0
[annotation]
device_id = "{DEVICE}"
[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 2
""")
        # A dummy camera node with a real camera's permissions (root:video 0660), and a
        # check in the unit's own sandbox that the daemon's user may open it read-write.
        c.run("sh", "-c", "mknod -m 0660 /dev/video0 c 1 3 && chgrp video /dev/video0")
        c.write("/etc/systemd/system/edge-pose.service.d/ci-video.conf",
                "[Service]\nExecStartPre=/bin/sh -c ': <> /dev/video0'\n")
        yield c


@pytest.fixture(scope="module")
def sub(box: Container, port: int) -> Iterator[Subscriber]:
    s = Subscriber(port, topics=(f"edgepose/{DEVICE}/#",)).start()
    yield s
    s.stop()


def _show(box: Container, *props: str) -> dict[str, str]:
    out = box.run("systemctl", "show", "edge-pose.service", *[f"-p{p}" for p in props]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_install_and_ready_reaches_systemd(box: Container) -> None:
    res = box.run("bash", "/root/edge-pose/deploy/install.sh", "--config", "/root/config.toml",
                  timeout=900)
    assert "==> done" in res.stdout, res.stdout + res.stderr
    assert box.run("systemctl", "is-active", "edge-pose").stdout.strip() == "active"
    props = _show(box, "Type", "StatusText", "NotifyAccess", "WatchdogUSec", "MainPID")
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert props["WatchdogUSec"] == "30s"
    # The STATUS= messages only reach systemd through the notify socket, like READY=1.
    assert props["StatusText"], props
    assert box.run("systemctl", "is-enabled", "edge-pose").stdout.strip() == "enabled"


def test_sandboxed_daemon_publishes_keeps_state_and_may_open_the_camera(
        box: Container, sub: Subscriber) -> None:
    props = _show(box, "DynamicUser", "ProtectProc", "SystemCallFilter", "SupplementaryGroups",
                  "MainPID", "ExecStartPre")
    assert props["DynamicUser"] == "yes" and props["ProtectProc"] == "invisible"
    assert props["SystemCallFilter"] and props["SupplementaryGroups"] == "video"
    assert "/dev/video0" in props["ExecStartPre"], props
    assert re.search(r"status=0[/ ;]", props["ExecStartPre"]), props["ExecStartPre"]
    status = box.run("cat", f"/proc/{props['MainPID']}/status").stdout
    uid_line = re.search(r"^Uid:\s+(\d+)", status, re.M)
    groups_line = re.search(r"^Groups:(.*)$", status, re.M)
    assert uid_line is not None and groups_line is not None, status
    uid = int(uid_line.group(1))
    assert 61184 <= uid <= 65519, f"uid {uid} is not in DynamicUser's range"
    video_gid = box.run("getent", "group", "video").stdout.split(":")[2]
    assert video_gid in groups_line.group(1).split()
    assert re.search(r"^Seccomp:\s+2", status, re.M), "seccomp filter mode"
    wait_until(lambda: "online" in sub.payloads("availability"), 60, "availability online")
    wait_until(lambda: bool(sub.on("stats")), 30, "a stats message")
    wait_until(lambda: bool(sub.on("pose")), 60, "a pose message")
    ls = box.run("stat", "-c", "%u %a %n", STATE, f"{STATE}/events.db").stdout.split("\n")
    assert ls[0].split()[:2] == [str(uid), "700"], ls
    assert ls[1].split()[0] == str(uid), ls
    # The control: without the video group the same sandbox may not open the node.
    res = box.run("systemd-run", "--wait", "--quiet", "-pDynamicUser=yes",
                  "-pSystemCallFilter=@system-service", "sh", "-c", ": <> /dev/video0",
                  check=False)
    assert res.returncode != 0


def test_watchdog_restarts_a_frozen_daemon(box: Container, sub: Subscriber) -> None:
    before = _show(box, "MainPID", "NRestarts")
    box.run("sh", "-c", f"kill -STOP {before['MainPID']}")

    def restarted() -> bool:
        now = _show(box, "MainPID", "NRestarts", "ActiveState")
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1)

    # WatchdogSec=30, then SIGABRT (+SIGCONT), RestartSec=5, models loaded again.
    wait_until(restarted, 150, "the watchdog restart")
    log = box.run("journalctl", "-u", "edge-pose", "--no-pager", "-o", "cat").stdout
    assert "Watchdog timeout" in log, log[-2000:]


def test_reinstall_with_a_new_version_keeps_config_and_event_journal(
        box: Container, port: int) -> None:
    config_before = box.run("cat", "/etc/edge-pose/config.toml").stdout
    # A consumer that must not miss events: a persistent session with QoS 1 subscriptions,
    # which the container's Mosquitto keeps (persistence true) while it and the broker are away.
    late = Subscriber(port, topics=(f"edgepose/{DEVICE}/events",),
                      persistent_session=True).start()
    try:
        _reinstall_while_the_broker_is_away(box, late, config_before)
    finally:
        late.stop()


#: Prints the journal's pending events (SQLite, ``events.db``) as one JSON list.
_READ_JOURNAL = (
    "import json, sqlite3, sys\n"
    "try:\n"
    "    db = sqlite3.connect(sys.argv[1], timeout=5)\n"
    "    rows = db.execute('SELECT body FROM events ORDER BY seq').fetchall()\n"
    "except sqlite3.Error:\n"
    "    rows = []\n"
    "print(json.dumps([json.loads(b) for (b,) in rows]))\n")


def _pending(box: Container) -> list[dict[str, object]]:
    res = box.run("/opt/edge-pose/venv/bin/python", "-c", _READ_JOURNAL, f"{STATE}/events.db",
                  check=False)
    try:
        events: list[dict[str, object]] = json.loads(res.stdout or "[]")
    except ValueError:
        return []
    return events


def _reinstall_while_the_broker_is_away(box: Container, late: Subscriber,
                                        config_before: str) -> None:
    # The broker goes away: events stay in the journal (on disk) until it is back.
    box.run("systemctl", "stop", "mosquitto")
    wait_until(lambda: bool(_pending(box)), 120, "an event journaled while the broker is away")
    box.run("systemctl", "stop", "edge-pose")
    journaled = {(str(e["stream"]), int(str(e["seq"]))) for e in _pending(box)}
    for f in ("pyproject.toml", "edge/__init__.py"):
        box.run("sed", "-i", 's/^\\(version = \\|__version__ = \\)"0.1.0"/\\1"0.1.1"/',
                f"/root/edge-pose/{f}")
    res = box.run("bash", "/root/edge-pose/deploy/install.sh", timeout=900)
    assert "==> done" in res.stdout, res.stdout + res.stderr
    assert box.run("/opt/edge-pose/venv/bin/edge-pose", "--version").stdout.strip() == \
        "edge-pose 0.1.1"
    assert box.run("cat", "/etc/edge-pose/config.toml").stdout == config_before
    assert box.run("systemctl", "is-active", "edge-pose").stdout.strip() == "active"
    assert journaled <= {(str(e["stream"]), int(str(e["seq"]))) for e in _pending(box)}
    # The broker is back: the journaled events reach the consumer, same stream and numbers
    # (the daemon's reconnect backoff may make it wait up to mqtt.reconnect_max_s, 60 s).
    box.run("systemctl", "start", "mosquitto")
    wait_until(lambda: journaled <= {(str(m.json()["stream"]), int(m.json()["seq"]))
                                     for m in late.on("events")}, 120, "the journaled events")


def test_stop_publishes_stopped(box: Container, sub: Subscriber) -> None:
    wait_until(lambda: sub.payloads("availability")[-1:] == ["online"], 60, "online again")
    box.run("systemctl", "stop", "edge-pose")
    wait_until(lambda: sub.payloads("availability")[-1:] == ["stopped"], 30, "stopped")
    assert box.run("systemctl", "is-active", "edge-pose", check=False).stdout.strip() == \
        "inactive"


def test_uninstall_keeps_config_and_state_unless_purged(box: Container) -> None:
    res = box.run("bash", "/root/edge-pose/deploy/uninstall.sh")
    assert "kept /etc/edge-pose" in res.stdout
    assert box.run("systemctl", "cat", "edge-pose", check=False).returncode != 0
    assert box.run("test", "-e", "/opt/edge-pose", check=False).returncode != 0
    assert box.run("test", "-s", "/etc/edge-pose/config.toml", check=False).returncode == 0
    assert box.run("test", "-d", STATE, check=False).returncode == 0
    box.run("bash", "/root/edge-pose/deploy/uninstall.sh", "--purge")
    for path in ("/etc/edge-pose", STATE):
        assert box.run("test", "-e", path, check=False).returncode != 0
