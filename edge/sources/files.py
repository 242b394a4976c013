"""Video files and still images (one file or a folder of them)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge.sources.base import SourceEnd, SourceError
from edge.types import Frame

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


class VideoFileSource:
    """Every frame of a video file, in order.

    A file's clock is its own: ``Frame.t_capture_ns`` and ``Frame.ts`` are the frame's time in
    the file (from the frame index and the file's frame rate; ns and s from its start), so two
    runs over one file see identical timestamps, and trackers and filters see the video's
    timeline whatever the processing speed.
    A file that ends before the frame count its header announces raises :class:`SourceError`
    (truncated or corrupt); frames delivered before that stay valid.
    """

    live = False

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise SourceError(f"video {self.path}: no such file")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"video {self.path}: cannot be opened (not a video, or corrupt)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps: float | None = fps if fps > 0 else None
        self.frame_count: int | None = count if count > 0 else None
        self._loop = loop
        self._next = 0
        self._index = 0

    @property
    def dropped(self) -> int:
        """A file source drops nothing."""
        return 0

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame.

        Raises:
            SourceEnd: After the last frame.
            SourceError: The file ended early or a frame could not be decoded.
        """
        ok, image = self._cap.read()
        if not ok or image is None:
            if self.frame_count is not None and self._next < self.frame_count:
                raise SourceError(
                    f"video {self.path}: frame {self._next} of {self.frame_count} could not be "
                    "read: the file is truncated or corrupt")
            if self._loop and self._next > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._next = 0
                return self.read(timeout)
            raise SourceEnd(self.name)
        fps = self.fps or 30.0
        frame = Frame(np.ascontiguousarray(image), self._index, round(self._index * 1e9 / fps),
                      self._index / fps)
        self._next += 1
        self._index += 1
        return frame

    def close(self) -> None:
        """Releases the file."""
        self._cap.release()


class ImageFolderSource:
    """One image file, or every image of a folder in name order.

    An unreadable image is skipped with a warning and counted in ``dropped``. Images are one
    second apart on the source's clock (``t_capture_ns``, ``ts``), so runs are reproducible.
    """

    live = False
    fps: float | None = None

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SourceError(f"folder {self.path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        elif self.path.is_file():
            files = [self.path]
        else:
            raise SourceError(f"image {self.path}: no such file or folder")
        self._files = files
        self.frame_count: int | None = len(files)
        self._i = 0
        self._index = 0
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Unreadable images skipped so far."""
        return self._dropped

    def read(self, timeout: float | None = None) -> Frame:
        """The next readable image.

        Raises:
            SourceEnd: After the last image.
            SourceError: When a single-image source cannot be read.
        """
        while self._i < len(self._files):
            path = self._files[self._i]
            self._i += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                if len(self._files) == 1:
                    raise SourceError(f"image {path}: cannot be read (not an image, or corrupt)")
                self._dropped += 1
                logger.warning("image %s cannot be read; skipped", path)
                continue
            frame = Frame(np.ascontiguousarray(image), self._index, self._index * 1_000_000_000,
                          float(self._index))
            self._index += 1
            return frame
        raise SourceEnd(self.name)

    def close(self) -> None:
        """Nothing to release."""
