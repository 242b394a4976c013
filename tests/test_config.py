"""Config: defaults valid, every error reported with its key path, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge import cli
from edge.config import Config, ConfigError, load_config, parse_config


def test_defaults_follow_the_design() -> None:
    c = Config()
    # Ten one-call detector runs a second, the whole frame every second one: 5 Hz, the design's
    # detector rate, and tiles in between.
    assert (c.scheduler.rate_hz, c.scheduler.detector_hz) == (30.0, 10.0)
    assert (c.detector.kind, c.detector.whole_every, c.detector.calls_per_run) == ("both", 2, 1)
    assert (c.scheduler.budget_detector_fps, c.scheduler.budget_pose2d_fps,
            c.scheduler.budget_pose3d_fps) == (5.0, 55.0, 450.0)
    assert c.tracking.max_persons == 6 and c.models.precision == "int8"


@pytest.mark.parametrize(("data", "errors"), [
    ({"source": {"bogus": 1}}, [("source.bogus", "unknown key")]),
    ({"nonsense": {}}, [("nonsense", "unknown key")]),
    ({"tracking": {"max_persons": 0}}, [("tracking.max_persons", "greater than or equal")]),
    ({"models": {"precision": "int4"}}, [("models.precision", "'int8' or 'float'")]),
    ({"scheduler": {"rate_hz": -1}, "annotation": {"device_id": "a b"}},
     [("scheduler.rate_hz", "greater than or equal to 0.1"),
      ("annotation.device_id", "pattern")]),
    # Strict types: no silent string-to-number or string-to-bool; finite numbers only.
    ({"mqtt": {"port": "1883"}}, [("mqtt.port", "valid integer")]),
    ({"source": {"loop": "yes"}}, [("source.loop", "valid boolean")]),
    ({"tracking": {"max_persons": 2.0}}, [("tracking.max_persons", "valid integer")]),
    ({"scheduler": {"rate_hz": float("inf")}}, [("scheduler.rate_hz", "finite number")]),
    ({"scheduler": {"detector_hz": float("nan")}}, [("scheduler.detector_hz", "finite")]),
    ({"scheduler": {"detector_hz": 1e-320}}, [("scheduler.detector_hz", "0.1")]),
    ({"mqtt": {"enabled": 1}}, [("mqtt.enabled", "valid boolean")]),
    ({"service": {"state_dir": 3}}, [("service.state_dir", "path")]),
    ({"source": {"reconnect_initial_s": 5, "reconnect_max_s": 1}},
     [("source", "reconnect_max_s must be >= reconnect_initial_s")]),
])
def test_every_error_has_its_key_path(data: dict[str, object],
                                      errors: list[tuple[str, str]]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    got = info.value.errors
    assert len(got) == len(errors)
    for (key, msg), (gkey, gmsg) in zip(errors, got, strict=True):
        assert gkey == key and msg in gmsg


@pytest.mark.parametrize(("data", "key", "hint"), [
    ({"trackng": {}}, "trackng", "did you mean tracking?"),
    ({"tracking": {"min_presense": 0.3}}, "tracking.min_presense",
     "did you mean tracking.min_presence?"),
    # the right key in the wrong section
    ({"detector": {"min_presence": 0.3}}, "detector.min_presence",
     "did you mean tracking.min_presence?"),
    ({"mqtt": {"tls": {"ca_fil": "x"}}}, "mqtt.tls.ca_fil", "did you mean mqtt.tls.ca_file?"),
    # nothing alike: no guess
    ({"source": {"bogus": 1}}, "source.bogus", None),
])
def test_an_unknown_key_names_what_was_likely_meant(data: dict[str, object], key: str,
                                                    hint: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    [(got_key, msg)] = info.value.errors
    assert got_key == key and msg.startswith("unknown key")
    assert (hint in msg) if hint else msg == "unknown key"


def test_a_fuse_worker_key_gets_the_same_hint() -> None:
    from edge.fuse.config import parse_fuse_config
    with pytest.raises(ConfigError) as info:
        parse_fuse_config({"sync": {"max_wiat_s": 1}}, "fuse.toml")
    # max_wait_s lives in [fuse], not [sync]
    assert ("sync.max_wiat_s", "unknown key; did you mean fuse.max_wait_s?") in info.value.errors


def test_toml_ints_fill_float_fields_and_strings_fill_paths() -> None:
    c = parse_config({"scheduler": {"rate_hz": 10, "detector_hz": 2},
                      "mqtt": {"reconnect_min_s": 1, "reconnect_max_s": 2},
                      "service": {"state_dir": "/tmp/x"}})
    assert c.scheduler.rate_hz == 10.0 and isinstance(c.scheduler.rate_hz, float)
    assert c.mqtt.reconnect_max_s == 2.0 and c.service.state_dir == Path("/tmp/x")


def test_a_deeply_nested_array_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(deep)


def test_toml_file_round_trip_and_validate_config_cli(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[source]\nuri = "0"\n[tracking]\nmax_persons = 2\n'
                    '[scheduler]\nmode = "every-frame"\ndetector_every = 3\n'
                    f'[service]\nstate_dir = "{tmp_path / "state"}"\n')
    c = load_config(good)
    assert (c.source.uri, c.tracking.max_persons, c.scheduler.detector_every) == ("0", 2, 3)
    assert cli.main(["validate-config", str(good)]) == 0
    assert "ok" in capsys.readouterr().out

    bad = tmp_path / "bad.toml"
    bad.write_text('[tracking]\nmax_persons = "many"\ncolour = "red"\n')
    assert cli.main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 error(s)" in err and "tracking.max_persons" in err and "tracking.colour" in err

    broken = tmp_path / "broken.toml"
    broken.write_text("[tracking\n")
    assert cli.main(["validate-config", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert cli.main(["validate-config", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
