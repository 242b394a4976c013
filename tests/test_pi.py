"""What a Raspberry Pi adds, checked off the Pi: the firmware's throttling word on a Pi 4 and a
Pi 5 (fake sysfs trees; a failed read is retried later, never given up on), and picamera2's
import failures on Bookworm turned into the clear exit-2 error (stand-in modules: no Pi camera
can be had on x86)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge import cli
from edge.comms.system import (
    SystemProbe,
    ThrottleReader,
    read_throttled,
    read_throttled_word,
    throttled_paths,
)
from edge.sources import SourceError, open_source
from edge.sources.base import turn

PI4 = "devices/platform/soc/soc:firmware/get_throttled"
PI5 = "devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"


@pytest.fixture(autouse=True)
def _forget_stand_ins() -> Iterator[None]:
    """Stand-in picamera2/libcamera modules imported by a test leave with it (the next tests,
    in this file or another, must meet the machine's real state: no picamera2 on x86)."""
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("picamera2", "libcamera")]:
        del sys.modules[name]



def _sysfs(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("rel", "text", "word"), [
    (PI4, "50005\n", 0x50005),
    (PI5, "0\n", 0),
    (PI5, "80008\n", 0x80008),
    # Another SoC node name: found by the glob.
    ("devices/platform/soc@fe000000/soc@fe000000:firmware/get_throttled", "e0000\n", 0xE0000),
])
def test_throttled_word_on_pi4_and_pi5_trees(tmp_path: Path, rel: str, text: str,
                                             word: int) -> None:
    _sysfs(tmp_path, rel, text)
    assert throttled_paths(tmp_path) == [tmp_path / rel]
    assert read_throttled_word(tmp_path, vcgencmd=None) == word
    flags = read_throttled(tmp_path, vcgencmd=None)
    assert flags is not None and flags["raw"] == f"0x{word:x}"
    assert flags["under_voltage"] is bool(word & 1)
    assert flags["soft_temp_limit_occurred"] is bool(word >> 19 & 1)


def test_no_firmware_and_garbage_read_as_none(tmp_path: Path) -> None:
    assert throttled_paths(tmp_path) == []
    assert read_throttled_word(tmp_path, vcgencmd=None) is None
    _sysfs(tmp_path, PI4, "not hex\n")
    assert read_throttled_word(tmp_path, vcgencmd=None) is None


def test_a_bad_pi4_file_falls_through_to_the_pi5_one(tmp_path: Path) -> None:
    _sysfs(tmp_path, PI4, "")
    _sysfs(tmp_path, PI5, "4\n")
    assert read_throttled_word(tmp_path, vcgencmd=None) == 4


def test_vcgencmd_is_the_fallback(tmp_path: Path) -> None:
    """A stand-in ``vcgencmd`` (the real one exists only on a Pi) printing the firmware's
    format, and one that fails."""
    good = tmp_path / "vcgencmd"
    good.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x20002\n")
    good.chmod(0o755)
    assert read_throttled_word(tmp_path / "sys", vcgencmd=str(good)) == 0x20002
    bad = tmp_path / "vcgencmd-bad"
    bad.write_text("#!/bin/sh\necho 'VCHI initialization failed' >&2\nexit 255\n")
    bad.chmod(0o755)
    assert read_throttled_word(tmp_path / "sys", vcgencmd=str(bad)) is None
    assert read_throttled_word(tmp_path / "sys", vcgencmd=str(tmp_path / "none")) is None


def test_a_failed_read_is_retried_later_not_given_up(tmp_path: Path) -> None:
    now = [100.0]
    reader = ThrottleReader(tmp_path, vcgencmd=None, retry_s=30.0, clock=lambda: now[0])
    assert reader.read() is None  # no firmware file yet (e.g. a driver loading late)
    path = _sysfs(tmp_path, PI5, "0\n")
    now[0] += 10.0
    assert reader.read() is None  # waiting: not probed on every stats tick
    now[0] += 20.0
    first = reader.read()
    assert first is not None and first["raw"] == "0x0"
    path.write_text("garbage")  # a firmware hiccup
    now[0] += 1.0
    assert reader.read() is None
    path.write_text("50000\n")
    now[0] += 29.0
    assert reader.read() is None
    now[0] += 1.0
    again = reader.read()
    assert again is not None and again["under_voltage_occurred"] is True
    now[0] += 0.5  # after a good read, the next one is immediate
    assert reader.read() == again


