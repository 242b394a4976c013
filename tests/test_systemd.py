"""The systemd unit: ``systemd-analyze verify`` without a single warning, the hardening score,
and the directives the service relies on (``Type=notify``, the watchdog, no ``PrivateDevices``).

``systemd-analyze verify`` exits 0 on many bad values and only prints them, so any output fails.
It also checks that ``ExecStart``'s program exists: the test points it at this checkout's
``edge-pose`` (the installed unit uses ``/opt/edge-pose/venv``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-pose.service"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

@pytest.fixture(autouse=True)
def _systemd_analyze_installed() -> None:
    """Every test here runs the real systemd-analyze: it fails without it."""
    require("systemd-analyze", "apt-get install systemd")


def _unit_for_this_machine(tmp_path: Path) -> Path:
    exe = Path(sys.executable).parent / "edge-pose"
    assert exe.is_file(), f"{exe} missing: install the package (make setup)"
    text = UNIT.read_text(encoding="utf-8")
    assert "/opt/edge-pose/venv/bin/edge-pose" in text
    out = tmp_path / "edge-pose.service"
    out.write_text(text.replace("/opt/edge-pose/venv/bin/edge-pose", str(exe)), "utf-8")
    return out


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_verify_prints_no_warning(tmp_path: Path) -> None:
    unit = _unit_for_this_machine(tmp_path)
    assert ANALYZE is not None
    res = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    output = (res.stdout + res.stderr).strip()
    assert res.returncode == 0 and output == "", output


def test_verify_does_catch_a_bad_value(tmp_path: Path) -> None:
    """The check above is real: a bad value does print (while the exit status stays 0)."""
    unit = _unit_for_this_machine(tmp_path)
    unit.write_text(unit.read_text().replace("WatchdogSec=30", "WatchdogSec=thirty"))
    assert ANALYZE is not None
    res = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0  # the reason for parsing the output
    assert "Failed to parse sec value" in res.stdout + res.stderr


def test_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    unit = _unit_for_this_machine(tmp_path)
    assert ANALYZE is not None
    res = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    score = float(m.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{res.stdout}"


def test_unit_has_what_the_service_relies_on() -> None:
    d = _directives(UNIT.read_text(encoding="utf-8"))
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) > 0 and one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == "2"
    assert one["ProtectSystem"] == "strict"
    assert one["DynamicUser"] == "yes" and one["SupplementaryGroups"] == "video"
    assert one["StateDirectory"] == "edge-pose" and one["ConfigurationDirectory"] == "edge-pose"
    assert "PrivateDevices" not in d  # it would hide the cameras
    assert d["LoadCredential"] == ["mqtt_password:/etc/edge-pose/mqtt_password",
                                   "http_token:/etc/edge-pose/http_token"]
    assert one["ExecStart"].endswith("daemon --config /etc/edge-pose/config.toml")
    for limit in ("MemoryMax", "TasksMax", "LimitNOFILE"):
        assert limit in d
