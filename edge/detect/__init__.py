"""Person detectors behind one protocol: a frame in, :class:`~edge.types.Detections` out.

* :mod:`edge.detect.blazepose` — BlazePose's SSD detector (finds a face, gives a rotated body
  region from two keypoints), decoded as MediaPipe's pose_detection graph does.
* :mod:`edge.detect.tiles` — any frame detector run on the whole frame and on overlapping tiles
  in rotation, so that people too small for one whole-frame pass are found.

Every detector is a callable ``(image_bgr (H, W, 3) uint8) -> Detections`` in frame pixels, best
first, with a body region per detection for the landmark model (:class:`PersonDetector`).
"""

from __future__ import annotations

from typing import Protocol

from edge.detect.blazepose import (
    DetectorConfig,
    Letterbox,
    PoseDetector,
    decode,
    preprocess,
    regions_from_keypoints,
    ssd_anchors,
    validate_image,
    weighted_nms,
)
from edge.types import U8, Detections

__all__ = [
    "DetectorConfig",
    "Letterbox",
    "PersonDetector",
    "PoseDetector",
    "decode",
    "preprocess",
    "regions_from_keypoints",
    "ssd_anchors",
    "validate_image",
    "weighted_nms",
]


class PersonDetector(Protocol):
    """What the scheduler needs of a person detector."""

    def __call__(self, image_bgr: U8) -> Detections:
        """Detects people in one (H, W, 3) uint8 BGR frame; frame px, best first."""
        ...