def test_system_probe_reports_throttling_from_its_reader(tmp_path: Path) -> None:
    _sysfs(tmp_path, PI4, "5\n")
    sample = SystemProbe(ThrottleReader(tmp_path, vcgencmd=None)).sample()
    assert sample["throttled"]["under_voltage"] is True
    assert sample["throttled"]["throttled"] is True
    assert sample["rss_bytes"] > 0
    assert SystemProbe(ThrottleReader(tmp_path / "x", vcgencmd=None)).sample()["throttled"] is None


# ---- picamera2 ---------------------------------------------------------------------------------

#: What Bookworm's python3-simplejpeg (built against numpy 1.x) raises under numpy 2, imported
#: by picamera2 at import time.
DTYPE_ERROR = ("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from "
               "C header, got 88 from PyObject")

STAND_INS = {
    "numpy-mismatch": f"raise ValueError({DTYPE_ERROR!r})\n",
    "no-libcamera": "import libcamera  # only on Raspberry Pi OS\n",
    "libcamera-broken": "raise RuntimeError('libcamera: failed to load IPA module')\n",
}


def _stand_in(root: Path, body: str) -> Path:
    pkg = root / "picamera2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return root


@pytest.mark.parametrize(("kind", "match"), [
    ("numpy-mismatch", r"failed to import \(ValueError: numpy.dtype size changed.*re-run "
                       r"deploy/install.sh"),
    ("no-libcamera", r"picamera2 is not available \(No module named 'libcamera'\).*"
                     r"python3-picamera2"),
    ("libcamera-broken", r"failed to import \(RuntimeError: libcamera: failed to load IPA"),
])
def test_picamera2_import_failures_are_source_errors(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     kind: str, match: str) -> None:
    monkeypatch.syspath_prepend(str(_stand_in(tmp_path, STAND_INS[kind])))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(SourceError, match=match):
        open_source("picamera2")


