"""The service's config sections, secrets, and the deploy/ folder: the example config validates,
``validate-config`` names every bad key, secrets come from credentials or the environment, the
scripts are shellcheck-clean, and the example Mosquitto config really bridges to a central
broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require

from edge import cli
from edge.config import Config, ConfigError, load_config, load_secrets, parse_config
from edge.service import state_dir

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def test_example_config_validates_and_sets_every_service_section() -> None:
    config = load_config(DEPLOY / "config.example.toml")
    assert config.mqtt.events_queue == 10_000 and config.mqtt.pose_qos == 0
    assert config.mqtt.home_assistant.enabled is False
    assert config.service.watchdog is True
    text = (DEPLOY / "config.example.toml").read_text()
    for section in ("source", "models", "scheduler", "tracking", "mqtt", "mqtt.tls",
                    "mqtt.home_assistant", "service", "logging"):
        assert f"[{section}]" in text


def test_ansible_template_renders_a_valid_config(tmp_path: Path) -> None:
    """The Jinja template with its defaults filled in by hand (no Ansible here)."""
    text = (DEPLOY / "ansible" / "templates" / "config.toml.j2").read_text()
    subs = {"{{ ansible_managed }}": "managed", "{{ edge_pose_source }}": "picamera2",
            "{{ edge_pose_landmark }}": "full", "{{ edge_pose_max_persons }}": "4",
            "{{ inventory_hostname | regex_replace('[^A-Za-z0-9_.-]', '_') }}": "pi-door",
            "{{ edge_pose_mqtt_host }}": "localhost", "{{ edge_pose_mqtt_port }}": "1883",
            "{{ edge_pose_mqtt_username }}": "pi-door",
            "{{ edge_pose_home_assistant | bool | lower }}": "true"}
    for k, v in subs.items():
        text = text.replace(k, v)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("{%"))
    path = tmp_path / "config.toml"
    path.write_text(text)
    c = load_config(path)
    assert c.annotation.device_id == "pi-door" and c.mqtt.username == "pi-door"


def test_validate_config_names_every_bad_service_key(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nport = 70000\npose_qos = 3\npassword = "plain"\n'
                   "reconnect_min_s = 10\nreconnect_max_s = 5\n"
                   "[mqtt.tls]\ncert_file = \"/x.crt\"\n"
                   "[mqtt.home_assistant]\ndiscovery_prefix = \"home assistant\"\n"
                   "[service]\nshutdown_timeout_s = -1\nwatchdgo = true\n")
    assert cli.main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("mqtt.port", "mqtt.pose_qos", "mqtt.password: unknown key",
                "mqtt.tls", "mqtt.home_assistant.discovery_prefix",
                "service.shutdown_timeout_s", "service.watchdgo: unknown key"):
        assert key in err, err
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"reconnect_min_s": 10, "reconnect_max_s": 5}})
    assert e.value.errors[0][0] == "mqtt"


def test_secrets_credential_wins_over_environment(tmp_path: Path) -> None:
    config = parse_config({"mqtt": {"username": "edge"}})
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {"EDGE_POSE_MQTT_PASSWORD": "from-env"}
    assert load_secrets(config, env).mqtt_password == "from-env"
    (creds / "mqtt_password").write_text("from-credential\n")
    s = load_secrets(config, {**env, "CREDENTIALS_DIRECTORY": str(creds)})
    assert s.mqtt_password == "from-credential" and "from-credential" not in repr(s)
    (creds / "mqtt_password").write_text("")  # the installer's empty placeholder
    assert load_secrets(config, {**env, "CREDENTIALS_DIRECTORY": str(creds)}
                        ).mqtt_password == "from-env"
    assert load_secrets(config, {"CREDENTIALS_DIRECTORY": str(creds)}).mqtt_password is None
    other = parse_config({"mqtt": {"password_env": "MY_PW", "password_credential": "pw"}})
    assert load_secrets(other, {"MY_PW": "x"}).mqtt_password == "x"


def test_state_dir_from_config_then_systemd_then_default() -> None:
    assert state_dir(parse_config({"service": {"state_dir": "/srv/x"}}),
                     {"STATE_DIRECTORY": "/var/lib/edge-pose"}) == Path("/srv/x")
    assert state_dir(Config(), {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == Path(
        "/var/lib/a")
    assert state_dir(Config(), {}) == Path("/var/lib/edge-pose")


def test_daemon_subcommand_reports_a_bad_config(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nprot = 1883\n")
    assert cli.main(["daemon", "--config", str(bad)]) == 2
    assert "mqtt.prot: unknown key" in capsys.readouterr().err


def test_scripts_are_shellcheck_clean() -> None:
    require("shellcheck", "apt-get install shellcheck")
    scripts = [DEPLOY / "install.sh", DEPLOY / "uninstall.sh",
               *sorted((DEPLOY / "ci").glob("*.sh")), REPO / ".ci" / "run"]
    res = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_scripts_refuse_without_root_or_with_unknown_arguments() -> None:
    for script in ("install.sh", "uninstall.sh"):
        res = subprocess.run(["bash", str(DEPLOY / script), "--bogus"], capture_output=True,
                             text=True)
        assert res.returncode != 0 and "unknown argument" in res.stderr


@pytest.mark.parametrize(("arch", "reason"), [
    ("armhf", "needs a 64-bit system"),   # 32-bit Raspberry Pi OS, even on a 64-bit kernel
    ("i386", "needs a 64-bit system"),
    ("riscv64", "runs on arm64 and amd64"),
])
def test_install_refuses_unsupported_architectures_up_front(tmp_path: Path, arch: str,
                                                             reason: str) -> None:
    """A stand-in ``dpkg`` reports the userland's architecture (no 32-bit board here); the
    script stops before touching apt, pip or the prefix, even as root."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg").write_text(f'#!/bin/sh\n[ "$1" = --print-architecture ] && echo {arch}\n')
    (fake / "dpkg").chmod(0o755)
    prefix = tmp_path / "prefix"
    res = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--prefix", str(prefix)],
                         env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"unsupported architecture {arch}" in res.stderr and reason in res.stderr
    assert "==>" not in res.stdout and not prefix.exists()


