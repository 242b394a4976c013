"""Stage results: frozen dataclasses with one numpy array per field, validated at construction.

Coordinates keep their frames apart: ``px`` fields are frame pixels (x right, y down), world
fields are metres. Regions are rotated rectangles ``(cx, cy, w, h, rotation)`` in pixels and
radians; rotation is counter-clockwise-positive in image coordinates as MediaPipe defines it
(the angle that turns the region's "up" onto the hip-to-shoulder direction).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def is_ascii_number(text: str) -> bool:
    """Whether ``text`` is a non-negative integer in ASCII digits (a camera index, a count).

    ``str.isdigit`` alone also takes a superscript two, which ``int`` refuses (a traceback),
    and a fullwidth zero, which ``int`` reads as 0 (camera 0 opened for it).
    """
    return text.isascii() and text.isdigit()


def path_arg(text: str) -> Path:
    """An argparse ``type`` for a path: an empty one is refused (exit 2, naming the option).

    ``Path("")`` is the current folder, so an empty shell variable (``--out "$OUT"``) wrote a
    run's outputs, or read its input, where the command happened to run.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (use . for the current folder)")
    return Path(text)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def _check(name: str, a: npt.NDArray[Any], shape: tuple[int | None, ...], dtype: Any) -> None:
    """Raises ValueError naming ``name`` unless ``a`` has ``shape`` (None = any) and ``dtype``."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape,
                                                                            strict=False)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")


def _n(*arrays: npt.NDArray[Any]) -> int:
    ns = {int(a.shape[0]) for a in arrays}
    if len(ns) != 1:
        raise ValueError(f"fields disagree on the number of people: {sorted(ns)}")
    return ns.pop()


def _frozen(*arrays: npt.NDArray[Any]) -> None:
    for a in arrays:
        a.flags.writeable = False


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image.

    Attributes:
        image: (H, W, 3) uint8, BGR.
        frame_id: Index of the frame in its source, from 0.
        t_capture_ns: The source's monotonic clock at capture, ns: ``time.monotonic_ns()`` for
            live sources; for files, the frame's time in the file. Strictly increasing.
        ts: Capture time published in payloads, epoch seconds for live sources; for files,
            seconds from the file's start.
        name: Where the frame came from when that is more than an index: an image's file
            name (published as the annotation's ``file``); empty otherwise.
    """

    image: U8
    frame_id: int
    t_capture_ns: int
    ts: float
    name: str = ""

    def __post_init__(self) -> None:
        _check("Frame.image", self.image, (None, None, 3), np.uint8)
        if self.image.shape[0] < 1 or self.image.shape[1] < 1:
            raise ValueError(f"Frame.image is empty: {self.image.shape}")


@dataclass(frozen=True, eq=False)
class Detections:
    """Person detections of one frame, in frame pixels.

    Attributes:
        boxes: (n, 4) float32, ``x1, y1, x2, y2`` px of the detector's box (BlazePose: the face).
        scores: (n,) float32, detection probability in [0, 1].
        keypoints: (n, 4, 2) float32, px: mid-hip, a point fixing body size and rotation
            (above the head), mid-shoulder, a second scale point; as the detector emits them.
        regions: (n, 5) float32, body ROI ``cx, cy, w, h`` px and rotation rad.
    """

    boxes: F32
    scores: F32
    keypoints: F32
    regions: F32

    def __post_init__(self) -> None:
        _check("Detections.boxes", self.boxes, (None, 4), np.float32)
        _check("Detections.scores", self.scores, (None,), np.float32)
        _check("Detections.keypoints", self.keypoints, (None, None, 2), np.float32)
        _check("Detections.regions", self.regions, (None, 5), np.float32)
        _n(self.boxes, self.scores, self.keypoints, self.regions)
        _frozen(self.boxes, self.scores, self.keypoints, self.regions)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls, n_keypoints: int = 4) -> Detections:
        """No detections."""
        z = np.zeros
        return cls(z((0, 4), np.float32), z((0,), np.float32),
                   z((0, n_keypoints, 2), np.float32), z((0, 5), np.float32))

    def __getitem__(self, idx: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice
                    ) -> Detections:
        """Selects detections by boolean mask, index array or slice (returns a new object)."""
        return Detections(self.boxes[idx].copy(), self.scores[idx].copy(),
                          self.keypoints[idx].copy(), self.regions[idx].copy())


