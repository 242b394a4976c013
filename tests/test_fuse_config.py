"""The fuse worker's config and unit: the example validates, every bad key is named (exit 2),
``$share`` and wildcard topic roots are refused, a calibration with NaN or without a device's
camera is a config error naming the key and the file, secrets come from credentials or the
environment, and ``systemd/edge-pose-fuse.service`` verifies cleanly with an exposure <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from edge import cli
from edge.config import ConfigError
from edge.fuse.config import load_fuse_config, load_fuse_secrets, parse_fuse_config
from edge.fuse.service import JsonlAppender
from models.sources import POSE2SIM_CALIB, extract

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-pose-fuse.service"
EXAMPLE = REPO / "deploy" / "fuse.example.toml"
CACHE = REPO / "cache"
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="session")
def qca() -> Path:
    """The Pose2Sim demo's Qualisys calibration (pinned wheel member, sha256-checked)."""
    return extract(POSE2SIM_CALIB, CACHE / "dl", CACHE / "build" / "src" / "pose2sim")


def _example(tmp_path: Path, qca: Path, text: str | None = None) -> Path:
    """The example config beside a copy of the Pose2Sim calibration it points to."""
    shutil.copy(qca, tmp_path / "Calib.qca.txt")
    body = (text if text is not None else EXAMPLE.read_text(encoding="utf-8"))
    body = body.replace('calibration = "Calib.toml"', 'calibration = "Calib.qca.txt"')
    path = tmp_path / "fuse.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_example_validates_with_the_pose2sim_calibration(tmp_path: Path, qca: Path) -> None:
    config, calib = load_fuse_config(_example(tmp_path, qca))
    assert config.scene.name == "lab" and len(config.scene.devices) == 4
    assert config.scene.calibration == tmp_path / "Calib.qca.txt"  # relative to the file
    assert config.mqtt.topic_root == "edgepose" and config.tolerance_s == pytest.approx(
        0.5 / 30)
    assert calib is not None
    text = EXAMPLE.read_text()
    for section in ("scene", "scene.devices", "sync", "fuse", "mqtt", "mqtt.tls", "ingest",
                    "output", "service", "logging"):
        assert f"[{section}]" in text
    assert "$share" in text  # the scale section explains why shared subscriptions are not used


def test_validate_names_every_bad_key(tmp_path: Path, qca: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE.read_text().replace("[sync]\n", "[sync]\nmax_wiat_s = 1\n").replace(
        "port = 1883", 'port = "1883"').replace("queue = 512", "queue = 0").replace(
        "max_wait_s = 0.1", 'max_wait_s = "0.1"\nsmoothing = "yes"\nmin_conf = nan')
    path = _example(tmp_path, qca, text + "\n[extra]\nx = 1\n")
    assert cli.main(["fuse", "--config", str(path), "--validate"]) == 2
    err = capsys.readouterr().err
    for key in ("sync.max_wiat_s: unknown key", "mqtt.port", "ingest.queue",
                "extra: unknown key", "fuse.max_wait_s", "fuse.smoothing", "fuse.min_conf"):
        assert key in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("root", ["$share/fusers/edgepose", "edgepose/+", "edgepose/#",
                                  "edgepose//x"])
def test_shared_subscriptions_and_wildcards_are_refused(root: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {"name": "a", "calibration": "/nonexistent",
                                     "devices": {"a": "cam01", "b": "cam02"}},
                           "mqtt": {"topic_root": root}})
    assert e.value.errors[0][0].startswith("mqtt"), e.value.errors


def test_scene_needs_two_devices_with_distinct_cameras() -> None:
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {"name": "a", "calibration": "/x",
                                     "devices": {"a": "cam01"}}})
    assert e.value.errors[0][0] == "scene.devices"
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {"name": "a", "calibration": "/x",
                                     "devices": {"a": "cam01", "b": "cam01"}}})
    assert "cam01" in str(e.value)


def test_offsets_must_name_scene_devices_and_be_finite() -> None:
    scene = {"name": "a", "calibration": "/x", "devices": {"a": "cam01", "b": "cam02"}}
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {**scene, "offsets_s": {"c": 0.1}}})
    assert e.value.errors[0][0] == "scene" and "c" in e.value.errors[0][1]
    with pytest.raises(ConfigError) as e:
        parse_fuse_config({"scene": {**scene, "offsets_s": {"a": float("nan")}}})
    assert e.value.errors[0][0] == "scene.offsets_s.a"


