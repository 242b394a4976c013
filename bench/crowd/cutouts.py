"""Real people cut out of the pinned clips: image, alpha mask and pseudo ground-truth keypoints.

Each clip goes through edge-pose's own detector (``edge.detect.PoseDetector``, the shipped float
file, which gives the original's outputs exactly) and, for every tracked region, through the
**original** float landmark model ``pose_landmark_full.tflite`` of the pinned npm package
(``models.sources.LANDMARK_FULL``): the shipped landmark files had their segmentation and heatmap
heads pruned, the original still has both. From one call on the region's crop come:

- the 33 landmarks, refined from the heatmap and mapped to frame px exactly as edge-pose does
  (``edge.pose2d.decode_landmarks``), of which the COCO-17 subset is the pseudo ground truth,
  with the model's visibility;
- the segmentation ``Identity_2`` (1, 256, 256, 1) logits in the crop, warped back to the frame
  with the crop's affine: ``sigmoid`` of it is the alpha mask;
- the next region, the tracker's input for the next frame, as MediaPipe tracks (re-detecting
  when fewer people than expected are tracked).

A person-frame becomes a cutout only when it is clean: pose presence >= 0.9, the mask inside
the frame and inside the crop (the whole body is there), no other tracked person near it (the
mask would hold both), the keypoints spanning most of the mask's height, almost no mask far
outside the keypoints' box, and almost no mask outside a rough body drawn from the landmarks
(``edge.pipeline.body_mask``): the mask is this person and nobody else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.detect import PoseDetector
from edge.geometry import sigmoid
from edge.pipeline import body_mask
from edge.pose2d import crop_regions, decode_landmarks
from edge.runtime import create_interpreter, load_model
from edge.skeleton import COCO17_FROM_BLAZEPOSE
from edge.types import F32, U8
from models import sources

logger = logging.getLogger(__name__)

#: Output tensor names of the original landmark model -> edge.pose2d's output keys.
_OUTPUTS = {"Identity": "landmarks", "Identity_1": "presence", "Identity_2": "segmentation",
            "Identity_3": "heatmap", "Identity_4": "world"}
#: Cutouts are stored at most this tall (px); the benchmark pastes people up to 400 px.
MAX_STORED_HEIGHT = 480
#: Most of a mask allowed outside ``edge.pipeline.body_mask`` (fraction of its pixels).
MAX_OUTSIDE_PRIOR = 0.015
#: Bump when the cutout recipe changes, so cached banks are rebuilt.
BANK_VERSION = 4


@dataclass(frozen=True, eq=False)
class Cutout:
    """One person cut out of one source frame.

    Attributes:
        bgra: (h, w, 4) uint8, the person's pixels (BGR) and alpha (255 = person), cropped to
            the mask's extent plus a 2 px margin.
        keypoints: (17, 2) float32, COCO-17 keypoints in the cutout's px (pixel-centre
            convention of ``cv2.warpAffine``: pixel (i, j) is at x = j, y = i).
        visible: (17,) bool, the landmark model's visibility >= 0.5 in the source.
        clip: Index of the source clip in the list it was cut from.
        track: Track id, unique across clips; a track's cutouts are consecutive frames of one
            person (frames that failed the checks are missing).
        frame: Frame index in the source clip.
        scale: Stored px per source px (<= 1: cutouts taller than ``MAX_STORED_HEIGHT`` are
            shrunk), so that frames of one track can be pasted at one consistent size.
    """

    bgra: U8
    keypoints: F32
    visible: npt.NDArray[np.bool_]
    clip: int
    track: int
    frame: int
    scale: float

    @property
    def mask_height(self) -> int:
        """Rows holding the person (alpha >= 128), px."""
        rows = np.flatnonzero((self.bgra[:, :, 3] >= 128).any(axis=1))
        return int(rows[-1] - rows[0] + 1) if len(rows) else 0


class OriginalLandmarker:
    """The original float ``pose_landmark_full.tflite``: landmarks, heatmap and segmentation."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        """Loads the file (check its sha256 first: :func:`original_model_path` does).

        Args:
            path: The original model file.
            threads: CPU threads.
        """
        self.interpreter = create_interpreter(path, threads)
        self._in = int(self.interpreter.get_input_details()[0]["index"])
        self._out = {_OUTPUTS[str(d["name"])]: int(d["index"])
                     for d in self.interpreter.get_output_details()}

    def __call__(self, crops: F32) -> dict[str, npt.NDArray[np.float32]]:
        """Runs (n, 256, 256, 3) RGB [0, 1] crops one by one; outputs with batch n."""
        parts: list[dict[str, npt.NDArray[np.float32]]] = []
        for c in crops:
            self.interpreter.set_tensor(self._in, c[None])
            self.interpreter.invoke()
            parts.append({k: np.array(self.interpreter.get_tensor(i))
                          for k, i in self._out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in self._out}


def original_model_path(cache: Path) -> Path:
    """The original full landmark model, fetched (npm pack) and checked as ``make models`` does."""
    return sources.extract(sources.LANDMARK_FULL, cache / "dl", cache / "build" / "src")


def _alpha_in_frame(seg_logits: F32, crop_to_frame: F32, shape: tuple[int, int]
                    ) -> tuple[F32, int, int]:
    """Warps (256, 256) segmentation logits to frame probabilities, within the crop's extent.

    Returns:
        ``(alpha, x0, y0)``: (h, w) float32 probabilities of the frame window whose top-left
        frame pixel is ``(x0, y0)`` (the crop's bounding box, clipped to the frame).
    """
    prob = sigmoid(seg_logits)
    a = crop_to_frame.astype(np.float64)
    corners = np.array([[0, 0], [256, 0], [0, 256], [256, 256]], np.float64) @ a[:, :2].T + a[:, 2]
    h, w = shape
    x0, y0 = (max(0, int(np.floor(v))) for v in corners.min(axis=0))
    x1 = min(w, int(np.ceil(corners[:, 0].max())) + 1)
    y1 = min(h, int(np.ceil(corners[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), x0, y0
    a[:, 2] -= (x0, y0)
    # crop_to_frame maps crop px -> frame px, warpAffine's forward direction; outside the crop
    # is 0 (not a person).
    alpha = cv2.warpAffine(prob, a, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return np.asarray(alpha, np.float32), x0, y0


def _clean_cutout(frame: U8, alpha: F32, origin: tuple[int, int], kp33_frame: F32, vis: F32,
                  crop_to_frame: F32, others: list[F32]) -> tuple[U8, F32, float] | None:
    """Applies the checks of the module docstring; returns (bgra, keypoints, scale) or None.

    ``alpha`` is the window of the frame starting at ``origin`` (x0, y0); ``kp33_frame`` are the
    33 landmarks in frame px, ``vis`` the COCO-17 visibility.
    """
    kp_frame = kp33_frame[COCO17_FROM_BLAZEPOSE]
    fh, fw = frame.shape[:2]
    x0, y0 = origin
    h, w = alpha.shape
    if h == 0 or w == 0:
        return None
    kp = (kp_frame - np.array([x0, y0], np.float32)).astype(np.float32)
    binary = (alpha >= 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n < 2:
        return None
    # Keep the components that hold the body's keypoints (stray blobs are dropped).
    inside = [(int(y), int(x)) for x, y in np.round(kp).astype(int)
              if 0 <= x < w and 0 <= y < h]
    keep = {int(labels[y, x]) for y, x in inside} - {0}
    if not keep:
        return None
    largest = max(keep, key=lambda i: stats[i, cv2.CC_STAT_AREA])
    keep = {i for i in keep if stats[i, cv2.CC_STAT_AREA] >= 0.02 * stats[largest,
                                                                            cv2.CC_STAT_AREA]}
    lut = np.zeros(n, bool)
    lut[list(keep)] = True
    person = lut[labels]
    ys, xs = np.nonzero(person)
    x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    margin = 3
    if x0 + x1 < margin or y0 + y1 < margin or x0 + x2 >= fw - margin \
            or y0 + y2 >= fh - margin:
        return None  # cut by the frame edge: not the whole body
    # The mask must also stay inside the crop the model saw, away from its edge.
    inv = cv2.invertAffineTransform(crop_to_frame.astype(np.float64))
    corners = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64) \
        + np.array([x0, y0], np.float64)
    in_crop = corners @ inv[:, :2].T + inv[:, 2]
    if (in_crop < 4).any() or (in_crop > 252).any():
        return None
    mh = y2 - y1 + 1
    kx1, ky1 = kp.min(axis=0)
    kx2, ky2 = kp.max(axis=0)
    if (ky2 - ky1) < 0.55 * mh or (ky2 - ky1) > 1.1 * mh or mh < 60:
        return None  # the mask is not (only) this person
    # Mask far outside the keypoints' box (hands, feet and the top of the head are near it) is
    # someone else, or a thing the person holds.
    g = 0.15 * mh
    near = np.zeros_like(person)
    near[max(0, int(ky1 - g)):int(ky2 + g) + 1, max(0, int(kx1 - g)):int(kx2 + g) + 1] = True
    if (person & ~near).sum() > 0.02 * person.sum():
        return None
    kp33 = (kp33_frame - np.array([x0, y0], np.float32)).astype(np.float32)
    outside = float((person & ~body_mask(kp33, person.shape, mh, dilate=True)).sum() / person.sum())
    logger.debug("mask outside the body prior: %.4f", outside)
    if outside > MAX_OUTSIDE_PRIOR:
        return None  # mask where no limb of this person is: someone else leaning in
    grow = 0.1 * mh
    for box in others:
        bx = box - np.array([x0, y0, x0, y0], np.float32)
        if not (bx[2] < x1 - grow or bx[0] > x2 + grow or bx[3] < y1 - grow
                or bx[1] > y2 + grow):
            return None  # someone else is close: the mask may hold both
    if (vis[[5, 6, 11, 12]] < 0.5).sum() > 1:
        return None  # torso mostly hidden: a poor label
    x1, y1 = max(0, x1 - 2), max(0, y1 - 2)
    x2, y2 = min(w - 1, x2 + 2), min(h - 1, y2 + 2)
    # The soft edge just outside the kept components stays (a hard cut at 0.5 would show).
    soft = cv2.dilate(person.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    a = np.where(soft, alpha, 0.0)[y1:y2 + 1, x1:x2 + 1]
    bgra = np.dstack([frame[y0 + y1:y0 + y2 + 1, x0 + x1:x0 + x2 + 1],
                      np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)])
    kp_out = (kp - np.array([x1, y1], np.float32)).astype(np.float32)
    scale = min(1.0, MAX_STORED_HEIGHT / bgra.shape[0])
    if scale < 1.0:
        nw = max(1, round(bgra.shape[1] * scale))
        nh = max(1, round(bgra.shape[0] * scale))
        sx, sy = nw / bgra.shape[1], nh / bgra.shape[0]
        bgra = cv2.resize(bgra, (nw, nh), interpolation=cv2.INTER_AREA)
        # cv2.resize maps pixel centres: x_dst = (x_src + 0.5) * s - 0.5.
        kp_out = ((kp_out + 0.5) * np.array([sx, sy], np.float32) - 0.5).astype(np.float32)
        scale = sy
    return np.ascontiguousarray(bgra, np.uint8), kp_out, float(scale)


def _dedup(regions: F32, ids: list[int]) -> tuple[F32, list[int]]:
    """Drops regions whose centre is within 0.3 region sizes of an earlier one's."""
    keep: list[int] = []
    for i, r in enumerate(regions):
        if all(np.hypot(*(r[:2] - regions[j, :2])) >= 0.3 * max(regions[j, 2], 1.0)
               for j in keep):
            keep.append(i)
    return regions[keep], [ids[i] for i in keep]


def extract_clip(path: Path, clip: int, first_track: int, detector: PoseDetector,
                 landmarker: OriginalLandmarker, max_people: int,
                 max_frames: int | None = None) -> list[Cutout]:
    """Tracks the people of one clip and cuts out every clean person-frame.

    Args:
        path: Video file.
        clip: Its index (stored in the cutouts).
        first_track: First track id to hand out.
        detector: The person detector.
        landmarker: The original landmark model.
        max_people: People the clip holds (re-detect while fewer are tracked).
        max_frames: Stop after this many frames (None: all).

    Returns:
        Cutouts in frame order.

    Raises:
        FileNotFoundError: When the video cannot be opened.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    regions = np.zeros((0, 5), np.float32)
    ids: list[int] = []
    next_track = first_track
    out: list[Cutout] = []
    fi = 0
    while max_frames is None or fi < max_frames:
        ok, raw = cap.read()
        if not ok:
            break
        frame = np.ascontiguousarray(raw, np.uint8)
        if len(regions) < max_people:
            for r in np.asarray(detector(frame).regions, np.float32):
                regions = np.concatenate([regions, r[None]])
                ids.append(next_track)
                next_track += 1
            regions, ids = _dedup(regions, ids)
            regions, ids = regions[:max_people], ids[:max_people]
        if len(regions) == 0:
            fi += 1
            continue
        crops, affines = crop_regions(frame, regions)
        outs = landmarker(crops)
        poses = decode_landmarks({k: v for k, v in outs.items() if k != "segmentation"},
                                 affines, regions)
        alive = np.asarray(poses.presence) >= 0.5
        kps = np.asarray(poses.keypoints)[:, COCO17_FROM_BLAZEPOSE]
        viss = np.asarray(poses.visibility)[:, COCO17_FROM_BLAZEPOSE]
        boxes = [np.concatenate([k.min(0), k.max(0)]) for k in kps]
        for k in np.flatnonzero(alive):
            if poses.presence[k] < 0.9:
                continue
            alpha, x0, y0 = _alpha_in_frame(outs["segmentation"][k, :, :, 0], affines[k],
                                            frame.shape[:2])
            others = [b for j, b in enumerate(boxes) if j != k and alive[j]]
            got = _clean_cutout(frame, alpha, (x0, y0), np.asarray(poses.keypoints[k]),
                                viss[k], affines[k], others)
            if got is not None:
                out.append(Cutout(got[0], got[1], viss[k] >= 0.5, clip, ids[k], fi, got[2]))
        regions = np.asarray(poses.next_regions, np.float32)[alive]
        ids = [i for i, a in zip(ids, alive, strict=True) if a]
        regions, ids = _dedup(regions, ids)
        fi += 1
    cap.release()
    logger.info("%s: %d frames, %d cutouts", path.name, fi, len(out))
    return out


@dataclass(frozen=True)
class Bank:
    """Every cutout of the source clips.

    Attributes:
        cutouts: In (clip, frame) order.
        clip_names: Source clip names, by clip index.
        clip_fps: Source frame rates, by clip index.
    """

    cutouts: list[Cutout]
    clip_names: list[str]
    clip_fps: list[float]

    def tracks(self, min_len: int = 1) -> dict[int, list[int]]:
        """Track id -> indices of its cutouts in frame order (tracks with >= min_len cutouts)."""
        by: dict[int, list[int]] = {}
        for i, c in enumerate(self.cutouts):
            by.setdefault(c.track, []).append(i)
        return {t: v for t, v in by.items() if len(v) >= min_len}

    def save(self, path: Path) -> None:
        """Writes the bank as one .npz."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "version": np.array(BANK_VERSION),
            "clip_names": np.array(self.clip_names),
            "clip_fps": np.array(self.clip_fps, np.float64),
            "keypoints": np.array([c.keypoints for c in self.cutouts], np.float32),
            "visible": np.array([c.visible for c in self.cutouts], bool),
            "meta": np.array([[c.clip, c.track, c.frame] for c in self.cutouts], np.int64),
            "scale": np.array([c.scale for c in self.cutouts], np.float64),
        }
        for i, c in enumerate(self.cutouts):
            arrays[f"bgra_{i}"] = c.bgra
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Bank | None:
        """Reads a bank written by :meth:`save`; None when absent or of another version."""
        if not path.is_file():
            return None
        with np.load(path) as z:
            if int(z["version"]) != BANK_VERSION:
                return None
            kp, vis, meta, sc = z["keypoints"], z["visible"], z["meta"], z["scale"]
            cutouts = [Cutout(z[f"bgra_{i}"], kp[i], vis[i], int(m[0]), int(m[1]), int(m[2]),
                              float(sc[i])) for i, m in enumerate(meta)]
            return cls(cutouts, [str(s) for s in z["clip_names"]],
                       [float(f) for f in z["clip_fps"]])


