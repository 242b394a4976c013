"""One camera's intrinsics from photos of a checkerboard (OpenCV's calibration).

``cv2.findChessboardCorners`` finds the inner corners, ``cv2.cornerSubPix`` refines them,
``cv2.calibrateCamera`` fits ``K`` and the 5 distortion coefficients; the result is written as
OpenCV YAML that :func:`edge.fuse.calib.read_calibration` reads (rotation identity, translation
zero: extrinsics come from elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.fuse.calib import CameraModel, write_opencv

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class IntrinsicsError(ValueError):
    """The photos do not give a calibration (names the folder and the fix)."""


@dataclass(frozen=True)
class IntrinsicsResult:
    """A calibration and how well it fits.

    Attributes:
        camera: The camera (named after the output file).
        rms_px: RMS reprojection error of the corners, px.
        used: Images whose checkerboard was found.
        rejected: Images without a (complete) checkerboard.
    """

    camera: CameraModel
    rms_px: float
    used: tuple[str, ...]
    rejected: tuple[str, ...]


def parse_pattern(text: str) -> tuple[int, int]:
    """``"9x6"`` -> ``(9, 6)`` inner corners (columns, rows).

    Raises:
        IntrinsicsError: Not two integers >= 2 joined by ``x``.
    """
    a, sep, b = text.lower().partition("x")
    try:
        cols, rows = int(a), int(b)
    except ValueError:
        cols = rows = 0
    if not sep or cols < 2 or rows < 2:
        raise IntrinsicsError(f"--pattern {text!r}: expected inner corners as COLSxROWS, "
                              "e.g. 9x6")
    return cols, rows


def calibrate_intrinsics(images: Path, pattern: tuple[int, int], square_mm: float,
                         out: Path | None = None, min_images: int = 3) -> IntrinsicsResult:
    """Calibrates one camera from checkerboard photos.

    Args:
        images: Folder of photos (one camera, one resolution).
        pattern: Inner corners ``(columns, rows)``.
        square_mm: Square side, mm (sets the scale of the board, not of ``K``).
        out: OpenCV YAML to write, or None.
        min_images: Fewest photos with a board found.

    Returns:
        The calibration and its RMS error.

    Raises:
        IntrinsicsError: No such folder, no images, sizes differ, or too few boards found.
    """
    if not images.is_dir():
        raise IntrinsicsError(f"--images {images}: no such folder")
    if not square_mm > 0:
        raise IntrinsicsError(f"--square-mm {square_mm}: must be > 0")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise IntrinsicsError(f"--images {images}: no images ({', '.join(IMAGE_SUFFIXES)})")
    cols, rows = pattern
    board = np.zeros((rows * cols, 3), np.float32)
    board[:, :2] = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * (square_mm / 1000.0)
    obj, img, used, rejected = [], [], [], []
    size: tuple[int, int] | None = None
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    for path in files:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            rejected.append(path.name)
            continue
        this = (int(gray.shape[1]), int(gray.shape[0]))
        if size is None:
            size = this
        elif this != size:
            raise IntrinsicsError(f"{path}: {this[0]}x{this[1]} px, but the first image is "
                                  f"{size[0]}x{size[1]}; one camera, one resolution per folder")
        found, corners = cv2.findChessboardCorners(
            gray, (cols, rows), flags=cv2.CALIB_CB_ADAPTIVE_THRESH
            | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK)
        if not found:
            rejected.append(path.name)
            continue
        corners = cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), crit)
        obj.append(board)
        img.append(corners)
        used.append(path.name)
    if len(used) < min_images or size is None:
        raise IntrinsicsError(f"--images {images}: a {cols}x{rows} checkerboard was found in "
                              f"{len(used)} image(s), at least {min_images} are needed; check "
                              "--pattern (inner corners) and the photos")
    rms, k, dist, _, _ = cv2.calibrateCamera(obj, img, size, None, None)
    d = np.zeros(5)
    flat = np.asarray(dist, np.float64).ravel()
    d[:min(5, flat.size)] = flat[:5]
    name = out.name.split(".")[0] if out is not None else "camera"
    cam = CameraModel(name, size, np.asarray(k, np.float64), d, np.eye(3), np.zeros(3))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_opencv([cam], out)
    return IntrinsicsResult(cam, float(rms), tuple(used), tuple(rejected))
