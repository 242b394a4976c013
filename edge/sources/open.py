"""Choosing a source from a URI."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from edge.sources.base import Rotate, Source, SourceError
from edge.sources.files import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    ImageFolderSource,
    VideoFileSource,
)
from edge.sources.live import STALL_TIMEOUT_S, open_camera, open_picamera2, open_url
from edge.types import is_ascii_number

#: A V4L2 device path: the kernel's name, or udev's persistent names (a camera's own, or its
#: USB port's) that stay with a camera when a replug changes its index.
_V4L2_NAME = re.compile(r"/dev/(video\d+|v4l/by-(id|path)/[^/]+)")

#: The bundled demo clip (Sports2D, BSD-3-Clause; see edge/assets/README.md).
DEMO_CLIP = Path(__file__).resolve().parent.parent / "assets" / "sports2d_demo.mp4"


def open_source(uri: str, *, width: int | None = None, height: int | None = None,
                fps: float | None = None, loop: bool = False, reconnect_initial_s: float = 0.5,
                reconnect_max_s: float = 2.0, rotate: Rotate = 0, mirror: bool = False,
                stall_timeout_s: float = STALL_TIMEOUT_S) -> Source:
    """Opens the source a URI names.

    Args:
        uri: ``demo`` (the bundled clip), a video file, an image, a folder of images, a camera
            index (``0``) or device path (``/dev/video0``, ``/dev/v4l/by-id/...``), an
            ``rtsp://`` / ``http(s)://`` URL, or ``picamera2[:N]``.
        width: Requested capture width, px (cameras).
        height: Requested capture height, px (cameras).
        fps: Requested capture rate, Hz (cameras).
        loop: Restart a video file at its end.
        reconnect_initial_s: First reconnect delay of live sources, s.
        reconnect_max_s: Largest reconnect delay, s.
        rotate: Turn every frame this many degrees clockwise (0, 90, 180, 270): the camera's
            mounting (``source.rotate``); ``width`` and ``height`` stay the device's.
        mirror: Then flip every frame left to right (``source.mirror``).
        stall_timeout_s: A network stream's connection that takes longer to open or to deliver
            a frame is reopened, s (``source.stall_timeout_s``).

    Returns:
        The open source.

    Raises:
        SourceError: When the URI names nothing usable.
    """
    backoff = {"reconnect_initial_s": reconnect_initial_s, "reconnect_max_s": reconnect_max_s}
    if uri == "demo":
        return VideoFileSource(DEMO_CLIP, loop=loop, rotate=rotate, mirror=mirror)
    if is_ascii_number(uri):
        return open_camera(int(uri), width, height, fps, rotate=rotate, mirror=mirror, **backoff)
    if uri == "picamera2" or uri.startswith("picamera2:"):
        _, _, idx = uri.partition(":")
        if idx and not is_ascii_number(idx):
            raise SourceError(f"source {uri!r}: expected picamera2 or picamera2:<index>")
        return open_picamera2(int(idx or 0), width, height, fps, rotate=rotate, mirror=mirror,
                              **backoff)
    if uri.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        remote = _remote_file(uri, loop, rotate, mirror)
        if remote is not None:
            return remote
        return open_url(uri, rotate=rotate, mirror=mirror, stall_timeout_s=stall_timeout_s,
                        **backoff)
    if uri.startswith("/dev/"):
        if not _V4L2_NAME.fullmatch(uri) and not _V4L2_NAME.fullmatch(os.path.realpath(uri)):
            raise SourceError(f"source {uri!r}: not a V4L2 video device (/dev/videoN, or a "
                              "/dev/v4l/by-id/... or by-path/... name)")
        return open_camera(uri, width, height, fps, rotate=rotate, mirror=mirror, **backoff)
    path = Path(uri)
    if names_stills(uri):
        return ImageFolderSource(path, rotate=rotate, mirror=mirror)
    if not path.exists():
        raise SourceError(f"source {uri!r}: no such file, and not a camera index, URL or "
                          "picamera2")
    return VideoFileSource(path, loop=loop, rotate=rotate, mirror=mirror)


def names_stills(uri: str) -> bool:
    """Whether :func:`open_source` reads ``uri`` as still images (an image file or a folder).

    Args:
        uri: A source URI, as :func:`open_source` takes it.

    Returns:
        True for an image file's name or an existing folder; False for ``demo``, a camera, a
        URL, ``picamera2`` and video files.
    """
    if (uri in ("demo", "picamera2") or is_ascii_number(uri)
            or uri.startswith(("picamera2:", "/dev/")) or "://" in uri):
        return False
    path = Path(uri)
    return path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES


def _remote_file(url: str, loop: bool, rotate: Rotate, mirror: bool) -> VideoFileSource | None:
    """A video file on a web server, read as a file; None for a live stream.

    ``https://host/clip.mp4`` was read as a camera: as fast as it decoded (1829 frames read in
    39 s, 1672 of them dropped), and at its end "lost", reconnected and played again, for
    ever. A URL whose path ends in a video file's suffix is opened once: when FFmpeg finds a
    frame count (a file: its length is known), it is read as a file is, every frame on its
    own clock, to its end; a live stream served under such a name (no length), or a server
    that does not answer, is left to the live source and its reconnects.

    Args:
        url: An ``http(s)://`` URL.
        loop: Restart the file at its end.
        rotate: The frames' turn, degrees clockwise.
        mirror: Then a left-right flip.

    Returns:
        The open file, or None.
    """
    if not url.startswith(("http://", "https://")):
        return None
    if PurePosixPath(urlsplit(url).path).suffix.lower() not in VIDEO_SUFFIXES:
        return None
    try:
        src = VideoFileSource(url, loop=loop, rotate=rotate, mirror=mirror)
    except SourceError:
        return None
    if src.frame_count is None:
        src.close()
        return None
    return src