def test_daemon_exits_2_with_the_message_when_picamera2_cannot_import(tmp_path: Path) -> None:
    """The real daemon in its own process, the stand-in first on its path: exit 2 (systemd's
    RestartPreventExitStatus, so no crash loop), one clear line, no traceback."""
    stand_in = _stand_in(tmp_path / "site", STAND_INS["numpy-mismatch"])
    config = tmp_path / "config.toml"
    config.write_text('[source]\nuri = "picamera2"\n[mqtt]\nenabled = false\n')
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edge import cli; "
            "sys.exit(cli.main(['daemon', '--config', sys.argv[2]]))")
    res = subprocess.run([sys.executable, "-c", code, str(stand_in), str(config)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "numpy.dtype size changed" in res.stderr and "install.sh" in res.stderr
    assert "Traceback" not in res.stderr


def test_picamera2_stand_in_that_works_delivers_bgr_frames(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A stand-in with picamera2's calls used by the source: frames come through unchanged
    (``RGB888`` is B, G, R in memory, what OpenCV calls BGR), alpha dropped."""
    body = textwrap.dedent("""
        import numpy as np

        class Picamera2:
            def __init__(self, camera):
                self.camera = camera
                self.n = 0

            def create_video_configuration(self, main, buffer_count):
                self.size = main["size"]
                return {"main": main}

            def configure(self, config):
                assert config["main"]["format"] == "RGB888"

            def start(self):
                pass

            def capture_array(self, name):
                w, h = self.size
                self.n += 1
                img = np.zeros((h, w, 4), np.uint8)
                img[..., 0], img[..., 1], img[..., 2], img[..., 3] = 10, 20, self.n % 250, 255
                return img

            def stop(self):
                pass

            def close(self):
                pass
    """)
    monkeypatch.syspath_prepend(str(_stand_in(tmp_path, body)))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    src = open_source("picamera2:1", width=64, height=48)
    try:
        frame = src.read(timeout=5.0)
    finally:
        src.close()
    assert frame.image.shape == (48, 64, 3)
    assert np.all(frame.image[..., 0] == 10) and np.all(frame.image[..., 1] == 20)
    assert "picamera2:1" in src.name


def test_cli_reports_the_picamera2_error_as_exit_2(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(_stand_in(tmp_path, STAND_INS["numpy-mismatch"])))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    assert cli.main(["run", "--source", "picamera2", "--out", str(tmp_path / "out"),
                     "--no-progress"]) == 2
    assert "numpy.dtype size changed" in capsys.readouterr().err


#: A stand-in Pi camera whose "sensor" applies libcamera's flips itself, as the real readout
#: does: a frame with a gradient in x and y, so that every turn is visible.
SENSOR = textwrap.dedent("""
    import numpy as np

    CONFIGS = []

    class Picamera2:
        def __init__(self, camera):
            self.transform = None

        def create_video_configuration(self, main, buffer_count, transform=None):
            return {"main": main, "transform": transform}

        def configure(self, config):
            CONFIGS.append(config)
            self.size, self.transform = config["main"]["size"], config["transform"]

        def start(self):
            pass

        def capture_array(self, name):
            w, h = self.size
            y, x = np.mgrid[0:h, 0:w]
            img = np.stack([x % 256, y % 256, (x + 2 * y) % 256, np.full_like(x, 255)],
                           -1).astype(np.uint8)
            if self.transform is not None:
                if self.transform.vflip:
                    img = img[::-1]
                if self.transform.hflip:
                    img = img[:, ::-1]
            return np.ascontiguousarray(img)

        def stop(self):
            pass

        def close(self):
            pass
""")
LIBCAMERA = textwrap.dedent("""
    class Transform:
        def __init__(self, hflip=0, vflip=0):
            self.hflip, self.vflip = hflip, vflip
""")


@pytest.mark.parametrize(("rotate", "mirror", "flips"), [
    (180, False, (1, 1)), (0, True, (1, 0)), (180, True, (0, 1)), (90, False, None),
    (270, True, None)])
@pytest.mark.parametrize("libcamera", [True, False])
def test_picamera2_turns_by_the_sensor_where_it_can(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    rotate: int, mirror: bool,
                                                    flips: tuple[int, int] | None,
                                                    libcamera: bool) -> None:
    """A half turn and a mirror are asked of the sensor (libcamera's ``Transform``: no CPU);
    a quarter turn, or a stack without libcamera's flips, is turned on the capture thread.
    Either way the frame is the raw frame turned once, as ``source.rotate`` says (a frame
    turned by the sensor and again by the CPU would be upside down again)."""
    root = _stand_in(tmp_path, SENSOR)
    if libcamera:
        (root / "libcamera").mkdir()
        (root / "libcamera" / "__init__.py").write_text(LIBCAMERA)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.delitem(sys.modules, "libcamera", raising=False)
    src = open_source("picamera2:0", width=64, height=48, rotate=rotate,  # type: ignore[arg-type]
                      mirror=mirror)
    try:
        frame = src.read(timeout=5.0)
    finally:
        src.close()
    transform = sys.modules["picamera2"].CONFIGS[-1]["transform"]  # the stand-in's record
    if libcamera and flips is not None:
        assert (transform.hflip, transform.vflip) == flips
    else:
        assert transform is None
    y, x = np.mgrid[0:48, 0:64]
    raw = np.stack([x, y, (x + 2 * y) % 256], -1).astype(np.uint8)
    assert np.array_equal(frame.image, turn(raw, rotate, mirror))  # type: ignore[arg-type]
