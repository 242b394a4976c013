"""Real people: the landmark model's 2D landmarks paired with its own world landmarks.

Frames of the pinned videos go through the detector and the float landmark model (the original
MediaPipe files, ``cache/orig``), tracked from frame to frame by the landmark model's next
region as MediaPipe does, re-detected when a track is lost. Each person-frame gives the COCO-17
2D landmarks (pixels, visibility) and the world landmarks (metres, re-rooted at mid-hip) as a
training pair; consecutive frames of one track form sequences.

Videos: the Sports2D demo (2 people, training) and the four Pose2Sim views of one person
(held out: evaluation only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.skeleton import COCO17_FROM_BLAZEPOSE
from models import sources

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

ROOT = Path(__file__).resolve().parent.parent
TRAIN_VIDEOS: tuple[Path, ...] = (ROOT / "edge" / "assets" / "sports2d_demo.mp4",)
#: Where models.sources extracts the pinned packages' members (as `make models` does).
SOURCES_DIR = ROOT / "cache" / "build" / "src"
HELDOUT_VIDEOS: tuple[Path, ...] = tuple(SOURCES_DIR / m.path for m in sources.POSE2SIM_CAMS)


def fetch_sources(cache: Path = ROOT / "cache") -> None:
    """Fetches (pip download) and extracts the Pose2Sim clips and calibration, sha256-checked."""
    for member in (*sources.POSE2SIM_CAMS, sources.POSE2SIM_CALIB):
        sources.extract(member, cache / "dl", SOURCES_DIR)


@dataclass(frozen=True)
class RealSet:
    """Person-frames with 2D landmarks and world landmarks, COCO-17.

    Attributes:
        kp: (n, 17, 2) float32 pixels.
        conf: (n, 17) float32 visibility.
        world: (n, 17, 3) float32 metres, root-relative (x right, y down, z away).
        size_px: (n,) float32, pixels per metre at the person (from 2D vs world extent).
        track: (n,) int, sequence id; frames of a track contiguous and in time order.
        frame: (n,) int, frame index in its video.
        video: (n,) int, index of the video in the list it was built from.
    """

    kp: F32
    conf: F32
    world: F32
    size_px: F32
    track: npt.NDArray[np.intp]
    frame: npt.NDArray[np.intp]
    video: npt.NDArray[np.intp]

    def window_starts(self, frames: int) -> npt.NDArray[np.intp]:
        """Indices i such that i .. i+frames-1 are consecutive frames of one track."""
        n = len(self.kp)
        if n < frames:
            return np.zeros(0, np.intp)
        i = np.arange(n - frames + 1)
        ok = self.track[i] == self.track[i + frames - 1]
        return np.asarray(i[ok], np.intp)

    def save(self, path: Path) -> None:
        """Writes the set as an .npz."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, kp=self.kp, conf=self.conf, world=self.world,
                            size_px=self.size_px, track=self.track, frame=self.frame,
                            video=self.video)

    @classmethod
    def load(cls, path: Path) -> RealSet:
        """Reads a set written by :meth:`save`."""
        with np.load(path) as z:
            return cls(z["kp"], z["conf"], z["world"], z["size_px"], z["track"], z["frame"],
                       z["video"])


def extract(videos: tuple[Path, ...], max_people: int = 2, min_presence: float = 0.5,
            models_dir: Path | None = None) -> RealSet:
    """Runs detector + landmark model over videos and collects person-frames.

    Args:
        videos: Video files.
        max_people: Most tracks kept per frame.
        min_presence: Person-frames below this pose presence are dropped (track ends).
        models_dir: Folder with the original float models' manifest (``cache/orig``).

    Returns:
        The pairs.
    """
    from edge.detect import PoseDetector
    from edge.pose2d import PoseLandmarker
    from edge.runtime import load_manifest, load_model

    # The shipped float detector and landmark files give the originals' outputs exactly
    # (models/README.md, "Rewrite"), so they stand in for the originals here.
    manifest = load_manifest(models_dir or ROOT / "models")
    det = PoseDetector(load_model("detector_float", 1, manifest))
    lmk = PoseLandmarker(load_model("landmark_full_float", 1, manifest))
    kps, cfs, wds, sizes, tracks, frames, vids = [], [], [], [], [], [], []
    next_track = 0
    for vi, path in enumerate(videos):
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        regions = np.zeros((0, 5), np.float32)
        ids: list[int] = []
        fi = 0
        while True:
            ok, raw = cap.read()
            if not ok:
                break
            frame = np.asarray(raw, np.uint8)
            if len(regions) < max_people:
                d = det(frame)
                new = np.asarray(d.regions, np.float32)
                # keep detections that do not overlap a tracked region's centre
                for r in new:
                    if len(regions) >= max_people:
                        break
                    if len(regions) and np.min(np.linalg.norm(
                            regions[:, :2] - r[None, :2], axis=1) / np.maximum(
                            regions[:, 2], 1)) < 0.3:
                        continue
                    regions = np.concatenate([regions, r[None]])
                    ids.append(next_track)
                    next_track += 1
            if len(regions) == 0:
                fi += 1
                continue
            poses = lmk(frame, regions)
            keep = np.asarray(poses.presence) >= min_presence
            for k in np.flatnonzero(keep):
                kp = poses.keypoints[k][COCO17_FROM_BLAZEPOSE]
                w = poses.world[k][COCO17_FROM_BLAZEPOSE]
                w = w - 0.5 * (w[11] + w[12])
                ext2 = np.linalg.norm(kp - kp.mean(0), axis=1).mean()
                ext3 = np.linalg.norm(w[:, :2] - w[:, :2].mean(0), axis=1).mean()
                kps.append(kp)
                cfs.append(poses.visibility[k][COCO17_FROM_BLAZEPOSE])
                wds.append(w)
                sizes.append(ext2 / max(ext3, 1e-3))
                tracks.append(ids[k])
                frames.append(fi)
                vids.append(vi)
            regions = np.asarray(poses.next_regions, np.float32)[keep]
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
            fi += 1
        cap.release()
        logger.info("%s: %d frames", path.name, fi)
    order = np.lexsort((np.array(frames), np.array(tracks)))
    return RealSet(
        np.asarray(kps, np.float32)[order], np.asarray(cfs, np.float32)[order],
        np.asarray(wds, np.float32)[order], np.asarray(sizes, np.float32)[order],
        np.asarray(tracks, np.intp)[order], np.asarray(frames, np.intp)[order],
        np.asarray(vids, np.intp)[order])
