"""Other cameras' looks for the crowd benchmark: gray, dark, noisy, compressed, sideways.

The benchmark is made from colour daylight clips. Cameras edge-pose meets are also night / IR
cameras (a gray image, often delivered as three equal channels), dim rooms, noisy sensors,
heavily compressed streams, and cameras mounted sideways (or a photo without its EXIF
orientation). :func:`apply` renders a frame in one of those looks, deterministically for a
seed, and :func:`person` moves a ground-truth person with the frame (``rot90``).

A whole clip in a look (for the stream figures; looks that keep the frame's size)::

    python -m bench.crowd.looks --look gray --clip cache/crowd/clips/clip00.mp4 --out OUT.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from bench.crowd.score import Person, match_box
from edge.types import U8

Look = Literal["plain", "gray", "dark", "noise", "jpeg20", "rot90"]
#: Every look, in the order of the benchmark's tables.
LOOKS: tuple[Look, ...] = get_args(Look)

#: ``dark``: the frame's values times this (a dim room, auto exposure at its limit), plus
#: sensor noise of :data:`DARK_NOISE` grey levels (sd).
DARK_GAIN = 0.25
DARK_NOISE = 3.0
#: ``noise``: Gaussian noise of this sd, grey levels, on every channel (a small sensor's
#: gain turned up).
NOISE_SD = 25.0
#: ``jpeg20``: JPEG quality of the re-encoding (a stream squeezed through a small link).
JPEG_QUALITY = 20


def apply(image: U8, look: Look, seed: int = 0) -> U8:
    """The frame as the look's camera would deliver it.

    Args:
        image: (H, W, 3) uint8 BGR frame (not modified).
        look: ``plain`` (a copy), ``gray`` (BGR -> gray, as three equal channels: an IR or
            night camera), ``dark`` (x :data:`DARK_GAIN` + noise sd :data:`DARK_NOISE`),
            ``noise`` (+ Gaussian noise sd :data:`NOISE_SD`), ``jpeg20`` (re-encoded at
            quality :data:`JPEG_QUALITY`), ``rot90`` (turned 90 deg clockwise: a camera
            mounted on its side; (W, H, 3) out).
        seed: Seed of the noise (the frame's index: the same look of a frame is the same
            every run).

    Returns:
        uint8 BGR, a new array: (H, W, 3), or (W, H, 3) for ``rot90``.

    Raises:
        ValueError: For an unknown look.
    """
    rng = np.random.default_rng(seed)
    if look == "plain":
        return image.copy()
    if look == "gray":
        g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return np.asarray(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR), np.uint8)
    if look == "dark":
        v = image.astype(np.float32) * DARK_GAIN + rng.normal(0.0, DARK_NOISE, image.shape)
        return np.clip(np.round(v), 0, 255).astype(np.uint8)
    if look == "noise":
        v = image.astype(np.float32) + rng.normal(0.0, NOISE_SD, image.shape)
        return np.clip(np.round(v), 0, 255).astype(np.uint8)
    if look == "jpeg20":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("OpenCV could not encode the frame as JPEG")
        return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    if look == "rot90":
        return np.ascontiguousarray(cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    raise ValueError(f"unknown look {look!r}: one of {', '.join(LOOKS)}")


def size(width: int, height: int, look: Look) -> tuple[int, int]:
    """The frame's ``(width, height)`` px in the look (``rot90`` swaps them)."""
    return (height, width) if look == "rot90" else (width, height)


def person(p: Person, width: int, height: int, look: Look) -> Person:
    """A ground-truth person of a ``width`` x ``height`` frame, in the look's frame.

    ``rot90`` turns the keypoints with the frame (pixel centres: frame point ``(x, y)`` is
    ``(height - 1 - y, x)`` in the turned frame) and boxes them again (:func:`match_box`:
    someone lying is heightened to half their width); the other looks keep the frame's
    geometry and return ``p``.

    Args:
        p: The person, frame px.
        width: The frame's width, px.
        height: The frame's height, px.
        look: The look.

    Returns:
        The person in the look's frame px (height, ignore and identity kept).
    """
    if look != "rot90":
        return p
    kp = p.keypoints.copy()
    kp[:, 0], kp[:, 1] = (height - 1.0) - p.keypoints[:, 1], p.keypoints[:, 0].copy()
    x1, y1, x2, y2 = (float(v) for v in p.box)
    # the fallback box (fewer than 2 keypoints given): the old box turned
    fallback = (height - 1.0 - y2, x1, y2 - y1, x2 - x1)
    return Person(kp, match_box(kp[kp[:, 2] > 0, :2], height, width, fallback), p.height,
                  p.ignore, p.identity, p.score)


def clip(src: Path, dst: Path, look: Look) -> int:
    """Writes the clip ``src`` in a look that keeps the frame's size, as ``mp4v``.

    Args:
        src: A video file.
        dst: The file to write (mp4v at the source's rate).
        look: Any look but ``rot90``.

    Returns:
        The frames written.

    Raises:
        ValueError: For ``rot90`` (the clips' ground truth is not turned).
        RuntimeError: When OpenCV cannot read ``src`` or write ``dst``.
    """
    if look == "rot90":
        raise ValueError("clip(): rot90 changes the frame's size; the clips' ground truth is "
                         "not turned")
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot read {src}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    dst.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not out.isOpened():
        cap.release()
        raise RuntimeError(f"OpenCV cannot write {dst} (mp4v)")
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.write(apply(np.asarray(frame, np.uint8), look, n))
        n += 1
    cap.release()
    out.release()
    return n


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m bench.crowd.looks",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--look", choices=[x for x in LOOKS if x != "rot90"], required=True)
    ap.add_argument("--clip", type=Path, required=True, help="a video file")
    ap.add_argument("--out", type=Path, required=True, help="the clip in the look (mp4v)")
    a = ap.parse_args(argv)
    try:
        n = clip(a.clip, a.out, a.look)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.out}: {n} frames, look {a.look}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
