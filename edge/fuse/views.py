"""One device's view of one frame, read from its annotation JSON (schema v1).

The devices publish 2D joints normalised to the frame (0-1, x right, y down) with a confidence
per joint, BlazePose's 33 landmarks or their COCO-17 view; fusion works in pixels of the
device's image on COCO-17 (every COCO joint is a BlazePose landmark). A missing joint (null or
absent) becomes NaN with confidence 0.

Nothing here raises anything but :class:`PayloadError` on bad input: a payload from the network
is data, not code, and one malformed message must not stop the service.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.skeleton import COCO17_NAMES

F64 = npt.NDArray[np.float64]

#: Joints fusion works on (COCO-17 order).
JOINTS: tuple[str, ...] = COCO17_NAMES
N_JOINTS = len(JOINTS)
_SCHEMA_VERSION = 1
#: Largest payload accepted, bytes (a 33-joint person is ~3 KB; 64 people fit).
MAX_PAYLOAD_BYTES = 256 * 1024


class PayloadError(ValueError):
    """An annotation payload that is not a usable schema-v1 annotation (says why)."""


@dataclass(frozen=True, eq=False)
class ViewPerson:
    """One person in one view.

    Attributes:
        id: The device's track ID.
        kp: (17, 2) float64, COCO-17 joints, px of the device's image (NaN when missing).
        conf: (17,) float64, confidence 0-1 (0 when missing).
    """

    id: int
    kp: F64
    conf: F64

    def __post_init__(self) -> None:
        kp = np.array(self.kp, np.float64)
        conf = np.array(self.conf, np.float64)
        if kp.shape != (N_JOINTS, 2) or conf.shape != (N_JOINTS,):
            raise ValueError(f"ViewPerson: kp must be ({N_JOINTS}, 2) and conf ({N_JOINTS},), "
                             f"got {kp.shape} and {conf.shape}")
        conf = np.where(np.all(np.isfinite(kp), axis=1), np.nan_to_num(conf), 0.0)
        kp.setflags(write=False)
        conf.setflags(write=False)
        object.__setattr__(self, "kp", kp)
        object.__setattr__(self, "conf", conf)


@dataclass(frozen=True, eq=False)
class ViewFrame:
    """One device's frame.

    Attributes:
        device: The device ID (``device_id``).
        frame_id: Frame index in the device's source.
        ts: Capture time, epoch seconds (files: seconds from the file's start).
        size: ``(width, height)`` of the device's image, px.
        persons: The people the device saw.
    """

    device: str
    frame_id: int
    ts: float
    size: tuple[int, int]
    persons: list[ViewPerson] = field(default_factory=list)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PayloadError(f"{what} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise PayloadError(f"{what} must be finite, got {v}")
    return f


def parse_annotation(payload: bytes | str | dict[str, Any]) -> ViewFrame:
    """Reads one annotation (schema v1) as a view frame in px, COCO-17.

    Only the fields fusion needs are checked (``v``, ``device_id``, ``frame_id``, ``ts``,
    ``image``, ``joints``, ``persons[].id``, ``pose_2d``, ``confidence``); others are ignored.

    Args:
        payload: The JSON text (bytes or str) or the decoded object.

    Returns:
        The frame.

    Raises:
        PayloadError: Not JSON, not an object, another schema version, or a required field
            missing or of the wrong type (the message names it).
    """
    if isinstance(payload, bytes | bytearray | str):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"payload of {len(payload)} bytes is larger than the "
                               f"{MAX_PAYLOAD_BYTES} accepted")
        try:
            data = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PayloadError(f"not JSON: {e}") from None
    else:
        data = payload
    if not isinstance(data, dict):
        raise PayloadError(f"not a JSON object but {type(data).__name__}")
    if data.get("v") != _SCHEMA_VERSION:
        raise PayloadError(f"schema version v={data.get('v')!r}, expected {_SCHEMA_VERSION}")
    device = data.get("device_id")
    if not isinstance(device, str) or not device:
        raise PayloadError("device_id missing or not a string")
    fid = data.get("frame_id")
    if isinstance(fid, bool) or not isinstance(fid, int) or fid < 0:
        raise PayloadError(f"frame_id must be an integer >= 0, got {fid!r}")
    ts = _num(data.get("ts"), "ts")
    image = data.get("image")
    if not isinstance(image, dict):
        raise PayloadError("image {width, height} missing")
    w, h = _num(image.get("width"), "image.width"), _num(image.get("height"), "image.height")
    if w < 1 or h < 1 or w != int(w) or h != int(h):
        raise PayloadError(f"image size must be positive integers, got {w}x{h}")
    joints = data.get("joints")
    if joints not in ("blazepose33", "coco17"):
        raise PayloadError(f"joints must be blazepose33 or coco17, got {joints!r}")
    persons = data.get("persons")
    if not isinstance(persons, list):
        raise PayloadError("persons missing or not a list")
    out = []
    scale = np.array([w, h])
    for i, p in enumerate(persons):
        if not isinstance(p, dict):
            raise PayloadError(f"persons[{i}] is not an object")
        pid = p.get("id")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise PayloadError(f"persons[{i}].id must be an integer, got {pid!r}")
        pose, conf = p.get("pose_2d"), p.get("confidence")
        if not isinstance(pose, dict) or not isinstance(conf, dict):
            raise PayloadError(f"persons[{i}]: pose_2d and confidence must be objects")
        kp = np.full((N_JOINTS, 2), np.nan)
        cf = np.zeros(N_JOINTS)
        for j, name in enumerate(JOINTS):
            xy = pose.get(name)
            if xy is None:
                continue
            if not isinstance(xy, dict):
                raise PayloadError(f"persons[{i}].pose_2d.{name} must be {{x, y}} or null")
            kp[j] = (_num(xy.get("x"), f"persons[{i}].pose_2d.{name}.x"),
                     _num(xy.get("y"), f"persons[{i}].pose_2d.{name}.y"))
            c = conf.get(name, 0.0)
            cf[j] = min(1.0, max(0.0, _num(c, f"persons[{i}].confidence.{name}")))
        out.append(ViewPerson(pid, kp * scale, cf))
    return ViewFrame(device, fid, ts, (int(w), int(h)), out)
