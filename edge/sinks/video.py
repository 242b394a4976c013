"""Annotated video: skeletons, track ids and per-stage rates drawn on each frame."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.annotation import Annotation
from edge.sinks.base import SinkError
from edge.skeleton import BLAZEPOSE_BONES
from edge.types import Frame

_BONES = tuple((a.name.lower(), b.name.lower()) for a, b in BLAZEPOSE_BONES)


def _colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per track id (golden-ratio hue steps)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_annotation(image: npt.NDArray[np.uint8], annotation: Annotation, *,
                    inplace: bool = False, header: bool = True) -> npt.NDArray[np.uint8]:
    """Draws an annotation on a copy of ``image``, or on ``image`` itself.

    Args:
        image: (H, W, 3) uint8 BGR frame the annotation belongs to (writable when ``inplace``).
        annotation: Its annotation.
        inplace: Draw on ``image`` (no copy of the frame: 0.7-1 ms for 1768x994).
        header: Write the frame number and the stages' rates at the top left (a video's; a
            photo's drawing has only its people).

    Returns:
        The (H, W, 3) uint8 BGR image drawn on: a new one, or ``image`` when ``inplace``.
    """
    out = image if inplace else image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    payload = annotation.payload

    def px(p: dict[str, float]) -> tuple[int, int]:
        return round(p["x"] * w), round(p["y"] * h)

    for person in payload["persons"]:
        colour = _colour(int(person["id"]))
        pose: dict[str, Any] = person["pose_2d"]
        for a, b in _BONES:
            pa, pb = pose.get(a), pose.get(b)
            if pa is not None and pb is not None:
                cv2.line(out, px(pa), px(pb), colour, thick, cv2.LINE_AA)
        for p in pose.values():
            if p is not None:
                cv2.circle(out, px(p), thick + 1, colour, -1, cv2.LINE_AA)
        box = person["bbox"]
        x1, y1 = px({"x": box["x1"], "y": box["y1"]})
        cv2.putText(out, f"#{person['id']}", (x1, max(y1 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * thick, colour, thick, cv2.LINE_AA)
    if not header:
        return out
    t = annotation.timings
    if t is not None:
        parts = [f"{k} {1000.0 / v:5.0f} fps" if v else f"{k}   -  "
                 for k, v in (("det", t.detect), ("2D", t.pose2d), ("3D", t.pose3d))]
        text = f"frame {payload['frame_id']}  " + "  ".join(parts)
    else:
        text = f"frame {payload['frame_id']}"
    cv2.putText(out, text, (8, 8 + 16 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick,
                (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(out, text, (8, 8 + 16 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick,
                (255, 255, 255), thick, cv2.LINE_AA)
    return out


VideoCodec = Literal["mp4v", "mjpeg"]

#: JPEG quality of ``mjpeg`` videos (libjpeg-turbo, 4:2:0). On the demo clip q75 keeps
#: 36.7 dB PSNR against the drawn frames (``mp4v``: 36.0 dB at 52 kB a frame), 254 kB a
#: 1768x994 frame, and encodes and muxes in 15 % less CPU than q85 (38.2 dB, 329 kB);
#: bench/RESULTS.md.
MJPEG_QUALITY = 75


def choose_codec(choice: str, *, realtime: bool) -> VideoCodec:
    """The codec an ``output.video_codec`` choice means for a run.

    ``auto`` is ``mjpeg`` in every-frame runs, which wait for the writer (lossless), so its CPU
    time is the run's on a small host: about half of ``mp4v``'s. In realtime runs it is
    ``mp4v``: the writer drops frames rather than slow the core, and a long run's file is
    about a fifth of the size.

    Args:
        choice: ``auto``, ``mp4v`` or ``mjpeg``.
        realtime: Whether the run is a realtime one (live sources, ``--realtime``).

    Raises:
        ValueError: An unknown choice.
    """
    if choice == "auto":
        return "mp4v" if realtime else "mjpeg"
    if choice == "mp4v":
        return "mp4v"
    if choice == "mjpeg":
        return "mjpeg"
    raise ValueError(f"video codec must be auto, mp4v or mjpeg, got {choice!r}")


#: What OpenCV prints when it takes the container's tag for a codec (:func:`_without_tag_notice`).
_TAG_NOTICE = (b"OpenCV: FFMPEG: tag ", b"OpenCV: FFMPEG: fallback to use tag ")


@contextlib.contextmanager
def _without_tag_notice() -> Iterator[None]:
    """Drops OpenCV's notice that it used the container's own tag for the codec.

    OpenCV prints it with ``fprintf`` (no log level silences it) whenever the FourCC given is not
    the container's tag for the codec. That is always so for Motion JPEG in MP4: its tag there is
    ``mp4v``, which as a FourCC means MPEG-4 Part 2, so no FourCC selects it quietly. Standard
    error (file descriptor 2) goes to a temporary file while the writer opens; every other line
    is written back.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no standard error to guard
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not line.startswith(_TAG_NOTICE)]
            if kept:
                os.write(2, b"".join(kept))


