"""Camera calibrations: a pinhole model with OpenCV's distortion, its readers and its checks.

Three formats are read (:func:`read_calibration` picks by name and content):

* Pose2Sim's ``Calib.toml``: one table per camera with ``size`` [w, h] px, ``matrix`` (3, 3)
  px, ``distortions`` [k1, k2, p1, p2] (or 5 with k3), ``rotation`` (Rodrigues vector) and
  ``translation`` (metres), world -> camera, OpenCV axes.
* Qualisys ``.qca.txt`` (the Pose2Sim demos ship it): intrinsics in 1/64 px of the sensor,
  shifted by the video's crop offsets (``fov_video`` left/top); the transform's rows take world
  axes to the Qualisys camera frame (looking along -z, y up), so ``diag(1, -1, -1)`` turns them
  into OpenCV's (z forward, y down); the camera centre is in millimetres.
* OpenCV YAML/XML (``cv2.FileStorage``): ``camera_matrix``, ``distortion_coefficients``,
  ``image_width``, ``image_height`` and optionally ``rotation`` (3 Rodrigues or 3x3) and
  ``translation`` (metres), either at the top level (one camera, named after the file) or under
  one node per camera name. ``edge-pose calibrate intrinsics`` writes this.

Projection and undistortion follow OpenCV's model (``cv2.projectPoints``,
``cv2.undistortPoints``): world -> camera ``x_c = R x + t``, ``x_n = x_c / z``, radial and
tangential distortion on ``x_n``, then ``K``. Pure math except the readers.
"""

from __future__ import annotations

import math
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: Qualisys stores intrinsics in sub-pixel units of 1/64 pixel.
QCA_SUBPIXEL = 64.0
#: Qualisys camera axes (y up, looking along -z) -> OpenCV camera axes (y down, z forward).
QCA_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
#: Two camera centres closer than this (metres) are the same place: no baseline.
MIN_BASELINE_M = 0.01
#: A calibrated image may be larger than a device's by this fraction per axis (a crop at the
#: right or bottom edge keeps the intrinsics: Pose2Sim's single-person views are the 1088-px
#: calibrated image cut to 1080).
CROP_TOLERANCE = 0.01


class CalibrationError(ValueError):
    """A calibration file is unreadable or unusable (the message names file, camera, field)."""


