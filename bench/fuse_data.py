"""The two calibrated 4-camera Pose2Sim scenes, run through edge-pose view by view.

``pose2sim==0.10.49`` (pinned in :mod:`models.sources`, wheel and every member sha256-checked)
ships ``Demo_SinglePerson`` (one person) and ``Demo_MultiPerson`` (two people): four synchronised
60 fps views of 100 frames each and one Qualisys calibration (the same file for both).

:func:`scene` runs ``edge-pose`` on each view in every-frame mode (deterministic: a file's
``ts`` is its own clock, frame index / frame rate, identical across the views of one scene) and
caches each view's ``annotations.jsonl`` under ``cache/build/fuse/<scene>/camNN/``, keyed by the
video's sha256, the model manifest's sha256 and the run settings, so a rerun costs nothing.

:func:`fused_reference` fuses a scene and returns its 3D joints: the reference single-camera 3D
(the lifter, the world landmarks) is scored against (MPJPE after root alignment, PA-MPJPE).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.runtime import sha256_file
from models import sources
from models.sources import Member

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "cache"

#: Scene name -> (the four views, the calibration).
SCENES: dict[str, tuple[tuple[Member, ...], Member]] = {
    "single": (sources.POSE2SIM_CAMS, sources.POSE2SIM_CALIB),
    "multi": (sources.POSE2SIM_MULTI_CAMS, sources.POSE2SIM_MULTI_CALIB),
}

#: Settings of the per-view runs (part of the cache key). The 2D model's left/right label flips
#: are kept (``models.left_right`` off): the fuser's own swap fixing is measured on them, and
#: the lifter's development set (``edge.bench.lift.multi_tracks``) is where the per-device
#: guard is measured.
RUN_SETTINGS: dict[str, object] = {"mode": "every-frame", "threads": 1, "joints": "blazepose33",
                                   "max_persons": 6, "left_right": False}


@dataclass(frozen=True)
class Scene:
    """One scene's inputs and per-view annotations.

    Attributes:
        name: ``single`` or ``multi``.
        videos: The four views' video files, cam01..cam04.
        calib: The Qualisys calibration file.
        jsonl: Each view's ``annotations.jsonl`` (device ids ``cam01``..``cam04``).
    """

    name: str
    videos: tuple[Path, ...]
    calib: Path
    jsonl: tuple[Path, ...]


def _annotate(video: Path, device: str, out: Path) -> None:
    """Runs ``edge-pose run --every-frame`` on one view into ``out`` (annotations.jsonl only)."""
    import io

    from edge.cli import run
    from edge.config import parse_config

    config = parse_config({
        "source": {"uri": str(video)},
        "scheduler": {"mode": RUN_SETTINGS["mode"]},
        "models": {"threads": RUN_SETTINGS["threads"], "left_right": RUN_SETTINGS["left_right"]},
        "tracking": {"max_persons": RUN_SETTINGS["max_persons"]},
        "annotation": {"device_id": device, "joints": RUN_SETTINGS["joints"]},
        "output": {"dir": str(out), "video": False},
        "mqtt": {"enabled": False},
    }, f"fuse scene view {device}")
    code = run(config, progress=False, stream=io.StringIO())
    if code != 0:
        raise RuntimeError(f"edge-pose run on {video} exited {code}")


def scene(name: str, cache: Path = CACHE) -> Scene:
    """A scene's views, calibration and per-view annotations (computed once, then cached).

    Args:
        name: ``single`` or ``multi``.
        cache: The cache folder: wheels in ``cache/dl``, members under ``cache/build/src``,
            annotations under ``cache/build/fuse``.

    Returns:
        The scene.

    Raises:
        models.sources.SourceError: A pinned file is missing or does not match its sha256.
        RuntimeError: edge-pose failed on a view.
    """
    cams, calib_member = SCENES[name]
    src = cache / "build" / "src"
    videos = tuple(sources.extract(m, cache / "dl", src) for m in cams)
    calib = sources.extract(calib_member, cache / "dl", src)
    manifest = sha256_file(ROOT / "models" / "manifest.json")
    out: list[Path] = []
    for i, (video, member) in enumerate(zip(videos, cams, strict=True)):
        device = f"cam{i + 1:02d}"
        folder = cache / "build" / "fuse" / name / device
        key = json.dumps({"video": member.sha256, "manifest": manifest, "device": device,
                          **RUN_SETTINGS}, sort_keys=True)
        stamp = folder / "key.json"
        jsonl = folder / "annotations.jsonl"
        if not (stamp.is_file() and stamp.read_text(encoding="utf-8") == key
                and jsonl.is_file()):
            logger.info("running edge-pose on %s (%s)", video, device)
            folder.mkdir(parents=True, exist_ok=True)
            stamp.unlink(missing_ok=True)
            _annotate(video, device, folder)
            stamp.write_text(key, encoding="utf-8")
        out.append(jsonl)
    return Scene(name, videos, calib, tuple(out))


def fused_reference(name: str, cache: Path = CACHE
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The fused multi-view 3D of a scene's first fused person: the reference for 1-view 3D.

    Every view is fused with the default :class:`edge.fuse.fuser.FuseSettings`, smoothing and
    limb steadying off, so the reference is the triangulation itself (measured, not filtered);
    frames where fused person 1 is absent are left out. Score a single-camera 3D estimate of
    view ``camNN`` frame ``f`` against ``joints[frames == f]`` after moving both to the
    calibration's world frame or aligning roots (MPJPE) and by Procrustes (PA-MPJPE).

    Args:
        name: ``single`` or ``multi``.
        cache: The cache folder.

    Returns:
        ``(frames, joints)``: (n,) int64 frame indices (identical in every view), and
        (n, 17, 3) float64 COCO-17 joints, metres, in the calibration's world frame (NaN where
        a joint was not triangulated).
    """
    from edge.fuse.calib import read_calibration
    from edge.fuse.fuser import FuseSettings
    from edge.fuse.offline import fuse_jsonl

    sc = scene(name, cache)
    calib = read_calibration(sc.calib)
    devices = {f"cam{i + 1:02d}": cam for i, cam in enumerate(calib.cameras)}
    settings = FuseSettings(smoothing=False, limb_window=0)
    frames: list[int] = []
    joints: list[npt.NDArray[np.float64]] = []
    for fused in fuse_jsonl(sc.jsonl, calib, devices, settings):
        for p in fused.persons:
            if p.id == 1:
                frames.append(fused.frame_id)
                joints.append(p.joints)
    return (np.asarray(frames, np.int64),
            np.asarray(joints, np.float64).reshape(-1, 17, 3))
