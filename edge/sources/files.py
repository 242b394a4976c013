"""Video files and still images (one file or a folder of them)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
from PIL import Image

from edge.sources.base import Rotate, SourceEnd, SourceError, turn
from edge.types import U8, Frame

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: What a video file is commonly named (for messages and web URLs; any file OpenCV's FFmpeg
#: opens is read as a video).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})


def header_slack(count: int, fps: float | None) -> int:
    """Frames a video may end short of its header's frame count and still be whole.

    Where a container stores no frame count (AVI, FLV, MPEG-TS, Matroska, WebM), OpenCV
    estimates it from the container's duration, which includes the audio: a whole file whose
    audio runs on past its last picture announces more frames than it holds (the bundled clip
    looped 8 times into AVI / FLV / TS / WebM: 1855-1856 announced, 1840 read; 120 frames as
    MPEG-4 in AVI: 121). A shortfall within 2 s of frames or 2 % of the count is taken for
    that; a larger one is a truncated or damaged file.

    Args:
        count: The header's frame count.
        fps: The file's frame rate, frames/s (30 when unknown).

    Returns:
        The largest shortfall, frames, that is not an error.
    """
    return max(round(2.0 * (fps or 30.0)), count // 50)


def _fourcc(cap: cv2.VideoCapture) -> str:
    """The video's codec as its four-character code (``'avc1'``, ``'av01'``), or its number."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    return repr(text) if text.isprintable() and text.strip() else f"0x{code:08x}"