def build_bank(clips: list[Path], cache: Path, max_frames: int | None = None,
               threads: int = 1) -> Bank:
    """Cuts the people out of ``clips``.

    Up to 3 people are tracked per clip: the Pose2Sim scenes have an onlooker besides their one
    or two subjects, and a person can only be checked for company (the module docstring) when
    the company is tracked too.

    Args:
        clips: Video files (see ``bench.crowd.sources.clips``).
        cache: The cache folder, for the original landmark model.
        max_frames: Frames per clip (None: all).
        threads: CPU threads per model.

    Returns:
        The bank.
    """
    detector = PoseDetector(load_model("detector_float", threads))
    landmarker = OriginalLandmarker(original_model_path(cache), threads)
    cutouts: list[Cutout] = []
    names, fps = [], []
    for ci, path in enumerate(clips):
        cap = cv2.VideoCapture(str(path))
        fps.append(float(cap.get(cv2.CAP_PROP_FPS)) or 30.0)
        cap.release()
        names.append(path.parent.parent.name + "/" + path.stem if "Pose2Sim" in str(path)
                     else path.stem)
        first = max((c.track for c in cutouts), default=-1) + 1
        # Tracks are numbered per clip from a base far above any earlier id.
        cutouts += extract_clip(path, ci, max(first, ci * 1000), detector, landmarker,
                                max_people=3, max_frames=max_frames)
    return Bank(cutouts, names, fps)
