"""``systemd/edge-pose-fuse.service`` under a real systemd: the Debian container of
tests/test_systemd_boot.py (``deploy/ci/container.py``), edge-pose installed by
``deploy/install.sh``, the fuse unit and a fuse config with the Pose2Sim calibration added.

Shown: ``READY=1`` reaches systemd (``is-active`` after a ``Type=notify`` start); under
``DynamicUser``, the seccomp filter, ``PrivateUsers``, ``MemoryDenyWriteExecute`` and
``ProcSubset=pid`` the worker fuses the four views replayed on the container's Mosquitto,
publishes people and writes its JSONL file in its state directory; ``WatchdogSec`` restarts a
frozen (SIGSTOPped) worker; ``systemctl stop`` publishes ``stopped``.

Marked ``system``: deselected by default (root, ~3-5 min); run with ``pytest -m system`` where
``deploy/ci/container.py probe`` says a systemd container can boot.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_fuse_live import CAMS, Publisher, replay
from test_service import Subscriber, free_port, wait_until

from bench.fuse_data import Scene, scene

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy" / "ci"))
from container import Container, capability  # noqa: E402

pytestmark = pytest.mark.system

STATE = "/var/lib/private/edge-pose-fuse"
UNIT = "edge-pose-fuse"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def single() -> Scene:
    return scene("single")


@pytest.fixture(scope="module")
def views(single: Scene) -> dict[str, list[dict[str, Any]]]:
    return {cam: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            for cam, path in zip(CAMS, single.jsonl, strict=True)}


@pytest.fixture(scope="module")
def box(port: int, single: Scene) -> Iterator[Container]:
    reason = capability()
    if reason is not None:
        pytest.fail(f"this machine cannot boot a systemd container: {reason}")
    with Container() as c:
        c.write("/etc/mosquitto/conf.d/ci.conf", f"listener {port} 127.0.0.1\n"
                "allow_anonymous true\n")
        c.run("systemctl", "restart", "mosquitto")
        c.write("/root/config.toml", f"""
[source]
uri = "demo"
[models]
landmark = "lite"
threads = 1
[scheduler]
mode = "realtime"
rate_hz = 2.0
detector_hz = 1.0
[annotation]
device_id = "ci-box"
[mqtt]
host = "127.0.0.1"
port = {port}
""")
        res = c.run("bash", "/root/edge-pose/deploy/install.sh", "--config",
                    "/root/config.toml", timeout=900, check=False)
        assert "==> done" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
        c.run("systemctl", "disable", "--now", "edge-pose", check=False)  # only the worker
        c.write("/etc/edge-pose/Calib.qca.txt", single.calib.read_text(encoding="utf-8"))
        devices = "\n".join(f'{d} = "{d}"' for d in CAMS)
        c.write("/etc/edge-pose/fuse.toml", f"""
[scene]
name = "lab"
calibration = "Calib.qca.txt"
[scene.devices]
{devices}
[sync]
fps = 60.0
[fuse]
max_wait_s = 0.5
[mqtt]
host = "127.0.0.1"
port = {port}
stats_interval_s = 1.0
[output]
jsonl = "{STATE.replace('/private', '')}/fused.jsonl"
""")
        c.write(f"/etc/systemd/system/{UNIT}.service",
                (REPO / "systemd" / f"{UNIT}.service").read_text(encoding="utf-8"))
        c.run("systemctl", "daemon-reload")
        yield c


@pytest.fixture(scope="module")
def sub(box: Container, port: int) -> Iterator[Subscriber]:
    s = Subscriber(port, topics=("edgepose/fused/#",)).start()
    yield s
    s.stop()


def _show(box: Container, *props: str) -> dict[str, str]:
    out = box.run("systemctl", "show", f"{UNIT}.service", *[f"-p{p}" for p in props]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_start_reaches_ready(box: Container) -> None:
    res = box.run("systemctl", "start", UNIT, check=False, timeout=120)
    log = box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert res.returncode == 0, res.stderr + log[-3000:]
    assert box.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    props = _show(box, "Type", "NotifyAccess", "WatchdogUSec", "StatusText")
    assert props["Type"] == "notify" and props["NotifyAccess"] == "main"
    assert props["WatchdogUSec"] == "20s" and props["StatusText"], props


def test_sandboxed_worker_fuses_and_writes_its_state(
        box: Container, sub: Subscriber, port: int,
        views: dict[str, list[dict[str, Any]]]) -> None:
    props = _show(box, "DynamicUser", "MainPID", "PrivateUsers", "MemoryDenyWriteExecute")
    assert props["DynamicUser"] == "yes" and props["PrivateUsers"] == "yes"
    assert props["MemoryDenyWriteExecute"] == "yes"
    status = box.run("cat", f"/proc/{props['MainPID']}/status").stdout
    assert re.search(r"^Seccomp:\s+2", status, re.M), "seccomp filter mode"
    wait_until(lambda: "online" in sub.payloads("availability"), 30, "availability online")
    pub = Publisher(port)
    try:
        replay(pub, views, range(40), hz=30.0)
    finally:
        pub.close()
    wait_until(lambda: len(sub.on("pose3d")) >= 40, 30, "40 fused frames")
    fused = [m.json() for m in sub.on("pose3d")]
    assert sum(bool(f["persons"]) for f in fused) >= 35
    assert all(set(f["frames"]) == set(CAMS) for f in fused)
    wait_until(lambda: any(m.json()["fused"] >= 40 for m in sub.on("stats")), 10, "stats")
    lines = box.run("wc", "-l", f"{STATE}/fused.jsonl").stdout.split()[0]
    assert int(lines) >= 40


def test_watchdog_restarts_a_frozen_worker(box: Container, sub: Subscriber) -> None:
    before = _show(box, "MainPID", "NRestarts")
    box.run("sh", "-c", f"kill -STOP {before['MainPID']}")

    def restarted() -> bool:
        now = _show(box, "MainPID", "NRestarts", "ActiveState")
        return (now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])
                and int(now["NRestarts"]) == int(before["NRestarts"]) + 1)

    wait_until(restarted, 90, "the watchdog restart")  # WatchdogSec=20, RestartSec=5
    log = box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert "Watchdog timeout" in log, log[-2000:]


def test_stop_publishes_stopped(box: Container, sub: Subscriber) -> None:
    n = len(sub.payloads("availability"))
    box.run("systemctl", "stop", UNIT, timeout=60)
    wait_until(lambda: "stopped" in sub.payloads("availability")[n:], 10, "stopped")
    log = box.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert "Traceback" not in log, log[-3000:]
