"""Calibration readers and checks (edge/fuse/calib.py) and `edge-pose calibrate intrinsics`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fusedata import checkerboards

from bench.fuse_data import SCENES, scene
from edge.cli import main
from edge.fuse.calib import (
    Calibration,
    CalibrationError,
    CameraModel,
    read_calibration,
    write_opencv,
    write_toml,
)


@pytest.fixture(scope="module")
def qca() -> Path:
    return scene("single").calib


def test_qualisys_reader_conventions(qca: Path) -> None:
    calib = read_calibration(qca)
    assert calib.names == ["cam01", "cam02", "cam03", "cam04"]
    cam = calib.cameras["cam01"]
    # fov_video 0..1087 x 0..1919; 1/64-px intrinsics; centre in mm -> m.
    assert cam.size == (1088, 1920)
    assert cam.k[0, 0] == pytest.approx(107599.671875 / 64)
    assert cam.k[0, 2] == pytest.approx(34110.316406 / 64)
    np.testing.assert_allclose(cam.center, [1.4602323709, -1.9091590482, 1.8965058524])
    np.testing.assert_allclose(cam.dist, [-0.046183, 0.139983, 0.000608, 0.00069, 0.0])
    assert np.linalg.det(cam.r) == pytest.approx(1.0)
    # y/z flip: every camera looks at the scene (its optical axes meet in front of it) and
    # the origin (on the floor between them) projects inside every image.
    assert calib.check_geometry() == []
    for c in calib:
        u, v = c.project(np.zeros(3))
        assert 0 < u < c.size[0] and 0 < v < c.size[1], c.name
    assert calib.check_sizes({n: (1088, 1920) for n in calib.names}) == []
    # The single-person scene's 1080-px views are the 1088-px image cut on the right.
    assert calib.check_sizes({"cam01": (1080, 1920)}) == []


def test_project_undistort_round_trip(qca: Path) -> None:
    cam = read_calibration(qca).cameras["cam02"]
    rng = np.random.default_rng(0)
    x = rng.uniform([-1, -1, 0], [1, 1, 2], (50, 3))
    px = cam.project(x)
    und = cam.undistort(px)
    h = x @ cam.r.T + cam.t
    ideal = (h @ cam.k.T)[:, :2] / h[:, 2:]
    np.testing.assert_allclose(und, ideal, atol=1e-3)
    assert np.abs(px - ideal).max() > 0.5  # distortion is applied at all
    # A point behind the camera has no projection.
    behind = cam.center - 2.0 * cam.axis
    assert np.all(np.isnan(cam.project(behind)))


def test_pose2sim_toml_round_trip(qca: Path, tmp_path: Path) -> None:
    # The wheel has no Calib.toml for these scenes: write one from the Qualisys cameras.
    assert not any(m.path.endswith(".toml") for _, m in SCENES.values())
    calib = read_calibration(qca)
    out = tmp_path / "Calib.toml"
    write_toml(calib, out)
    back = read_calibration(out)
    assert back.names == calib.names
    x = np.random.default_rng(1).uniform(-1, 1, (20, 3)) + np.array([0, 0, 1])
    for a, b in zip(calib, back, strict=True):
        assert a.size == b.size
        np.testing.assert_allclose(b.project(x), a.project(x), atol=1e-6)


def test_opencv_yaml_round_trip(qca: Path, tmp_path: Path) -> None:
    calib = read_calibration(qca)
    out = tmp_path / "cams.yaml"
    write_opencv(list(calib), out)
    back = read_calibration(out)
    assert back.names == calib.names
    for a, b in zip(calib, back, strict=True):
        np.testing.assert_allclose(b.k, a.k)
        np.testing.assert_allclose(b.dist, a.dist)
        np.testing.assert_allclose(b.r, a.r, atol=1e-12)
        np.testing.assert_allclose(b.t, a.t, atol=1e-12)


@pytest.mark.parametrize(("attr", "value", "field"), [
    ('focalLengthU="107599.671875"', 'focalLengthU="nan"', "k"),
    ('x="1460.2323709212087"', 'x="inf"', "t"),
    ('r11="0.5536380477336265"', 'r11="2.0"', "rotation"),
    ('r11="0.5536380477336265"', 'r11="zero"', "transform.r11"),
])
def test_qualisys_bad_values_name_camera_and_field(qca: Path, tmp_path: Path, attr: str,
                                                   value: str, field: str) -> None:
    text = qca.read_text(encoding="ascii")
    assert attr in text
    bad = tmp_path / "Calib.qca.txt"
    bad.write_text(text.replace(attr, value, 1), encoding="ascii")
    with pytest.raises(CalibrationError) as e:
        read_calibration(bad)
    msg = str(e.value)
    assert str(bad) in msg and "camera cam01" in msg and field in msg


def test_toml_nan_and_missing_field(qca: Path, tmp_path: Path) -> None:
    good = tmp_path / "Calib.toml"
    write_toml(read_calibration(qca), good)
    text = good.read_text(encoding="utf-8")
    bad = tmp_path / "nan.toml"
    i = text.index("translation = [", text.index("[cam03]"))
    bad.write_text(text[:i] + "translation = [nan, 0.0, 1.0]" + text[text.index("\n", i):],
                   encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"camera cam03: t has a non-finite value"):
        read_calibration(bad)
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("matrix = ", "matrixx = ", 1), encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"camera cam01: no 'matrix'"):
        read_calibration(missing)
    with pytest.raises(CalibrationError, match="no such file"):
        read_calibration(tmp_path / "absent.toml")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello", encoding="utf-8")
    with pytest.raises(CalibrationError, match="unknown calibration format"):
        read_calibration(junk)


def test_geometry_and_size_problems(qca: Path) -> None:
    calib = read_calibration(qca)
    a = calib.cameras["cam01"]
    twin = CameraModel("twin", a.size, a.k, a.dist, a.r, a.t + np.array([0.001, 0, 0]))
    # A camera 4 m behind cam01, looking the other way: their axes meet behind one of them.
    flip = np.diag([-1.0, 1.0, -1.0]) @ a.r
    away = CameraModel("away", a.size, a.k, a.dist, flip, -flip @ (a.center - 4.0 * a.axis))
    probs = Calibration({"cam01": a, "twin": twin, "away": away}, qca).check_geometry()
    assert any("cam01 and twin are at the same place" in p for p in probs)
    assert any("cam01 and away look at no common region" in p for p in probs)
    sizes = calib.check_sizes({"cam02": (1280, 720), "cam09": (1088, 1920)})
    assert len(sizes) == 2
    assert "camera cam02 was calibrated at 1088x1920 px but its device sends 1280x720" in sizes[0]
    assert "no camera 'cam09'" in sizes[1]


def test_calibrate_intrinsics_on_opencv_checkerboards(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    images = tmp_path / "boards"
    images.mkdir()
    for p in checkerboards():
        shutil.copy(p, images / p.name)
    out = tmp_path / "left.yaml"
    code = main(["calibrate", "intrinsics", "--images", str(images), "--pattern", "9x6",
                 "--square-mm", "25", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rms = float(printed.split("RMS reprojection error ")[1].split()[0])
    assert rms < 1.0
    cam = read_calibration(out).cameras["left"]
    assert cam.size == (640, 480)
    # A 640x480 webcam: focal length about 530 px, principal point near the centre.
    assert 450 < cam.k[0, 0] < 650 and abs(cam.k[0, 2] - 320) < 40
    # Bad input: exit 2 with the reason.
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(images.iterdir())[:3]:
        shutil.copy(p, few / p.name)
    assert main(["calibrate", "intrinsics", "--images", str(few), "--pattern", "7x7",
                 "--out", str(out)]) == 2
    assert "checkerboard was found in 0 image(s)" in capsys.readouterr().err
    assert main(["calibrate", "intrinsics", "--images", str(tmp_path / "none"),
                 "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
