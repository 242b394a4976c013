"""Real photos with people for the tests, fetched from pinned registry packages (sha256-checked).

* ``zidane.jpg`` (1280x720, two men, upper bodies) and ``bus.jpg`` (810x1080, a street with
  people) from the PyPI wheel ``ultralytics==8.4.190`` (``ultralytics/assets/``);
* ``messi5.jpg`` (548x342, one player, full body) from Debian's ``opencv-doc`` 4.6.0 package.

They are fetched once into ``cache/`` (git-ignored) with the registries' ordinary clients
(``pip download``, ``apt-get download``) by the project's pinned-source helpers
(:mod:`models.sources`, :mod:`bench.crowd.sources`), and checked against the sha256 pinned here,
of the package file and of the image. A test that needs one and cannot get it fails.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from bench.crowd.sources import opencv_doc_files
from edge.sources import DEMO_CLIP
from models.sources import Member, Package, extract

CACHE = Path(__file__).resolve().parent.parent / "cache"

ULTRALYTICS = Package("pypi", "ultralytics", "8.4.190", "ultralytics-8.4.190-py3-none-any.whl",
                      "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8")
WHEEL_PHOTOS = {
    "zidane.jpg": Member(ULTRALYTICS, "ultralytics/assets/zidane.jpg",
                         "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
    "bus.jpg": Member(ULTRALYTICS, "ultralytics/assets/bus.jpg",
                      "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
}
DEB_PHOTOS = {"messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"}


def photo(name: str) -> Path:
    """The path of a pinned photo, fetched and verified on first use.

    Args:
        name: ``zidane.jpg``, ``bus.jpg`` or ``messi5.jpg``.

    Returns:
        The verified image file under ``cache/``.

    Raises:
        models.sources.SourceError: When a package or the image does not match its pin, or the
            registry client fails.
    """
    if name in WHEEL_PHOTOS:
        return extract(WHEEL_PHOTOS[name], CACHE / "dl", CACHE / "build" / "src" / "ultralytics")
    return opencv_doc_files({name: DEB_PHOTOS[name]}, CACHE)[name]


def demo_segment(out: Path, first: int, last: int, half: bool = False) -> Path:
    """Frames ``first``..``last - 1`` of the demo clip as an mp4v file at the clip's rate.

    Args:
        out: The file to write.
        first: First frame kept.
        last: Frame after the last one kept.
        half: Halve the width and height (INTER_AREA), for quicker runs.

    Returns:
        ``out``.
    """
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer: cv2.VideoWriter | None = None
    try:
        for i in range(last):
            ok, frame = cap.read()
            assert ok, f"{DEMO_CLIP} ended at frame {i}"
            if i < first:
                continue
            if half:
                frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2),
                                   interpolation=cv2.INTER_AREA)
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(frame)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return out
