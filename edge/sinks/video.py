"""Annotated video: skeletons, track ids and per-stage rates drawn on each frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def draw_annotation(image: npt.NDArray[np.uint8], annotation: Annotation
                    ) -> npt.NDArray[np.uint8]:
    """Draws an annotation on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 BGR frame the annotation belongs to.
        annotation: Its annotation.

    Returns:
        A new (H, W, 3) uint8 BGR image.
    """
    out = image.copy()
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


class VideoSink:
    """Writes annotated frames to an MP4 (``mp4v``) file."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"video {self.path}: cannot be written ({e})") from None

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Draws and appends one frame (the first frame fixes the video's size)."""
        h, w = frame.image.shape[:2]
        if self._writer is None:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), self.fps,
                                     (w, h))
            if not writer.isOpened():
                raise SinkError(f"video {self.path}: cannot open an mp4v writer")
            self._writer, self._size = writer, (w, h)
        if (w, h) != self._size:
            raise SinkError(f"video {self.path}: frame size {w}x{h} differs from {self._size}")
        self._writer.write(draw_annotation(frame.image, annotation))
        self.frames += 1

    def close(self) -> None:
        """Finishes the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