class VideoSink:
    """Writes annotated frames to a video file, at the source's size.

    Two codecs, both through OpenCV's FFmpeg and both writing every frame given; the container
    follows the file's extension (``.mp4``, ``.mov``, ``.avi``, ...):

    * ``mp4v`` (MPEG-4 Part 2): small files (~50 kB a 1768x994 frame); FFmpeg's encoder
      converts the colours and runs motion estimation: 10-11.5 ms of CPU a 1768x994 frame on
      the build host, single thread;
    * ``mjpeg`` (Motion JPEG): every frame is a JPEG encoded by OpenCV's libjpeg-turbo and
      handed to the muxer as is (FFmpeg's raw-stream mode, no second encode): 5.3-6.5 ms a
      frame, files about 5x larger (q75, :data:`MJPEG_QUALITY`). For runs where the writer's
      CPU time matters more than the disk (every-frame runs on 2 cores). In an MP4 it is the
      registered JPEG object type (FFmpeg, VLC, mpv and OpenCV play it).

    Args:
        path: The video file (its folder is created).
        fps: Frame rate written in the file's header.
        codec: ``mp4v`` or ``mjpeg``.
    """

    def __init__(self, path: Path, fps: float, codec: VideoCodec = "mp4v") -> None:
        if codec not in ("mp4v", "mjpeg"):
            raise ValueError(f"video codec must be mp4v or mjpeg, got {codec!r}")
        self.path = Path(path)
        self.fps = fps
        self.codec = codec
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"video {self.path}: cannot be written ({e})") from None

    def open(self, width: int, height: int) -> None:
        """Opens the encoder for frames of ``width`` x ``height`` px.

        Once; the first frame does it when not called.
        """
        if self._writer is not None:
            return
        w, h = width, height
        if self.codec == "mjpeg":
            quiet = (_without_tag_notice() if self.path.suffix.lower() in (".mp4", ".m4v")
                     else contextlib.nullcontext())
            with quiet:
                writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG,
                                         cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (w, h),
                                         [cv2.VIDEOWRITER_PROP_RAW_VIDEO, 1])
        else:
            writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG,
                                     cv2.VideoWriter.fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise SinkError(f"video {self.path}: cannot open an {self.codec} writer (is the "
                            "path a writable file?)")
        self._writer, self._size = writer, (w, h)

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Draws and appends one frame (the first frame fixes the video's size)."""
        h, w = frame.image.shape[:2]
        if self._writer is None:
            self.open(w, h)
        if (w, h) != self._size:
            raise SinkError(f"video {self.path}: frame size {w}x{h} differs from {self._size}")
        self.append(draw_annotation(frame.image, annotation))

    def append(self, drawn: npt.NDArray[np.uint8]) -> None:
        """Encodes one already drawn (H, W, 3) uint8 BGR frame (the first one opens the file)."""
        if self._writer is None:
            self.open(drawn.shape[1], drawn.shape[0])
        assert self._writer is not None
        if (drawn.shape[1], drawn.shape[0]) != self._size:
            raise SinkError(f"video {self.path}: frame size {drawn.shape[1]}x{drawn.shape[0]} "
                            f"differs from {self._size}")
        if self.codec == "mjpeg":
            ok, jpeg = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, MJPEG_QUALITY])
            if not ok:
                raise SinkError(f"video {self.path}: JPEG encoding failed")
            self._writer.write(jpeg.reshape(1, -1))
        else:
            self._writer.write(drawn)
        self.frames += 1

    def close(self) -> None:
        """Finishes the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
