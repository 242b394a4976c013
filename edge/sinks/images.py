"""Still-image outputs: annotated images in a folder, and a COCO keypoints results file."""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Any

import cv2

from edge import __version__
from edge.annotation import Annotation
from edge.sinks.base import SinkError
from edge.sinks.files import write_atomically
from edge.sinks.video import draw_annotation
from edge.skeleton import COCO17_NAMES
from edge.types import Frame

#: COCO's person skeleton (1-based keypoint indices), for the ``categories`` entry.
_COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                  [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                  [4, 6], [5, 7]]

#: A keypoint whose visibility probability reaches this is marked visible (v = 2), else 1.
VISIBLE = 0.5


def _safe_relative(name: str, fallback: str) -> PurePath:
    """A file name as a relative path inside the output folder (no ``..``, no root)."""
    p = PurePath(name)
    if not name or p.is_absolute() or ".." in p.parts:
        return PurePath(fallback)
    return p


class ImagesSink:
    """Writes each frame, annotated, as an image file under ``folder``.

    The file keeps the frame's name (``Frame.name``, the source image's path relative to its
    folder), so ``photos/a.jpg`` becomes ``folder/a.jpg``; frames without a name are
    ``frame_<id>.jpg``.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"images {self.path}: cannot be written ({e})") from None
        self.images = 0

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Draws the annotation and writes the image."""
        rel = _safe_relative(frame.name, f"frame_{frame.frame_id:06d}.jpg")
        out = self.path / rel
        if out.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}:
            out = out.with_suffix(".jpg")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            ok = cv2.imwrite(str(out), draw_annotation(frame.image, annotation, header=False))
        except (OSError, cv2.error) as e:
            raise SinkError(f"images {out}: write failed ({e})") from None
        if not ok:
            raise SinkError(f"images {out}: write failed")
        self.images += 1

    def close(self) -> None:
        """Nothing is buffered."""


def coco_person(annotation_payload: dict[str, Any], person: dict[str, Any], image_id: int,
                ann_id: int) -> dict[str, Any]:
    """One person of an annotation as a COCO keypoints result.

    Args:
        annotation_payload: The annotation JSON (schema v1) the person belongs to.
        person: One entry of its ``persons``.
        image_id: The COCO image id.
        ann_id: The result's id.

    Returns:
        ``{"id", "image_id", "category_id": 1, "keypoints": [x, y, v] x 17 px, "num_keypoints",
        "bbox": [x, y, w, h] px, "area", "iscrowd": 0, "score", "track_id"}``; a joint published
        as null (below ``min_visibility``) is ``0, 0, 0``; ``v`` is 2 when the joint's
        visibility reaches :data:`VISIBLE`, else 1.
    """
    w = float(annotation_payload["image"]["width"])
    h = float(annotation_payload["image"]["height"])
    pose: dict[str, Any] = person["pose_2d"]
    conf: dict[str, float] = person["confidence"]
    kps: list[float] = []
    n_vis = 0
    for name in COCO17_NAMES:
        p = pose.get(name)
        if p is None:
            kps += [0.0, 0.0, 0]
            continue
        v = 2 if conf.get(name, 0.0) >= VISIBLE else 1
        n_vis += 1
        kps += [round(p["x"] * w, 2), round(p["y"] * h, 2), v]
    b = person["bbox"]
    x1, y1 = b["x1"] * w, b["y1"] * h
    bw, bh = max(0.0, (b["x2"] - b["x1"]) * w), max(0.0, (b["y2"] - b["y1"]) * h)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kps,
            "num_keypoints": n_vis,
            "bbox": [round(x1, 2), round(y1, 2), round(bw, 2), round(bh, 2)],
            "area": round(bw * bh, 2), "iscrowd": 0, "score": float(person["score"]),
            "track_id": int(person["id"])}


class CocoKeypointsSink:
    """Collects every person as a COCO keypoints result and writes one JSON file on close.

    The file is a COCO dataset-style object: ``images`` (id, file_name, width, height),
    ``annotations`` (the results, with ``score``; :func:`coco_person`) and ``categories``
    (person, with COCO's 17 keypoint names and skeleton). pycocotools reads it as it is:
    ``COCO(path)`` loads it, and ``coco.loadRes(data["annotations"])`` takes the results for
    ``COCOeval`` against another dataset's images of the same file names. It is written to a
    temporary file and renamed, so a crash never leaves half a file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"coco {self.path}: cannot be written ({e})") from None
        self._images: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        self._closed = False

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Adds the frame's image and its people."""
        payload = annotation.payload
        image_id = len(self._images) + 1
        self._images.append({"id": image_id,
                             "file_name": frame.name or f"frame_{frame.frame_id:06d}",
                             "width": int(payload["image"]["width"]),
                             "height": int(payload["image"]["height"]),
                             "frame_id": int(frame.frame_id)})
        for person in payload["persons"]:
            self._annotations.append(coco_person(payload, person, image_id,
                                                 len(self._annotations) + 1))

    def close(self) -> None:
        """Writes the file (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        data = {"info": {"description": "edge-pose keypoint results (COCO format)",
                         "version": __version__},
                "images": self._images, "annotations": self._annotations,
                "categories": [{"id": 1, "name": "person", "supercategory": "person",
                                "keypoints": list(COCO17_NAMES), "skeleton": _COCO_SKELETON}]}
        try:
            write_atomically(self.path, json.dumps(data, separators=(",", ":"), allow_nan=False))
        except (OSError, ValueError) as e:  # a full disk; a non-finite number (a bug)
            raise SinkError(f"coco {self.path}: write failed ({e})") from None
