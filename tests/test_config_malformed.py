"""Malformed configs, each through both ``edge-pose validate-config`` and ``edge-pose daemon``
(real subprocesses): exit status 2, the key path on stderr, no traceback.

Each case starts from a config the daemon would run with (the real models, the bundled clip, a
fresh state folder) and breaks one thing: a type, a range, a non-finite number, a missing or
unreadable file, a state folder that cannot hold the journal, a malformed source URI, a broken
TOML file. The daemon must refuse it before it connects anywhere or loads a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import pytest
from test_service import model_settings, toml_value

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One malformed config: ``set`` overrides ``section.key`` values (``None`` removes the
    key), ``prepare`` makes files in the test folder and may return overrides of its own,
    ``raw`` replaces the whole file, ``key`` is what stderr must name; ``daemon``: the daemon
    refuses it at start too (a file that exists but cannot be read as a source is the run's
    failure there, published as ``failed``: test_daemon_faults)."""

    name: str
    key: str
    set: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[Path], dict[str, Any]] | None = None
    raw: Callable[[Path], bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    daemon: bool = True


def _models_without(t: Path, variant: str) -> dict[str, Any]:
    """A models folder like the shipped one (files linked) whose manifest lacks the ``variant``
    lifters; the config asks for that lifter from it."""
    src = REPO / "models"
    folder = _dir(t / "models_without")
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    manifest["models"] = {k: e for k, e in manifest["models"].items()
                          if not (e["role"] == "lifter" and e["variant"] == variant)}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    for e in manifest["models"].values():
        (folder / e["file"]).symlink_to(src / e["file"])
    return {"models.lifter": variant, "models.dir": str(folder)}


def _file(p: Path, text: str = "x") -> Path:
    p.write_text(text)
    return p


def _empty_video(p: Path) -> Path:
    """A valid AVI container with no frame in it (OpenCV's writer, released at once)."""
    cv2.VideoWriter(str(p), cv2.VideoWriter.fourcc(*"MJPG"), 25, (64, 64)).release()
    assert p.stat().st_size > 0
    return p


def _dir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _creds_folder(t: Path) -> dict[str, Any]:
    _dir(t / "creds" / "mqtt_password")  # a folder where the password file should be
    return {}


def _tls(**extra: Any) -> dict[str, Any]:
    return {"mqtt.tls.enabled": True, **extra}


CASES = [
    # options that validate but cannot work
    Case("temporal lifter missing", "models.lifter", prepare=lambda t: _models_without(
        t, "temporal")),
    Case("unknown detector kind", "detector.kind", {"detector.kind": "yolo"}),
    Case("tile smaller than any person", "detector.tile_px", {"detector.tile_px": 8}),
    Case("http on another host without a token", "http.host",
         {"http.enabled": True, "http.host": "0.0.0.0"}),
    # types: no silent conversion
    Case("port as a string", "mqtt.port", {"mqtt.port": "1883"}),
    Case("loop = 'yes'", "source.loop", {"source.loop": "yes"}),
    Case("enabled = 1", "mqtt.enabled", {"mqtt.enabled": 1}),
    Case("max_persons as a float", "tracking.max_persons", {"tracking.max_persons": 2.5}),
    Case("max_persons = true", "tracking.max_persons", {"tracking.max_persons": True}),
    Case("keepalive as a string", "mqtt.keepalive_s", {"mqtt.keepalive_s": "30"}),
    Case("smoothing enabled as a string", "smoothing.enabled", {"smoothing.enabled": "true"}),
    Case("uri as a number", "source.uri", {"source.uri": 0}),
    Case("a section as a number", "scheduler", raw=lambda t: b"scheduler = 3\n"),
    Case("threads as a string", "models.threads", {"models.threads": "2"}),
    # numbers: finite, in range
    Case("rate_hz = inf", "scheduler.rate_hz", {"scheduler.rate_hz": float("inf")}),
    Case("rate_hz = nan", "scheduler.rate_hz", {"scheduler.rate_hz": float("nan")}),
    Case("detector_hz = 1e-320", "scheduler.detector_hz", {"scheduler.detector_hz": 1e-320}),
    Case("detector_hz = 1000", "scheduler.detector_hz", {"scheduler.detector_hz": 1000.0}),
    Case("max_persons = 0", "tracking.max_persons", {"tracking.max_persons": 0}),
    Case("max_persons = 2**70", "tracking.max_persons", {"tracking.max_persons": 2**70}),
    Case("min_score = -inf", "detector.min_score", {"detector.min_score": float("-inf")}),
    Case("pose_qos = 3", "mqtt.pose_qos", {"mqtt.pose_qos": 3}),
    Case("journal_sync_ms = -1", "service.journal_sync_ms", {"service.journal_sync_ms": -1}),
    Case("reconnect max < min", "mqtt", {"mqtt.reconnect_min_s": 10, "mqtt.reconnect_max_s": 1}),
    Case("width = -1", "source.width", {"source.width": -1}),
    Case("threads = 0", "models.threads", {"models.threads": 0}),
    # closed sets, patterns, unknown keys
    Case("landmark = huge", "models.landmark", {"models.landmark": "huge"}),
    Case("logging level", "logging.level", {"logging.level": "LOUD"}),
    Case("topic_root with a wildcard", "mqtt.topic_root", {"mqtt.topic_root": "a/+/b"}),
    Case("empty device_id", "annotation.device_id", {"annotation.device_id": ""}),
    Case("unknown key", "mqtt.colour", {"mqtt.colour": "red"}),
    Case("unknown section", "camera", raw=lambda t: b"[camera]\nindex = 0\n"),
    Case("host with a space", "mqtt.host", {"mqtt.host": "bad host"}),
    # TLS files
    Case("missing CA file", "mqtt.tls.ca_file", _tls(**{"mqtt.tls.ca_file": "/nonexistent.crt"})),
    Case("CA file is a folder", "mqtt.tls.ca_file", prepare=lambda t: _tls(
        **{"mqtt.tls.ca_file": str(t)})),
    Case("CA file is not PEM", "mqtt.tls.ca_file", prepare=lambda t: _tls(
        **{"mqtt.tls.ca_file": str(_file(t / "ca.crt", "not a certificate"))})),
    Case("cert without key", "mqtt.tls", prepare=lambda t: _tls(
        **{"mqtt.tls.cert_file": str(_file(t / "c.crt"))})),
    Case("missing key file", "mqtt.tls.key_file", prepare=lambda t: _tls(
        **{"mqtt.tls.cert_file": str(_file(t / "c.crt")), "mqtt.tls.key_file": "/no.key"})),
    Case("cert and key not PEM", "mqtt.tls.cert_file", prepare=lambda t: _tls(
        **{"mqtt.tls.cert_file": str(_file(t / "c.crt")),
           "mqtt.tls.key_file": str(_file(t / "c.key"))})),
    # the state folder
    Case("state_dir is a file", "service.state_dir", prepare=lambda t: {
        "service.state_dir": str(_file(t / "statefile"))}),
    Case("state_dir = /dev/null", "service.state_dir", {"service.state_dir": "/dev/null"}),
    Case("state_dir under /proc", "service.state_dir", {"service.state_dir": "/proc/edge-pose"}),
    Case("state_dir under a file", "service.state_dir", prepare=lambda t: {
        "service.state_dir": str(_file(t / "f") / "sub")}),
    Case("journal is a folder", "service.state_dir", prepare=lambda t: {
        "service.state_dir": str(_dir(t / "st" / "events.db").parent)}),
    # models
    Case("models dir missing", "models.dir", {"models.dir": "/nonexistent/models"}),
    Case("models dir without a manifest", "models.dir", prepare=lambda t: {
        "models.dir": str(_dir(t / "m"))}),
    # source URIs
    Case("rtsp URL without a host", "source.uri", {"source.uri": "rtsp://"}),
    Case("ftp URL", "source.uri", {"source.uri": "ftp://cam/stream"}),
    Case("URL port out of range", "source.uri", {"source.uri": "http://cam:99999/x"}),
    Case("missing video file", "source.uri", {"source.uri": "/nonexistent/video.mp4"}),
    Case("picamera2 index not a number", "source.uri", {"source.uri": "picamera2:x"}),
    Case("an empty source", "source.uri", {"source.uri": ""}),
    Case("a camera index in superscript digits", "source.uri", {"source.uri": "\u00b2"}),
    Case("a picamera2 index in fullwidth digits", "source.uri",
         {"source.uri": "picamera2:\uff10"}),
    # files that exist but cannot be a source (validate-config said ok; the daemon failed)
    Case("a text file named .mp4", "source.uri", daemon=False,
         prepare=lambda t: {"source.uri": str(_file(t / "clip.mp4", "not a video"))}),
    Case("a video without frames", "source.uri", daemon=False,
         prepare=lambda t: {"source.uri": str(_empty_video(t / "empty.avi"))}),
    Case("a text file named .jpg", "source.uri", daemon=False,
         prepare=lambda t: {"source.uri": str(_file(t / "photo.jpg", "not an image"))}),
    # output and credentials
    Case("output dir under a file", "output.dir", prepare=lambda t: {
        "output.dir": str(_file(t / "out") / "sub")}),
    Case("password credential is a folder", "mqtt.password_credential", prepare=_creds_folder,
        env={"CREDENTIALS_DIRECTORY": "{tmp}/creds"}),
    # the file itself
    Case("TOML syntax error", "(file)", raw=lambda t: b"[mqtt\nport = 1\n"),
    Case("5000-deep nested array", "(file)",
         raw=lambda t: b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"),
    Case("not UTF-8", "(file)", raw=lambda t: b"[mqtt]\nhost = \"\xff\xfe\"\n"),
    Case("a huge file", "(file)", raw=lambda t: b"# " + b"x" * 2_000_000 + b"\n"),
]


def _base(tmp: Path) -> dict[str, dict[str, Any]]:
    _, models = model_settings()
    return {
        "source": {"uri": "demo", "loop": True},
        "models": dict(models),
        "annotation": {"device_id": "bad"},
        "mqtt": {"host": "127.0.0.1", "port": 1},
        "service": {"state_dir": str(tmp / "state")},
        "logging": {"level": "INFO"},
    }


def _render(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    subs: dict[str, dict[str, Any]] = {}
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            if isinstance(v, dict):
                subs[f"{name}.{k}"] = v
            else:
                lines.append(f"{k} = {_toml(v)}")
    for name, values in subs.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return toml_value(v)


def _write(case: Case, tmp: Path) -> Path:
    path = tmp / "config.toml"
    if case.raw is not None:
        path.write_bytes(case.raw(tmp))
        return path
    sections = _base(tmp)
    overrides = {**case.set, **(case.prepare(tmp) if case.prepare else {})}
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        table: dict[str, Any] = sections
        for p in parents:
            table = table.setdefault(p, {})
        table[key] = value
    path.write_text(_render(sections), encoding="utf-8")
    return path


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    model_env, _ = model_settings()
    path = _write(Case("none", ""), tmp_path)
    r = _run(["validate-config", str(path)], {**os.environ, **model_env})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_malformed_config_exits_2_naming_the_key(tmp_path: Path, case: Case) -> None:
    model_env, _ = model_settings()
    path = _write(case, tmp_path)
    env = {**{k: v for k, v in os.environ.items() if k not in (
        "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET")}, **model_env,
        **{k: v.format(tmp=tmp_path) for k, v in case.env.items()}}
    runs = [["validate-config", str(path)]]
    if case.daemon:
        runs.append(["daemon", "--config", str(path)])
    for args in runs:
        r = _run(args, env)
        out = r.stdout + r.stderr
        assert r.returncode == 2, (args[0], r.returncode, out[-2000:])
        assert "Traceback" not in out, (args[0], out[-2000:])
        assert f"  {case.key}" in r.stderr, (args[0], case.key, r.stderr[-2000:])