def test_calibration_with_nan_is_a_config_error_naming_key_and_file(
        tmp_path: Path, qca: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _example(tmp_path, qca)
    bad = tmp_path / "Calib.qca.txt"
    text = bad.read_text()
    m = re.search(r'focalLengthU="[^"]+"', text)
    assert m
    bad.write_text(text[:m.start()] + 'focalLengthU="nan"' + text[m.end():])
    assert cli.main(["fuse", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "scene.calibration" in err and str(bad) in err, err
    assert "Traceback" not in err


def test_a_device_camera_missing_from_the_calibration_is_named(tmp_path: Path,
                                                               qca: Path) -> None:
    path = _example(tmp_path, qca, EXAMPLE.read_text().replace('cam04 = "cam04"',
                                                               'cam04 = "cam09"'))
    with pytest.raises(ConfigError) as e:
        load_fuse_config(path)
    assert e.value.errors[0][0] == "scene.devices.cam04" and "cam09" in e.value.errors[0][1]


def test_missing_calibration_file_is_named(tmp_path: Path, qca: Path) -> None:
    path = _example(tmp_path, qca)
    (tmp_path / "Calib.qca.txt").unlink()
    with pytest.raises(ConfigError) as e:
        load_fuse_config(path)
    assert e.value.errors[0][0] == "scene.calibration"


def test_secrets_credential_wins_over_environment(tmp_path: Path, qca: Path) -> None:
    config, _ = load_fuse_config(_example(tmp_path, qca))
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {"EDGE_POSE_MQTT_PASSWORD": "from-env"}
    assert load_fuse_secrets(config, env).mqtt_password == "from-env"
    (creds / "mqtt_password").write_text("from-credential\n")
    s = load_fuse_secrets(config, {**env, "CREDENTIALS_DIRECTORY": str(creds)})
    assert s.mqtt_password == "from-credential" and "from-credential" not in repr(s)
    assert load_fuse_secrets(config, {}).mqtt_password is None


def test_an_unwritable_jsonl_path_is_a_config_error(tmp_path: Path, qca: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    text = EXAMPLE.read_text().replace(
        '# jsonl = "/var/lib/edge-pose-fuse/fused.jsonl"', 'jsonl = "file/fused.jsonl"')
    path = _example(tmp_path, qca, text)
    assert cli.main(["fuse", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "output.jsonl" in err and "file/fused.jsonl" in err and "Traceback" not in err


def test_jsonl_appender_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "fused.jsonl"
    out = JsonlAppender(path)
    out.write({"a": 1})
    out.close()
    with open(path, "ab") as f:  # a crash in the middle of a line
        f.write(b'{"a": 2, "tor')
    out = JsonlAppender(path)
    out.write({"a": 3})
    out.close()
    assert path.read_text().splitlines() == ['{"a":1}', '{"a":3}']


# ------------------------------------------------------------------------------ systemd unit

def _unit_for_this_machine(tmp_path: Path) -> Path:
    exe = Path(sys.executable).parent / "edge-pose"
    assert exe.is_file(), f"{exe} missing: install the package (make setup)"
    text = UNIT.read_text(encoding="utf-8")
    assert "/opt/edge-pose/venv/bin/edge-pose" in text
    out = tmp_path / "edge-pose-fuse.service"
    out.write_text(text.replace("/opt/edge-pose/venv/bin/edge-pose", str(exe)), "utf-8")
    return out


def test_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "apt-get install systemd")
    res = subprocess.run([analyze, "verify", str(_unit_for_this_machine(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    output = (res.stdout + res.stderr).strip()
    assert res.returncode == 0 and output == "", output


def test_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "apt-get install systemd")
    res = subprocess.run([analyze, "security", "--offline=yes", "--no-pager",
                          str(_unit_for_this_machine(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout


def test_unit_has_what_the_service_relies_on() -> None:
    d: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            d.setdefault(key, []).append(value)
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) > 0 and one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == "2" and one["ProtectSystem"] == "strict"
    assert one["DynamicUser"] == "yes" and one["StateDirectory"] == "edge-pose-fuse"
    assert one["LoadCredential"] == "mqtt_password:/etc/edge-pose/mqtt_password"
    assert one["ExecStart"].endswith("fuse --config /etc/edge-pose/fuse.toml")