@dataclass(frozen=True, eq=False)
class Poses2D:
    """Landmarks of n people from the 2D landmark model.

    Attributes:
        keypoints: (n, 33, 2) float32, BlazePose body landmarks in frame pixels.
        depth: (n, 33) float32, the model's relative depth of each landmark, in frame pixels
            (same scale as x; smaller is nearer the camera; origin at the hips).
        visibility: (n, 33) float32, probability in [0, 1] that the landmark is visible.
        presence: (n,) float32, probability in [0, 1] that a person is in the region.
        world: (n, 33, 3) float32, metres, origin between the hips, the model's world landmarks
            (x right, y down, z away from the camera, as MediaPipe defines them).
        regions: (n, 5) float32, the region each crop was cut from, px and rad.
        next_regions: (n, 5) float32, px and rad: the region to crop in the next frame, derived
            from the model's auxiliary landmarks 33 (centre) and 34 (size and rotation) as
            MediaPipe's pose_landmarks_to_roi graph does (what a tracker propagates).
    """

    keypoints: F32
    depth: F32
    visibility: F32
    presence: F32
    world: F32
    regions: F32
    next_regions: F32

    def __post_init__(self) -> None:
        _check("Poses2D.keypoints", self.keypoints, (None, 33, 2), np.float32)
        _check("Poses2D.depth", self.depth, (None, 33), np.float32)
        _check("Poses2D.visibility", self.visibility, (None, 33), np.float32)
        _check("Poses2D.presence", self.presence, (None,), np.float32)
        _check("Poses2D.world", self.world, (None, 33, 3), np.float32)
        _check("Poses2D.regions", self.regions, (None, 5), np.float32)
        _check("Poses2D.next_regions", self.next_regions, (None, 5), np.float32)
        _n(self.keypoints, self.depth, self.visibility, self.presence, self.world, self.regions,
           self.next_regions)
        _frozen(self.keypoints, self.depth, self.visibility, self.presence, self.world,
                self.regions, self.next_regions)

    def __len__(self) -> int:
        return int(self.presence.shape[0])

    @classmethod
    def empty(cls) -> Poses2D:
        """No people."""
        z = np.zeros
        return cls(z((0, 33, 2), np.float32), z((0, 33), np.float32), z((0, 33), np.float32),
                   z((0,), np.float32), z((0, 33, 3), np.float32), z((0, 5), np.float32),
                   z((0, 5), np.float32))

    def replace_rows(self, rows: npt.NDArray[np.intp], other: Poses2D) -> Poses2D:
        """A copy with people ``rows`` replaced by the people of ``other`` (same order).

        Args:
            rows: (k,) row indices into this object.
            other: k poses.

        Returns:
            A new :class:`Poses2D`.

        Raises:
            ValueError: When ``other`` does not have one pose per row.
        """
        if len(other) != len(rows):
            raise ValueError(f"replace_rows: {len(rows)} rows, {len(other)} poses")
        fields = ("keypoints", "depth", "visibility", "presence", "world", "regions",
                  "next_regions")
        out = {}
        for f in fields:
            a = getattr(self, f).copy()
            a[rows] = getattr(other, f)
            out[f] = a
        return Poses2D(**out)

    def __getitem__(self, idx: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Poses2D:
        """Selects people by boolean mask, index array or slice (returns a new object)."""
        return Poses2D(self.keypoints[idx].copy(), self.depth[idx].copy(),
                       self.visibility[idx].copy(), self.presence[idx].copy(),
                       self.world[idx].copy(), self.regions[idx].copy(),
                       self.next_regions[idx].copy())


@dataclass(frozen=True, eq=False)
class Poses3D:
    """Metric 3D joints of n people, root-relative.

    Attributes:
        joints: (n, J, 3) float32, metres, origin midway between the hips; x right, y down,
            z away from the camera (MediaPipe's world-landmark axes).
        names: The J joint names (BlazePose names, lower case), in ``joints`` order.
    """

    joints: F32
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        _check("Poses3D.joints", self.joints, (None, len(self.names), 3), np.float32)
        _frozen(self.joints)

    def __len__(self) -> int:
        return int(self.joints.shape[0])

    @classmethod
    def empty(cls, names: tuple[str, ...]) -> Poses3D:
        """No people."""
        return cls(np.zeros((0, len(names), 3), np.float32), names)


@dataclass(frozen=True, eq=False)
class DetectorResult:
    """The detector's output for one frame, as handed from its thread to the core.

    Attributes:
        detections: What it found.
        frame_id: The frame it ran on.
        t_s: That frame's capture time, monotonic seconds.
        ms: How long the detector took, ms.
    """

    detections: Detections
    frame_id: int
    t_s: float
    ms: float