def test_install_ignores_the_boards_pip_index_for_the_pinned_install(tmp_path: Path) -> None:
    """install.sh's own pip command line, run with an index set every way a board can set one
    (config files and environment): pip sees none of them. (The arm64 check runs the whole
    install with a pip.conf that sets no-index.)"""
    text = (DEPLOY / "install.sh").read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("pip=("))
    last = next(i for i in range(first, len(lines)) if lines[i].rstrip().endswith(")"))
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nextra-index-url = file:///board/index\nno-index = true\n")
    (tmp_path / "pip").mkdir()
    (tmp_path / "pip" / "pip.conf").write_text(conf.read_text())
    script = "\n".join([f"venv_py={sys.executable}", *lines[first:last + 1],
                        '"${pip[@]}" config list'])
    env = {**os.environ, "PIP_CONFIG_FILE": str(conf), "XDG_CONFIG_HOME": str(tmp_path),
           "PIP_EXTRA_INDEX_URL": "file:///board/env", "PIP_INDEX_URL": "file:///board/env",
           "PIP_FIND_LINKS": "/board/wheels", "PIP_NO_INDEX": "1"}
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "board" not in res.stdout and "index" not in res.stdout, res.stdout
    control = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert "file:///board/index" in control.stdout, control.stdout


def test_example_mosquitto_config_bridges_to_a_central_broker(tmp_path: Path) -> None:
    """The example config, with its paths and addresses pointed at tmp_path and loopback."""
    require("mosquitto", "apt-get install mosquitto")
    from test_service import Broker, Subscriber, free_port, wait_until

    central = Broker(tmp_path, free_port())
    central.start()
    local_port = free_port()
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "edge-pose-1", "x"], check=True,
                   capture_output=True)
    text = (DEPLOY / "mosquitto" / "edge-pose.conf").read_text()
    acl = tmp_path / "acl"
    acl.write_text((DEPLOY / "mosquitto" / "acl").read_text())
    text = (text.replace("/etc/mosquitto/passwd", str(pw))
            .replace("/etc/mosquitto/acl", str(acl))
            .replace("persistence true", "persistence false")
            .replace("listener 1883 127.0.0.1", f"listener {local_port} 127.0.0.1")
            .replace("mqtt.example.com:8883", f"127.0.0.1:{central.port}"))
    lines = []
    skip_tls = False
    for line in text.splitlines():
        # The TLS listener and the bridge's TLS need certificates: tested in test_service.
        if line.startswith("listener 8883"):
            skip_tls = True
            continue
        if skip_tls and line.startswith(("cafile", "certfile", "keyfile", "tls_version")):
            continue
        if line.startswith(("bridge_cafile", "bridge_insecure", "remote_username",
                            "remote_password")):
            continue
        lines.append(line)
    device = tmp_path / "device.conf"
    device.write_text("user root\n" + "\n".join(lines) + "\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(device)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _accepting(local_port), 10, "the device broker")
        watcher = Subscriber(central.port, topics=("edgepose/#",)).start()
        dev = Subscriber(local_port, topics=("edgepose/edge-pose-1/set/#",),
                         auth=("edge-pose-1", "x")).start()
        time.sleep(1.0)  # the bridge connects
        dev.publish("edgepose/edge-pose-1/availability", "online", retain=True)
        wait_until(lambda: bool(watcher.on("availability")), 10, "the bridged message")
        watcher.publish("edgepose/edge-pose-1/set/enabled", "false")
        wait_until(lambda: bool(dev.on("set/enabled")), 10, "the bridged command")
        watcher.stop()
        dev.stop()
    finally:
        proc.terminate()
        proc.wait(10)
        central.stop()


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