class VideoFileSource:
    """Every frame of a video file, in order.

    A file's clock is its own: ``Frame.t_capture_ns`` and ``Frame.ts`` are the frame's time in
    the file (its presentation time, :meth:`_stamp`; ns and s from its first frame), so two
    runs over one file see identical timestamps, and trackers and filters see the video's
    timeline whatever the processing speed.
    A file that ends well before the frame count its header announces (more than
    :func:`header_slack`) raises :class:`SourceError` (truncated or corrupt); frames delivered
    before that stay valid. A file none of whose frames can be decoded is refused at open.
    Frames are turned upright by ``rotate`` and ``mirror`` (:func:`~edge.sources.base.turn`)
    before anyone sees them.
    """

    live = False

    def __init__(self, path: Path | str, loop: bool = False, rotate: Rotate = 0,
                 mirror: bool = False) -> None:
        #: True for a video file on a web server (an ``http(s)://`` URL), read by FFmpeg.
        self.remote = isinstance(path, str) and path.startswith(("http://", "https://"))
        self.path = Path(urlsplit(str(path)).path) if self.remote else Path(path)
        self.rotate: Rotate = rotate
        self.mirror = mirror
        self.name = str(path) if self.remote else str(self.path)
        if self.remote:
            avi = self.path.suffix.lower() == ".avi"
        else:
            if not self.path.is_file():
                raise SourceError(f"video {self.path}: no such file")
            with self.path.open("rb") as f:
                head = f.read(12)
            avi = head[:4] == b"RIFF" and head[8:12] == b"AVI "
        # AVI has no presentation times (a frame every 1/rate by construction), and OpenCV
        # reports its frames' times a frame late from the second on: index / rate there.
        self._pts = not avi
        self._cap = cv2.VideoCapture(self.name)
        if not self._cap.isOpened():
            raise SourceError(f"video {self.name}: cannot be opened (not a video, or corrupt)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps: float | None = fps if fps > 0 else None
        self.frame_count: int | None = count if count > 0 else None
        self._loop = loop
        self._next = 0
        self._index = 0
        # The first frame is decoded now, so a video none of whose frames can be decoded (an
        # empty or damaged file, or a codec this OpenCV build lacks, such as AV1) is refused at
        # open with its codec named, not reported later as "truncated".
        ok, image = self._cap.read()
        if not ok or image is None:
            codec = _fourcc(self._cap)
            self._cap.release()
            raise SourceError(
                f"video {self.name}: no frame can be read (codec {codec}): the "
                "file is empty or damaged, or its codec is one OpenCV's FFmpeg cannot decode "
                "(convert it, e.g. to H.264)")
        self._peeked: U8 | None = np.asarray(image, np.uint8)
        self._peeked_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        self._first_ms: float | None = None  # this pass's first frame's presentation time
        self._offset_ns = 0  # the clock at this pass's first frame (loops add up)
        self._last_ns: int | None = None

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
        image: U8 | None = None
        if self._peeked is not None:
            image, self._peeked = self._peeked, None
            ms = self._peeked_ms
        else:
            ok, read = self._cap.read()
            image = np.asarray(read, np.uint8) if ok and read is not None else None
            ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        if image is None:
            if self.frame_count is not None and self._next < self.frame_count:
                if self.frame_count - self._next > header_slack(self.frame_count, self.fps):
                    raise SourceError(
                        f"video {self.name}: frame {self._next} of {self.frame_count} could "
                        "not be read: the file is truncated or corrupt")
                logger.info("video %s: ended after %d frames; its header's %d is an estimate "
                            "(the container's duration, audio included, x the frame rate)",
                            self.name, self._next, self.frame_count)
            if self._loop and self._next > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._next = 0
                self._first_ms = None
                self._offset_ns = (self._last_ns or 0) + self._period_ns()
                return self.read(timeout)
            raise SourceEnd(self.name)
        t_ns = self._stamp(ms)
        image = np.ascontiguousarray(turn(image, self.rotate, self.mirror))
        frame = Frame(image, self._index, t_ns, t_ns / 1e9)
        self._next += 1
        self._index += 1
        return frame

    def _period_ns(self) -> int:
        return round(1e9 / (self.fps or 30.0))

    def _stamp(self, ms: float) -> int:
        """A frame's time on the file's clock, ns from its first frame.

        The frame's presentation time in the file (FFmpeg's, as OpenCV reports it), so a
        variable-frame-rate video (a phone in low light, a screen recording) keeps its real
        timeline; a constant-rate MP4 gets index / frame rate exactly (Matroska and WebM to
        their 1 ms time base). An AVI (no presentation times; OpenCV reports an AVI with audio a
        frame late from its second frame on) is timed by index / frame rate; a time missing, or
        not after the previous frame's, is the previous time plus a frame period.

        Args:
            ms: ``CAP_PROP_POS_MSEC`` after decoding the frame, ms.

        Returns:
            The time, ns, strictly after the previous frame's.
        """
        t: int | None = None
        if not self._pts:
            t = self._offset_ns + round(self._next * 1e9 / (self.fps or 30.0))
        elif np.isfinite(ms) and ms >= 0:
            if self._first_ms is None:
                self._first_ms = ms
            t = self._offset_ns + round((ms - self._first_ms) * 1e6)
        if t is None or (self._last_ns is not None and t <= self._last_ns):
            t = self._offset_ns if self._last_ns is None else self._last_ns + self._period_ns()
        self._last_ns = t
        return t

    def close(self) -> None:
        """Releases the file."""
        self._cap.release()


#: Largest image accepted, pixels (before decoding): 8192 x 8192. Larger ones are refused by
#: their header alone, so a huge image is a clear message, not an out-of-memory kill.
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageTooLargeError(OSError):
    """An image header announces more pixels than Pillow will even describe."""


def image_size(path: Path) -> tuple[int, int]:
    """Width and height of an image file from its header, without decoding the pixels.

    Pillow reads only the header here (``Image.open`` is lazy); OpenCV has no such call.

    Args:
        path: The image file.

    Returns:
        ``(width, height)`` px as stored (before any EXIF rotation).

    Raises:
        ImageTooLargeError: When the header announces a decompression bomb.
        OSError: When the file is not an image Pillow recognises, or cannot be read.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns (and over twice its limit raises) for huge images; the caller applies
            # its own pixel limit with a clearer message, so the header is read regardless.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(str(e)) from None
    except (ValueError, SyntaxError) as e:  # malformed headers Pillow does not map to OSError
        raise OSError(str(e)) from None


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> U8:
    """Reads an image file as (H, W, 3) uint8 BGR, EXIF orientation applied.

    Args:
        path: The image file.
        max_pixels: Images with more pixels are refused before decoding.

    Returns:
        The image; OpenCV turns it upright as its EXIF orientation says.

    Raises:
        SourceError: When the file cannot be read, is not an image, or is too large.
    """
    try:
        w, h = image_size(path)
    except ImageTooLargeError as e:
        raise SourceError(f"image {path}: too large ({e}); at most {max_pixels / 1e6:.0f} MP "
                          "are accepted, scale it down first") from None
    except OSError as e:
        raise SourceError(f"image {path}: cannot be read (not an image, or corrupt: {e})"
                          ) from None
    if w * h > max_pixels:
        raise SourceError(f"image {path}: {w}x{h} is {w * h / 1e6:.0f} MP, more than the "
                          f"{max_pixels / 1e6:.0f} MP accepted; scale it down first")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise SourceError(f"image {path}: cannot be read ({e.strerror or e})") from None
    # imdecode, not imread: imread hands back a truncated JPEG's first rows over grey (only
    # libjpeg's "Premature end of JPEG file" on stderr), imdecode refuses it, as POST /v1/pose
    # does with the same bytes. Both turn a JPEG upright by its EXIF orientation.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"image {path}: cannot be decoded (corrupt or truncated)")
    return np.ascontiguousarray(image)


class ImageFolderSource:
    """One image file, or every image of a folder in name order.

    Images are independent: they may differ in size, and each frame carries its file name
    (``Frame.name``, relative to the folder). An unreadable, corrupt or oversized image of a
    folder is skipped with a warning, counted in ``dropped`` and named in ``skipped``; a single
    image that cannot be read is an error. Images are one second apart on the source's clock
    (``t_capture_ns``, ``ts``), so runs are reproducible. Every image is turned by ``rotate``
    and ``mirror`` after its EXIF orientation (a camera's mounting, as for a stream).
    """

    live = False
    fps: float | None = None

    def __init__(self, path: Path, max_pixels: int = MAX_IMAGE_PIXELS, rotate: Rotate = 0,
                 mirror: bool = False) -> None:
        self.path = Path(path)
        self.rotate: Rotate = rotate
        self.mirror = mirror
        self.name = str(self.path)
        self.max_pixels = max_pixels
        #: The folder the frames' names are relative to (the image's own folder for one image).
        self.root = self.path
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
            if not files:
                videos = sorted(p.name for p in self.path.iterdir()
                                if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
                hint = (f"; it holds {len(videos)} video(s) ({', '.join(videos[:3])}"
                        f"{', ...' if len(videos) > 3 else ''}): give one video file as the "
                        "source" if videos else "")
                raise SourceError(f"folder {self.path}: no images "
                                  f"({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
        elif self.path.is_file():
            files = [self.path]
            self.root = self.path.parent
        else:
            raise SourceError(f"image {self.path}: no such file or folder")
        self._files = files
        self.frame_count: int | None = len(files)
        self._i = 0
        self._index = 0
        #: Files skipped as unreadable, with the reason, in the order met.
        self.skipped: list[tuple[str, str]] = []

    @property
    def dropped(self) -> int:
        """Unreadable images skipped so far."""
        return len(self.skipped)

    def read(self, timeout: float | None = None) -> Frame:
        """The next readable image.

        Raises:
            SourceEnd: After the last image.
            SourceError: When a single-image source cannot be read.
        """
        while self._i < len(self._files):
            path = self._files[self._i]
            self._i += 1
            try:
                image = read_image(path, self.max_pixels)
            except SourceError as e:
                if len(self._files) == 1:
                    raise
                self.skipped.append((str(path.relative_to(self.root)), str(e)))
                logger.warning("%s; skipped", e)
                continue
            frame = Frame(turn(image, self.rotate, self.mirror), self._index,
                          self._index * 1_000_000_000, float(self._index),
                          name=str(path.relative_to(self.root)))
            self._index += 1
            return frame
        raise SourceEnd(self.name)

    def close(self) -> None:
        """Nothing to release."""