@dataclass(frozen=True, eq=False)
class CameraModel:
    """One calibrated camera (OpenCV's pinhole model with 5 distortion coefficients).

    Attributes:
        name: Camera name in its calibration file.
        size: ``(width, height)`` of the calibrated image, px.
        k: (3, 3) float64 intrinsics, px.
        dist: (5,) float64 distortion ``k1, k2, p1, p2, k3`` (OpenCV order).
        r: (3, 3) float64 rotation world -> camera (x right, y down, z forward).
        t: (3,) float64 translation world -> camera, metres.
    """

    name: str
    size: tuple[int, int]
    k: F64
    dist: F64
    r: F64
    t: F64
    _p: F64 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for attr, shape in (("k", (3, 3)), ("dist", (5,)), ("r", (3, 3)), ("t", (3,))):
            a = np.array(getattr(self, attr), dtype=np.float64)
            if a.shape != shape:
                raise CalibrationError(f"camera {self.name}: {attr} must be {shape}, "
                                       f"got {a.shape}")
            a.setflags(write=False)
            object.__setattr__(self, attr, a)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN is refused by validation
            p = self.k @ np.concatenate([self.r, self.t[:, None]], 1)
        p.setflags(write=False)
        object.__setattr__(self, "_p", p)

    @property
    def projection(self) -> F64:
        """(3, 4) ``K [R | t]``: world metres -> homogeneous undistorted px."""
        return self._p

    @property
    def center(self) -> F64:
        """(3,) camera centre in world metres."""
        return np.asarray(-self.r.T @ self.t)

    @property
    def axis(self) -> F64:
        """(3,) unit optical axis (camera +z) in world coordinates."""
        return np.asarray(self.r[2])

    def to_camera(self, x: F64) -> F64:
        """(..., 3) world metres -> (..., 3) camera metres (z forward)."""
        return np.asarray(np.asarray(x, np.float64) @ self.r.T + self.t)

    def project(self, x: F64) -> F64:
        """Projects world points into the image, with distortion.

        Args:
            x: (..., 3) world metres.

        Returns:
            (..., 2) px; NaN for points at or behind the camera plane.
        """
        xc = self.to_camera(x)
        z = xc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = xc[..., :2] / np.where(z > 1e-9, z, np.nan)[..., None]
        return self.distort_normalised(xn)

    def turned(self, rotate: int) -> CameraModel:
        """The same camera as a device turning its frames ``rotate`` degrees clockwise sees it.

        A device with ``source.rotate`` publishes its camera's frames turned (upright for its
        mounting), and the keypoints in the turned frame; a calibration is of the sensor's
        frame. A turned image is what the camera turned about its optical axis would see, so
        the turned model is exact: the camera axes turned (``R' = M R``, ``t' = M t``, ``M``
        the quarter turns about z), ``K' = A K M^T`` with ``A`` the frame's turn of pixel
        centres (90: ``(x, y) -> (H - 1 - y, x)``, as :func:`edge.sources.base.turn`), the
        tangential distortion turned with the axes, the radial one unchanged, and the size
        swapped for a quarter turn. Projections agree to 1e-9 px (tests/test_rotate.py).

        Args:
            rotate: 0, 90, 180 or 270 (the device's ``source.rotate``).

        Returns:
            The turned model (``self`` for 0).

        Raises:
            CalibrationError: For another angle, or a skewed ``K`` (``k[0, 1] != 0``: OpenCV's
                calibration never makes one; turned, it would need a ``k[1, 0]`` this model
                does not have).
        """
        if rotate not in (0, 90, 180, 270):
            raise CalibrationError(f"camera {self.name}: rotate {rotate!r} is not 0, 90, 180 "
                                   "or 270")
        if rotate == 0:
            return self
        if self.k[0, 1] != 0:
            raise CalibrationError(f"camera {self.name}: its K has a skew (k[0, 1] = "
                                   f"{self.k[0, 1]:g}); a turned frame cannot be modelled")
        w, h = self.size
        m, a = {
            90: ([[0, -1, 0], [1, 0, 0], [0, 0, 1]], [[0, -1, h - 1], [1, 0, 0], [0, 0, 1]]),
            180: ([[-1, 0, 0], [0, -1, 0], [0, 0, 1]],
                  [[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1]]),
            270: ([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], [[0, 1, 0], [-1, 0, w - 1], [0, 0, 1]]),
        }[rotate]
        mm, aa = np.array(m, np.float64), np.array(a, np.float64)
        k1, k2, p1, p2, k3 = (float(v) for v in self.dist)
        tangential = {90: (p2, -p1), 180: (-p1, -p2), 270: (-p2, p1)}[rotate]
        return CameraModel(self.name, (h, w) if rotate != 180 else (w, h),
                           aa @ self.k @ mm.T, np.array([k1, k2, *tangential, k3]),
                           mm @ self.r, mm @ self.t)

    def distort_normalised(self, xn: F64) -> F64:
        """(..., 2) normalised undistorted coordinates -> (..., 2) distorted px."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xn[..., 0], xn[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        u = self.k[0, 0] * xd + self.k[0, 1] * yd + self.k[0, 2]
        v = self.k[1, 1] * yd + self.k[1, 2]
        return np.stack([u, v], axis=-1)

    def undistort(self, px: F64) -> F64:
        """Removes lens distortion from pixel positions (OpenCV's iterative inverse).

        Args:
            px: (..., 2) distorted px.

        Returns:
            (..., 2) px of an ideal pinhole camera with the same ``K`` (NaN stays NaN).
        """
        a = np.asarray(px, np.float64)
        if not np.any(self.dist):
            return a.copy()
        flat = a.reshape(-1, 1, 2)
        ok = np.all(np.isfinite(flat), axis=-1)[:, 0]
        out = np.full(flat.shape, np.nan)
        if ok.any():
            und = cv2.undistortPoints(np.ascontiguousarray(flat[ok]), self.k, self.dist,
                                      P=self.k)
            out[ok] = und
        return out.reshape(a.shape)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Cameras of one scene, in file order.

    Attributes:
        cameras: Camera name -> model.
        source: The file read (for messages), or None.
    """

    cameras: dict[str, CameraModel]
    source: Path | None = None

    def __iter__(self) -> Iterator[CameraModel]:
        return iter(self.cameras.values())

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def names(self) -> list[str]:
        """Camera names in file order."""
        return list(self.cameras)

    def turned(self, turns: Mapping[str, int]) -> Calibration:
        """The calibration with some cameras turned (:meth:`CameraModel.turned`).

        Args:
            turns: Camera name -> degrees clockwise its device turns its frames.

        Returns:
            A new calibration (cameras in the same order).

        Raises:
            CalibrationError: A camera the calibration lacks, or one that cannot be turned.
        """
        for name in turns:
            if name not in self.cameras:
                raise CalibrationError(f"{self._where()}: no camera {name!r}")
        return Calibration({name: cam.turned(turns.get(name, 0))
                            for name, cam in self.cameras.items()}, self.source)

    def _where(self) -> str:
        return f"calibration {self.source}" if self.source else "calibration"

    def check_sizes(self, sizes: Mapping[str, tuple[int, int]]) -> list[str]:
        """Compares cameras' calibrated image sizes with the sizes devices announce.

        A device image up to :data:`CROP_TOLERANCE` smaller per axis is accepted (a crop at the
        right or bottom edge keeps the intrinsics); anything else is a problem: another
        resolution needs another calibration (or scaled intrinsics).

        Args:
            sizes: Camera name -> ``(width, height)`` px the device announces.

        Returns:
            One message per problem (empty: all match), naming the camera and both sizes.
        """
        problems = []
        for name, (w, h) in sizes.items():
            cam = self.cameras.get(name)
            if cam is None:
                problems.append(f"{self._where()}: no camera {name!r} (it has "
                                f"{', '.join(self.cameras)})")
                continue
            cw, ch = cam.size
            ok = all(c * (1 - CROP_TOLERANCE) <= d <= c for c, d in ((cw, w), (ch, h)))
            turned = all(c * (1 - CROP_TOLERANCE) <= d <= c for c, d in ((cw, h), (ch, w)))
            if not ok and turned:  # a quarter turn: the device's source.rotate
                problems.append(
                    f"{self._where()}: camera {name} was calibrated at {cw}x{ch} px but its "
                    f"device sends {w}x{h} px, turned a quarter: when the device turns its "
                    "frames (source.rotate), give the fuse worker the same turn "
                    "(scene.rotate)")
            elif not ok:
                problems.append(
                    f"{self._where()}: camera {name} was calibrated at {cw}x{ch} px but its "
                    f"device sends {w}x{h} px; calibrate at the device's resolution or set "
                    "the device to the calibrated one")
        return problems

    def check_geometry(self) -> list[str]:
        """Pairs of cameras that cannot triangulate together.

        Returns:
            A message per pair whose centres coincide (no baseline) or whose optical axes meet
            behind one of them (they look away from each other / one stands behind the other's
            view); nearly parallel axes (a stereo rig) are not judged.
        """
        problems = []
        cams = list(self)
        for i, a in enumerate(cams):
            for b in cams[i + 1:]:
                ca, cb = a.center, b.center
                if float(np.linalg.norm(ca - cb)) < MIN_BASELINE_M:
                    problems.append(f"{self._where()}: cameras {a.name} and {b.name} are at "
                                    "the same place (no baseline to triangulate)")
                    continue
                da, db = a.axis, b.axis
                cross = np.cross(da, db)
                if float(np.linalg.norm(cross)) < math.sin(math.radians(5.0)):
                    if da @ db < 0 and (cb - ca) @ da < 0:  # back to back
                        problems.append(
                            f"{self._where()}: cameras {a.name} and {b.name} look at no "
                            "common region (they stand back to back); check the rotation and "
                            "translation of both")
                    continue  # side by side (a stereo rig) or face to face: fine
                # Closest points of the two optical axes: ca + s da, cb + u db.
                w0 = ca - cb
                aa, bb, cc = da @ da, da @ db, db @ db
                dd, ee = da @ w0, db @ w0
                den = aa * cc - bb * bb
                s = (bb * ee - cc * dd) / den
                u = (aa * ee - bb * dd) / den
                if s <= 0 or u <= 0:
                    behind = a.name if s <= 0 else b.name
                    problems.append(
                        f"{self._where()}: cameras {a.name} and {b.name} look at no common "
                        f"region (their optical axes meet behind {behind}); check the "
                        "rotation and translation of both")
        return problems


# ----------------------------------------------------------------------------- validation


def validate_camera(cam: CameraModel, where: str) -> None:
    """Checks one camera; raises :class:`CalibrationError` naming ``where``, camera and field.

    Args:
        cam: The camera.
        where: The file (for the message).

    Raises:
        CalibrationError: A non-finite value, a non-positive focal length, an intrinsics matrix
            whose last row is not (0, 0, 1), a rotation that is not one, or a bad image size.
    """
    pre = f"{where}: camera {cam.name}"
    for attr in ("k", "dist", "r", "t"):
        a = getattr(cam, attr)
        if not np.all(np.isfinite(a)):
            raise CalibrationError(f"{pre}: {attr} has a non-finite value (NaN or inf): "
                                   f"{a.tolist()}")
    w, h = cam.size
    if w < 1 or h < 1:
        raise CalibrationError(f"{pre}: size must be positive, got {w}x{h}")
    if cam.k[0, 0] <= 0 or cam.k[1, 1] <= 0:
        raise CalibrationError(f"{pre}: focal lengths (matrix fx, fy) must be > 0, got "
                               f"{cam.k[0, 0]}, {cam.k[1, 1]}")
    if not np.allclose(cam.k[2], [0.0, 0.0, 1.0]) or cam.k[1, 0] != 0:
        raise CalibrationError(f"{pre}: matrix must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], "
                               f"got {cam.k.tolist()}")
    err = float(np.abs(cam.r @ cam.r.T - np.eye(3)).max())
    det = float(np.linalg.det(cam.r))
    if err > 1e-3 or abs(det - 1.0) > 1e-3:
        raise CalibrationError(f"{pre}: rotation is not a rotation (|R R^T - I| = {err:.2g}, "
                               f"det {det:.4f}); check its units and order")


def _finish(cameras: list[CameraModel], path: Path) -> Calibration:
    if not cameras:
        raise CalibrationError(f"{path}: no cameras found")
    names = [c.name for c in cameras]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CalibrationError(f"{path}: camera names repeat: {', '.join(dup)}")
    for cam in cameras:
        validate_camera(cam, str(path))
    return Calibration({c.name: c for c in cameras}, path)


# ----------------------------------------------------------------------------- readers


def read_qca(path: Path) -> Calibration:
    """Reads a Qualisys ``.qca.txt`` calibration (cameras in file order).

    Args:
        path: The file.

    Returns:
        The calibration, metres, OpenCV camera axes.

    Raises:
        CalibrationError: Not XML, or a camera misses a field or has a bad value.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise CalibrationError(f"{path}: not a readable Qualisys calibration: {e}") from None
    cams = []
    for n, cam in enumerate(root.iter("camera")):
        name = cam.get("serial") or f"cam{n + 1:02d}"

        def node(tag: str, name: str = name, cam: ET.Element = cam) -> ET.Element:
            e = cam.find(tag)
            if e is None:
                raise CalibrationError(f"{path}: camera {name}: no <{tag}> element")
            return e

        def num(e: ET.Element, key: str, default: str | None = None, name: str = name) -> float:
            v = e.get(key, default)
            if v is None:
                raise CalibrationError(f"{path}: camera {name}: <{e.tag}> has no {key}")
            try:
                return float(v)
            except ValueError:
                raise CalibrationError(f"{path}: camera {name}: {e.tag}.{key} = {v!r} is not "
                                       "a number") from None

        tr, it, fov = node("transform"), node("intrinsic"), node("fov_video")
        m = np.array([[num(tr, f"r{i}{j}") for j in (1, 2, 3)] for i in (1, 2, 3)])
        pos = np.array([num(tr, a) for a in "xyz"]) / 1000.0
        # Rows of the file's matrix are world -> Qualisys camera, whose camera looks along -z
        # with y up; flipping y and z gives the OpenCV camera (checked on the Pose2Sim demos:
        # 15 px median reprojection error against 95-370 px for the other readings).
        r = QCA_TO_OPENCV @ m
        left, top = num(fov, "left"), num(fov, "top")
        size = (int(num(fov, "right") - left + 1), int(num(fov, "bottom") - top + 1))
        fu = num(it, "focalLengthU") / QCA_SUBPIXEL
        fv = num(it, "focalLengthV") / QCA_SUBPIXEL
        cu = num(it, "centerPointU") / QCA_SUBPIXEL - left
        cv = num(it, "centerPointV") / QCA_SUBPIXEL - top
        k = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
        dist = np.array([num(it, "radialDistortion1", "0"), num(it, "radialDistortion2", "0"),
                         num(it, "tangentalDistortion1", "0"),
                         num(it, "tangentalDistortion2", "0"),
                         num(it, "radialDistortion3", "0")])
        cams.append(CameraModel(name, size, k, dist, r, -r @ pos))
    return _finish(cams, path)


def _array(v: Any, shape: tuple[int, ...], where: str) -> F64:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where} must be numbers of shape {shape}, got {v!r}") from None
    if a.shape != shape:
        raise CalibrationError(f"{where} must have shape {shape}, got {a.shape}")
    return a


def _rotation(v: Any, where: str) -> F64:
    a = np.asarray(v, dtype=np.float64) if isinstance(v, list | np.ndarray) else None
    if a is not None and a.shape == (3, 3):
        return a
    rvec = _array(v, (3,), where + " (a Rodrigues vector or a 3x3 matrix)")
    if not np.all(np.isfinite(rvec)):
        raise CalibrationError(f"{where} has a non-finite value (NaN or inf): {rvec.tolist()}")
    return np.asarray(cv2.Rodrigues(rvec)[0], np.float64)


def _dist(v: Any, where: str) -> F64:
    a = np.asarray(v, dtype=np.float64).ravel() if v is not None else np.zeros(0)
    if a.size not in (0, 4, 5, 8):
        raise CalibrationError(f"{where} must have 4 or 5 values (k1 k2 p1 p2 [k3]), got "
                               f"{a.size}")
    if a.size == 8 and np.any(a[5:]):
        raise CalibrationError(f"{where}: the rational model (k4-k6) is not supported")
    out = np.zeros(5)
    out[:min(5, a.size)] = a[:5]
    return out


def read_toml(path: Path) -> Calibration:
    """Reads a Pose2Sim ``Calib.toml`` (one table per camera; ``metadata`` is ignored).

    Raises:
        CalibrationError: Not TOML, a missing field or a bad value.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{path}: not a readable TOML calibration: {e}") from None
    cams = []
    for key, sec in data.items():
        if key == "metadata" or not isinstance(sec, dict):
            continue
        name = str(sec.get("name", key))
        pre = f"{path}: camera {name}: "
        for req in ("size", "matrix", "rotation", "translation"):
            if req not in sec:
                raise CalibrationError(f"{pre}no {req!r}")
        if sec.get("fisheye", False):
            raise CalibrationError(f"{pre}fisheye cameras are not supported")
        size = _array(sec["size"], (2,), pre + "size")
        if not np.all(np.isfinite(size)):
            raise CalibrationError(f"{pre}size has a non-finite value: {size.tolist()}")
        cams.append(CameraModel(
            name, (round(size[0]), round(size[1])), _array(sec["matrix"], (3, 3), pre + "matrix"),
            _dist(sec.get("distortions"), pre + "distortions"),
            _rotation(sec["rotation"], pre + "rotation"),
            _array(sec["translation"], (3,), pre + "translation")))
    return _finish(cams, path)


def write_toml(calib: Calibration, path: Path) -> None:
    """Writes a calibration as Pose2Sim's ``Calib.toml`` (Rodrigues rotation, metres)."""
    lines = []
    for cam in calib:
        rvec = cv2.Rodrigues(cam.r)[0].ravel()

        def fmt(a: npt.ArrayLike) -> str:
            return "[" + ", ".join(repr(float(x)) for x in np.ravel(a)) + "]"

        lines += [f"[{cam.name}]", f'name = "{cam.name}"',
                  f"size = [{float(cam.size[0])!r}, {float(cam.size[1])!r}]",
                  "matrix = [" + ", ".join(fmt(row) for row in cam.k) + "]",
                  f"distortions = {fmt(cam.dist)}", f"rotation = {fmt(rvec)}",
                  f"translation = {fmt(cam.t)}", "fisheye = false", ""]
    lines += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _fs_camera(fs_node: Any, name: str, path: Path) -> CameraModel:
    pre = f"{path}: camera {name}: "

    def mat(key: str) -> F64 | None:
        n = fs_node.getNode(key)
        if n.empty():
            return None
        if n.isSeq():
            return np.asarray([n.at(i).real() for i in range(n.size())], np.float64)
        m = n.mat()
        return None if m is None else np.asarray(m, np.float64)

    def num(key: str) -> float:
        n = fs_node.getNode(key)
        if n.empty():
            raise CalibrationError(f"{pre}no {key!r}")
        return float(n.real())

    k = mat("camera_matrix")
    if k is None:
        raise CalibrationError(f"{pre}no 'camera_matrix'")
    dist = mat("distortion_coefficients")
    rot = mat("rotation")
    t = mat("translation")
    return CameraModel(
        name, (int(num("image_width")), int(num("image_height"))),
        _array(k, (3, 3), pre + "camera_matrix"), _dist(dist, pre + "distortion_coefficients"),
        np.eye(3) if rot is None else _rotation(rot.reshape(-1) if rot.size == 3 else rot,
                                                pre + "rotation"),
        np.zeros(3) if t is None else _array(t.reshape(-1), (3,), pre + "translation"))


def read_opencv(path: Path) -> Calibration:
    """Reads an OpenCV YAML/XML calibration (one camera at the top, or one node per camera).

    Raises:
        CalibrationError: Not readable by ``cv2.FileStorage``, a missing field or a bad value.
    """
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as e:
        raise CalibrationError(f"{path}: not a readable OpenCV calibration: {e}") from None
    if not fs.isOpened():
        raise CalibrationError(f"{path}: not a readable OpenCV calibration")
    try:
        root = fs.root()
        if not root.getNode("camera_matrix").empty():
            cams = [_fs_camera(root, path.name.split(".")[0], path)]
        else:
            cams = [_fs_camera(root.getNode(str(key)), str(key), path) for key in root.keys()  # noqa: SIM118 (a FileNode)
                    if root.getNode(str(key)).isMap()]
    finally:
        fs.release()
    return _finish(cams, path)


def write_opencv(cams: list[CameraModel], path: Path) -> None:
    """Writes cameras as an OpenCV YAML file (:func:`read_opencv` reads it back)."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    try:
        for cam in cams:
            if len(cams) > 1:
                fs.startWriteStruct(cam.name, cv2.FileNode_MAP)
            fs.write("image_width", int(cam.size[0]))
            fs.write("image_height", int(cam.size[1]))
            fs.write("camera_matrix", cam.k)
            fs.write("distortion_coefficients", cam.dist.reshape(1, 5))
            fs.write("rotation", cam.r)
            fs.write("translation", cam.t.reshape(3, 1))
            if len(cams) > 1:
                fs.endWriteStruct()
    finally:
        fs.release()


def read_calibration(path: Path) -> Calibration:
    """Reads a calibration, choosing the reader by the file's name and content.

    ``.toml``: Pose2Sim; ``.qca.txt`` or XML with a ``<calibration>`` root: Qualisys;
    ``.yaml``/``.yml``/``.xml``/``.json`` otherwise: OpenCV ``FileStorage``.

    Args:
        path: The file.

    Returns:
        The validated calibration.

    Raises:
        CalibrationError: The file is missing, of no known format, or invalid (the message
            names the file, the camera and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration {path}: no such file")
    name = path.name.lower()
    if name.endswith(".toml"):
        return read_toml(path)
    try:
        head = path.read_bytes()[:4096].decode("utf-8", "replace")
    except OSError as e:
        raise CalibrationError(f"{path}: cannot be read: {e}") from None
    if name.endswith(".qca.txt") or "<calibration" in head:
        return read_qca(path)
    if name.endswith((".yaml", ".yml", ".xml", ".json")) or head.startswith("%YAML"):
        return read_opencv(path)
    raise CalibrationError(f"{path}: unknown calibration format; use a Pose2Sim .toml, a "
                           "Qualisys .qca.txt or an OpenCV .yaml")
