"""Annotation: one frame's result as the versioned JSON of ``annotation.schema.json``.

The annotation is built in one place (:func:`build_annotation`) from the stage results, so the
payload published to files, stdout and MQTT is the same everywhere. 2D joints are normalised to
the frame (0-1, x right, y down), 3D joints are metres relative to the mid-hip (:data:`AXES_3D`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.skeleton import BLAZEPOSE_NAMES, COCO17_FROM_BLAZEPOSE, COCO17_NAMES
from edge.types import Frame, Poses2D, Poses3D

SCHEMA_VERSION = 1
AXES_3D = "x right, y down, z away from the camera; metres; origin midway between the hips"
JointSet = Literal["blazepose33", "coco17"]


@dataclass(frozen=True)
class StageTimings:
    """Milliseconds spent in each stage for one frame (``detect`` None when it did not run)."""

    detect: float | None
    pose2d: float
    pose3d: float
    track: float
    total: float


@dataclass(frozen=True)
class Annotation:
    """One frame's annotation; ``payload`` is the JSON object, valid against the schema.

    ``timings`` are the frame's stage timings even when the payload leaves them out (every-frame
    mode), for local sinks such as the annotated video.
    """

    frame_id: int
    ts: float
    n_persons: int
    payload: dict[str, Any]
    timings: StageTimings | None = None

    def to_json(self) -> str:
        """Compact JSON, keys in a fixed order (identical inputs give identical text)."""
        return json.dumps(self.payload, separators=(",", ":"), allow_nan=False)


@cache
def schema() -> dict[str, Any]:
    """The annotation JSON Schema shipped in the package."""
    text = resources.files("edge").joinpath("annotation.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _joint_view(joints: JointSet) -> tuple[npt.NDArray[np.intp], tuple[str, ...]]:
    if joints == "coco17":
        return COCO17_FROM_BLAZEPOSE, COCO17_NAMES
    return np.arange(len(BLAZEPOSE_NAMES), dtype=np.intp), BLAZEPOSE_NAMES


def build_annotation(frame: Frame, *, device_id: str, models: dict[str, str],
                     track_ids: npt.NDArray[np.int64], poses: Poses2D,
                     poses_3d: Poses3D, timings: StageTimings | None,
                     joints: JointSet = "blazepose33", min_visibility: float = 0.0,
                     publish_timings: bool = True) -> Annotation:
    """Builds the annotation of one frame.

    Args:
        frame: The frame the poses belong to (its id, timestamp and size).
        device_id: The publishing device's id.
        models: Model names per stage: ``detector``, ``pose2d``, ``pose3d``.
        track_ids: (n,) int64 track ids, one per person.
        poses: The n people's 2D poses (frame pixels).
        poses_3d: The n people's 3D joints (metres, root-relative, axes as :data:`AXES_3D`).
        timings: Stage timings of this frame, or None.
        publish_timings: Whether the payload carries them as ``timings_ms``; False in
            every-frame mode, so that reruns give identical output.
        joints: Joint names to publish: BlazePose's 33 or the COCO-17 view.
        min_visibility: Joints with a lower visibility are published as null.

    Returns:
        The annotation.

    Raises:
        ValueError: When the per-person arrays disagree in length or shape.
    """
    n = len(poses)
    if track_ids.shape != (n,):
        raise ValueError(f"track_ids must have shape ({n},), got {track_ids.shape}")
    if len(poses_3d) != n:
        raise ValueError(f"poses_3d has {len(poses_3d)} people, poses {n}")
    joints_3d, names_3d = poses_3d.joints, poses_3d.names
    if set(models) != {"detector", "pose2d", "pose3d"}:
        raise ValueError(f"models must name detector, pose2d and pose3d, got {sorted(models)}")
    h, w = frame.image.shape[:2]
    index, names = _joint_view(joints)
    index_3d = {name: j for j, name in enumerate(names_3d)}
    scale = np.array([w, h], np.float64)
    persons: list[dict[str, Any]] = []
    for i in range(n):
        xy = poses.keypoints[i].astype(np.float64) / scale
        vis = poses.visibility[i].astype(np.float64)
        ok = vis >= min_visibility
        pose_2d: dict[str, dict[str, float] | None] = {}
        conf: dict[str, float] = {}
        pose_3d: dict[str, dict[str, float] | None] = {}
        for b, name in zip(index, names, strict=True):
            pose_2d[name] = ({"x": round(float(xy[b, 0]), 5), "y": round(float(xy[b, 1]), 5)}
                             if ok[b] else None)
            conf[name] = round(float(vis[b]), 4)
            j = index_3d.get(name)
            if j is not None:
                p = joints_3d[i, j].astype(np.float64)
                pose_3d[name] = ({"x": round(float(p[0]), 4), "y": round(float(p[1]), 4),
                                  "z": round(float(p[2]), 4)}
                                 if ok[b] and np.isfinite(p).all() else None)
        seen = poses.keypoints[i][ok] if ok.any() else poses.keypoints[i]
        lo = seen.min(axis=0).astype(np.float64) / scale
        hi = seen.max(axis=0).astype(np.float64) / scale
        persons.append({
            "id": int(track_ids[i]),
            "bbox": {"x1": round(float(lo[0]), 5), "y1": round(float(lo[1]), 5),
                     "x2": round(float(hi[0]), 5), "y2": round(float(hi[1]), 5)},
            "score": round(float(np.clip(poses.presence[i], 0.0, 1.0)), 4),
            "pose_2d": pose_2d,
            "pose_3d": pose_3d,
            "confidence": conf,
        })

    def ms(v: float | None) -> float | None:
        return None if v is None else round(max(float(v), 0.0), 3)

    payload: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "frame_id": int(frame.frame_id),
        "ts": round(float(frame.ts), 6),
        "device_id": device_id,
        "image": {"width": int(w), "height": int(h)},
        "models": {k: models[k] for k in ("detector", "pose2d", "pose3d")},
        "joints": joints,
        "axes_3d": AXES_3D,
        "persons": persons,
    }
    if frame.name:
        payload["file"] = frame.name
    if timings is not None and publish_timings:
        payload["timings_ms"] = {"detect": ms(timings.detect), "pose2d": ms(timings.pose2d),
                                 "pose3d": ms(timings.pose3d), "track": ms(timings.track),
                                 "total": ms(timings.total)}
    return Annotation(frame_id=int(frame.frame_id), ts=float(frame.ts), n_persons=n,
                      payload=payload, timings=timings)
